"""A reproducible benchmark workload: one day of Cowrie logs, a MaxMind ASN database of about
100,000 networks over 5,000 ASNs, and the addresses of earlier days for the inventory history.

Everything is derived from ``Shape`` (its seed included) and cached under ``bench/data/`` by a
hash of the shape, so every run of ``make bench`` measures the same bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import ipaddress
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from asn_pipeline.demo import Network, write_asn_mmdb

BENCH_ROOT = Path(__file__).resolve().parent
DATA_ROOT = BENCH_ROOT / "data"
SENSORS = ("sensor-fra", "sensor-nyc")
# First octets for the synthetic networks: public unicast space only. 223/8 stays uncovered, so
# addresses there get asn_source 'none'.
_V4_FIRST_OCTETS = [a for a in range(1, 223) if a not in (10, 100, 127, 169, 172, 192, 198, 203)]
_UNCOVERED_V4 = 223
_BOGON_BLOCKS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
)
_EVENT_LOGIN = ("root", "admin", "ubuntu", "pi", "oracle", "test", "user", "support")
_EVENT_PASSWORD = ("123456", "password", "admin", "raspberry", "P@ssw0rd", "qwerty", "1234")


@dataclass(frozen=True)
class Shape:
    """The size of the workload; the defaults are the benchmark's day."""

    events: int = 2_000_000
    sessions: int = 400_000
    addresses: int = 100_000
    ipv6_share: float = 0.10
    bogon_share: float = 0.01
    unmapped_share: float = 0.02
    asns: int = 5_000
    networks: int = 100_000
    returning_share: float = 0.30
    malformed_lines: int = 200
    history_days: int = 365
    day: str = "2026-11-20"
    seed: int = 2026

    @property
    def key(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


SMOKE = Shape(
    events=3_000,
    sessions=600,
    addresses=200,
    asns=20,
    networks=200,
    malformed_lines=5,
)


@dataclass(frozen=True)
class Workload:
    """Paths of a generated workload."""

    shape: Shape
    root: Path

    @property
    def day(self) -> dt.date:
        return dt.date.fromisoformat(self.shape.day)

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def asn_db(self) -> Path:
        return self.root / "asn.mmdb"

    @property
    def day_addresses(self) -> Path:
        """The day's distinct source addresses with the ASN the database gives them."""
        return self.root / "day_addresses.pkl"

    def history(self, size: int) -> pd.DataFrame:
        """``size`` addresses of earlier days (the day's returning addresses among them) with
        their ASN, network and the day of their one earlier session; cached per size."""
        path = self.root / f"history-{size}.pkl"
        if not path.exists():
            _history(self, size).to_pickle(path)
        return pd.read_pickle(path)

    def log_files(self) -> list[Path]:
        return sorted(self.landing.glob("*/cowrie.json.*"))

    def addresses(self) -> list[str]:
        return pd.read_pickle(self.day_addresses)["ip_address"].tolist()


def prepare(shape: Shape, root: Path = DATA_ROOT) -> Workload:
    """The workload of ``shape``, generated on first use and reused afterwards."""
    workload = Workload(shape, root / shape.key)
    done = workload.root / "complete"
    if done.exists():
        return workload
    workload.root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(shape.seed)
    networks = _networks(shape, rng)
    write_asn_mmdb(
        workload.asn_db,
        [Network(cidr, asn, f"Bench Network {asn}", "") for cidr, asn in networks],
    )
    day_addresses = _address_pool(shape, networks, rng, shape.addresses)
    day_addresses["returning"] = np.arange(len(day_addresses)) < int(
        shape.addresses * shape.returning_share
    )
    day_addresses.to_pickle(workload.day_addresses)
    pd.DataFrame(networks, columns=["cidr", "asn_number"]).to_pickle(workload.root / "networks.pkl")
    _write_day(shape, workload, day_addresses["ip_address"].to_numpy(), rng)
    done.write_text(json.dumps(dataclasses.asdict(shape), indent=2))
    return workload


def _networks(shape: Shape, rng: np.random.Generator) -> list[tuple[str, int]]:
    """(cidr, asn): IPv4 /22s and IPv6 /32s, spread evenly over the ASNs."""
    asns = rng.choice(np.arange(1_000, 400_000), size=shape.asns, replace=False)
    v6_count = int(shape.networks * shape.ipv6_share)
    v4_count = shape.networks - v6_count
    v4 = set()
    while len(v4) < v4_count:
        need = v4_count - len(v4)
        firsts = rng.choice(_V4_FIRST_OCTETS, size=need)
        seconds = rng.integers(0, 256, size=need)
        thirds = rng.integers(0, 64, size=need) * 4
        v4.update(zip(firsts.tolist(), seconds.tolist(), thirds.tolist(), strict=True))
    v6 = set()
    while len(v6) < v6_count:
        need = v6_count - len(v6)
        v6.update(rng.integers(0x2A00_0000, 0x2C00_0000, size=need).tolist())
    cidrs = [f"{a}.{b}.{c}.0/22" for a, b, c in sorted(v4)]
    cidrs += [f"{n >> 16:x}:{n & 0xFFFF:x}::/32" for n in sorted(v6)]
    order = rng.permutation(len(cidrs))
    return [(cidrs[i], int(asns[k % shape.asns])) for k, i in enumerate(order)]


def _history(workload: Workload, size: int) -> pd.DataFrame:
    shape = workload.shape
    day = pd.read_pickle(workload.day_addresses)
    networks = list(pd.read_pickle(workload.root / "networks.pkl").itertuples(index=False))
    rng = np.random.default_rng([shape.seed, size])
    returning = day[day["returning"]].drop(columns="returning")
    others = _address_pool(shape, networks, rng, size - len(returning) + len(day))
    others = others[~others["ip_address"].isin(day["ip_address"])]
    history = pd.concat([returning, others.iloc[: size - len(returning)]], ignore_index=True)
    start = dt.date.fromisoformat(shape.day) - dt.timedelta(days=shape.history_days)
    dates = [start + dt.timedelta(days=d) for d in range(shape.history_days)]
    history["session_date"] = np.array(dates)[rng.integers(0, len(dates), size=len(history))]
    return history.sample(frac=1, random_state=shape.seed).reset_index(drop=True)


def _address_pool(
    shape: Shape, networks: list[tuple[str, int]], rng: np.random.Generator, count: int
) -> pd.DataFrame:
    """``count`` distinct addresses in the workload's proportions of IPv6, bogons, unmapped."""
    v4_nets = [(c, a) for c, a in networks if ":" not in c]
    v6_nets = [(c, a) for c, a in networks if ":" in c]
    rows: dict[str, tuple[int | None, str | None]] = {}
    bogons = int(count * shape.bogon_share)
    unmapped = int(count * shape.unmapped_share)
    v6 = int(count * shape.ipv6_share)
    quotas = [("bogon", bogons), ("unmapped", unmapped), ("v6", v6)]
    quotas.append(("v4", count - bogons - unmapped - v6))
    bogon_nets = [ipaddress.ip_network(b) for b in _BOGON_BLOCKS]
    py_rng = random.Random(int(rng.integers(0, 2**31)))
    for kind, quota in quotas:
        target = len(rows) + quota
        while len(rows) < target:
            need = target - len(rows)
            if kind == "v4":
                picks = rng.integers(0, len(v4_nets), size=need)
                hosts = rng.integers(1, 1023, size=need)
                for p, h in zip(picks.tolist(), hosts.tolist(), strict=True):
                    cidr, asn = v4_nets[p]
                    a, b, c, _ = cidr.split("/")[0].split(".")
                    ip = f"{a}.{b}.{int(c) + h // 256}.{h % 256}"
                    rows.setdefault(ip, (asn, cidr))
            elif kind == "v6":
                picks = rng.integers(0, len(v6_nets), size=need)
                for p in picks.tolist():
                    cidr, asn = v6_nets[p]
                    prefix = cidr.split("::")[0]
                    host = ":".join(f"{py_rng.getrandbits(16):x}" for _ in range(6))
                    ip = ipaddress.ip_address(f"{prefix}:{host}").compressed
                    rows.setdefault(ip, (asn, cidr))
            elif kind == "unmapped":
                for n in rng.integers(1, 2**24 - 1, size=need).tolist():
                    ip = f"{_UNCOVERED_V4}.{n >> 16}.{(n >> 8) & 255}.{n & 255}"
                    rows.setdefault(ip, (None, None))
            else:
                for _ in range(need):
                    net = bogon_nets[py_rng.randrange(len(bogon_nets))]
                    offset = py_rng.randrange(1, min(net.num_addresses - 1, 2**32))
                    rows.setdefault(str(net.network_address + offset), (None, None))
    frame = pd.DataFrame(
        [(ip, asn, cidr) for ip, (asn, cidr) in rows.items()],
        columns=["ip_address", "asn_number", "asn_network"],
    )
    frame["asn_number"] = frame["asn_number"].astype("Int64")
    return frame.sample(frac=1, random_state=shape.seed).reset_index(drop=True)


def _write_day(
    shape: Shape, workload: Workload, addresses: np.ndarray, rng: np.random.Generator
) -> None:
    """The day's Cowrie files, one per sensor, events in time order."""
    n_sessions, n_addr = shape.sessions, len(addresses)
    # Every address has a session; the rest go to a heavy tail of busy scanners.
    extra = rng.zipf(1.3, size=n_sessions - n_addr) % n_addr
    session_address = np.concatenate([np.arange(n_addr), rng.permutation(n_addr)[extra]])
    rng.shuffle(session_address)
    sizes = rng.integers(2, 9, size=n_sessions)  # 2..8 events, mean 5
    sizes = _adjust_total(sizes, shape.events, low=2, high=12)
    starts = rng.uniform(0, 86_400 - 900, size=n_sessions)
    sensors = rng.integers(0, len(SENSORS), size=n_sessions)
    session_ids = [f"{v:012x}" for v in rng.choice(2**47, size=n_sessions, replace=False)]
    ports = rng.integers(1024, 65535, size=n_sessions)

    owner = np.repeat(np.arange(n_sessions), sizes)
    ordinal = np.arange(len(owner)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    gaps = rng.uniform(0.05, 8.0, size=len(owner))
    times = starts[owner] + ordinal * 4.0 + gaps
    midnight = dt.datetime.fromisoformat(shape.day).replace(tzinfo=dt.UTC).timestamp()
    last = (ordinal == np.repeat(sizes, sizes) - 1).tolist()
    malformed = set(rng.choice(len(owner), size=shape.malformed_lines, replace=False).tolist())

    name = f"cowrie.json.{shape.day}"
    handles = []
    for sensor in SENSORS:
        (workload.landing / sensor).mkdir(parents=True, exist_ok=True)
        handles.append((workload.landing / sensor / name).open("wb"))
    try:
        for k in np.argsort(times, kind="stable").tolist():
            s = int(owner[k])
            stamp = dt.datetime.fromtimestamp(midnight + times[k], dt.UTC)
            event = _event(
                int(ordinal[k]),
                last[k],
                str(addresses[session_address[s]]),
                session_ids[s],
                SENSORS[sensors[s]],
                stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                int(ports[s]),
                k,
            )
            line = orjson.dumps(event)
            if k in malformed:
                line = line[: len(line) // 2]  # a truncated write
            handles[sensors[s]].write(line + b"\n")
    finally:
        for handle in handles:
            handle.close()


def _adjust_total(sizes: np.ndarray, total: int, low: int, high: int) -> np.ndarray:
    """Nudge per-session event counts, within [low, high], until they sum to ``total``."""
    sizes = sizes.copy()
    i = 0
    while (diff := total - int(sizes.sum())) != 0:
        step = 1 if diff > 0 else -1
        if low <= sizes[i % len(sizes)] + step <= high:
            sizes[i % len(sizes)] += step
        i += 1
    return sizes


def _event(
    ordinal: int, last: bool, ip: str, session: str, sensor: str, stamp: str, port: int, k: int
) -> dict:
    base = {"src_ip": ip, "session": session, "sensor": sensor, "timestamp": stamp}
    if ordinal == 0:
        return {
            "eventid": "cowrie.session.connect",
            "src_port": port,
            "dst_ip": "198.51.100.7",
            "dst_port": 22,
            "protocol": "ssh",
            "message": f"New connection: {ip}:{port} (198.51.100.7:22) [session: {session}]",
            **base,
        }
    if last:
        return {"eventid": "cowrie.session.closed", "duration": 4.0 * ordinal, **base}
    if ordinal == 1:
        return {
            "eventid": "cowrie.client.version",
            "version": "SSH-2.0-Go",
            "message": "Remote SSH version: SSH-2.0-Go",
            **base,
        }
    user, password = _EVENT_LOGIN[k % 8], _EVENT_PASSWORD[k % 7]
    return {
        "eventid": "cowrie.login.failed",
        "username": user,
        "password": password,
        "message": f"login attempt [{user}/{password}] failed",
        **base,
    }
