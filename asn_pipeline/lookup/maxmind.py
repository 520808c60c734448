"""MaxMind DB lookups (GeoLite2-ASN or DB-IP ASN Lite, optionally GeoLite2-City/Country)."""

from __future__ import annotations

import ipaddress
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from socket import AF_INET6, inet_ntop

import maxminddb
import numpy as np
from maxminddb.types import Record

from asn_pipeline.settings import DEFAULT_ASN_DB, ConfigurationError

ASN_DB_VARIABLE = "ASN_PIPELINE_MAXMIND_ASN_DB"
CITY_DB_VARIABLE = "ASN_PIPELINE_MAXMIND_CITY_DB"

# Pieces of network text by octet and prefix length, to write many networks at once.
_IPV4_MASKS = np.array([(1 << 32) - (1 << (32 - length)) for length in range(33)], dtype=np.int64)
_IPV6_MASKS = [(1 << 128) - (1 << (128 - length)) for length in range(129)]
_OCTETS_DOT = np.array([f"{octet}." for octet in range(256)], dtype=object)
_OCTETS = np.array([str(octet) for octet in range(256)], dtype=object)
# Each network's text ends in a line break, for the split after the join.
_SUFFIXES_NL = np.array([f"/{length}\n" for length in range(129)], dtype=object)


@dataclass(frozen=True)
class DatabaseBuild:
    """Which database answered: its type and MaxMind ``build_epoch`` (provenance)."""

    path: str
    database_type: str
    build_epoch: int


@dataclass(frozen=True)
class Answers:
    """What the databases say of a list of addresses, as columns in the order asked.

    ``covered`` is False where no record with an ASN covers the address; ``asn_numbers`` holds
    0 and ``organization_names`` None there.
    """

    covered: np.ndarray  # bool
    asn_numbers: np.ndarray  # int64
    organization_names: list[str | None]
    prefix_lens: np.ndarray  # int64: prefix length of the network that matched
    countries: list[str | None] | None  # None without a City/Country database


@dataclass(frozen=True)
class AsnAnswer:
    asn_number: int
    organization_name: str | None
    network: str


def open_reader(path: Path, variable: str, kinds: tuple[str, ...]) -> maxminddb.Reader:
    """Open a ``.mmdb`` and check its type; raise ``ConfigurationError`` naming the variable."""
    if not path.is_file():
        hint = "; run `make demo` or set the variable" if path == DEFAULT_ASN_DB else ""
        raise ConfigurationError(variable, str(path), f"no such file{hint}")
    try:
        # What geoip2.database.Reader opens too, without its per-lookup model objects.
        reader = maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
    except (maxminddb.InvalidDatabaseError, ValueError, OSError) as error:
        raise ConfigurationError(variable, str(path), f"not a MaxMind DB file ({error})") from None
    database_type = reader.metadata().database_type
    if not any(kind in database_type for kind in kinds):
        reader.close()
        raise ConfigurationError(
            variable,
            str(path),
            f"database type {database_type!r} is not a {'/'.join(kinds)} database",
        )
    return reader


def network_texts(
    versions: np.ndarray, ipv4: np.ndarray, ipv6: dict[int, int], prefix_lens: np.ndarray
) -> list[str]:
    """``str(ipaddress.ip_network(...))`` of the network of ``prefix_lens`` bits around each
    address: IPv4 ones (``ipv4`` values, int64) at once, IPv6 ones (``ipv6``: row -> value) one
    by one, because 128 bits do not fit numpy.
    """
    network = ipv4 & _IPV4_MASKS[np.where(versions == 4, prefix_lens, 0)]
    pieces = np.empty((len(versions), 5), dtype=object)
    pieces[:, 0] = _OCTETS_DOT[network >> 24]
    pieces[:, 1] = _OCTETS_DOT[network >> 16 & 255]
    pieces[:, 2] = _OCTETS_DOT[network >> 8 & 255]
    pieces[:, 3] = _OCTETS[network & 255]
    pieces[:, 4] = _SUFFIXES_NL[prefix_lens]
    if ipv6:
        rows = list(ipv6)
        pieces[rows, 0] = [
            _ipv6_text(value & _IPV6_MASKS[prefix_len])
            for value, prefix_len in zip(ipv6.values(), prefix_lens[rows].tolist(), strict=True)
        ]
        pieces[rows, 1:4] = ""
    # One join and one split make every text in C, where a + per piece would copy four times.
    return "".join(pieces.ravel().tolist()).split("\n")[:-1]


def _ipv6_text(value: int) -> str:
    text = inet_ntop(AF_INET6, value.to_bytes(16, "big"))
    if "." in text:
        # libc writes ::ffff:a.b.c.d and ::a.b.c.d forms where ipaddress writes hex groups.
        return ipaddress.IPv6Address(value).compressed
    return text


def country_code(record: Record | None) -> str | None:
    """ISO country code of a City/Country record, as geoip2's ``.country.iso_code``."""
    if record is None:
        return None
    return (record.get("country") or {}).get("iso_code")


class MaxMindLookup:
    """ASN (and optionally country) of global addresses from MaxMind DB files."""

    def __init__(self, asn_db: Path, city_db: Path | None = None):
        self._asn = open_reader(asn_db, ASN_DB_VARIABLE, ("ASN",))
        self._city = (
            open_reader(city_db, CITY_DB_VARIABLE, ("City", "Country")) if city_db else None
        )
        self.asn_build = _build(asn_db, self._asn)
        self.city_build = _build(city_db, self._city) if city_db and self._city else None

    def answer_all(self, ips: Sequence[str], wanted: Sequence[bool]) -> Answers:
        """The ASN record (and country) of each wanted address; the others are never looked up."""
        # Machine integers from the start: numpy takes them over without a copy.
        asn_numbers, prefix_lens = array("q"), array("q")
        organization_names: list[str | None] = []
        uncovered = []
        # The reader's own method, on plain dicts: no geoip2 model object per address.
        asn_record = self._asn.get_with_prefix_len
        for ip, want in zip(ips, wanted, strict=True):
            record, prefix_len = asn_record(ip) if want else (None, 0)
            asn = None if record is None else record.get("autonomous_system_number")
            if asn is None:
                uncovered.append(len(asn_numbers))
                asn_numbers.append(0)
                organization_names.append(None)
            else:
                asn_numbers.append(asn)
                organization_names.append(record.get("autonomous_system_organization"))
            prefix_lens.append(prefix_len)
        covered = np.ones(len(asn_numbers), dtype=bool)
        covered[uncovered] = False
        countries = None
        if self._city is not None:
            city_record = self._city.get
            countries = [
                country_code(city_record(ip)) if want else None
                for ip, want in zip(ips, wanted, strict=True)
            ]
        return Answers(
            covered,
            np.frombuffer(asn_numbers, dtype=np.int64),
            organization_names,
            np.frombuffer(prefix_lens, dtype=np.int64),
            countries,
        )

    def asn(self, ip: str) -> AsnAnswer | None:
        """The ASN record covering ``ip``, or ``None`` when the database has none."""
        record, prefix_len = self._asn.get_with_prefix_len(ip)
        if record is None or record.get("autonomous_system_number") is None:
            return None
        return AsnAnswer(
            record["autonomous_system_number"],
            record.get("autonomous_system_organization"),
            str(ipaddress.ip_network(f"{ip}/{prefix_len}", strict=False)),
        )

    def country(self, ip: str) -> str | None:
        """ISO country code of ``ip`` from the City/Country database, if one is configured."""
        if self._city is None:
            return None
        return country_code(self._city.get(ip))

    def close(self) -> None:
        self._asn.close()
        if self._city is not None:
            self._city.close()


def _build(path: Path, reader: maxminddb.Reader) -> DatabaseBuild:
    meta = reader.metadata()
    return DatabaseBuild(str(path), meta.database_type, int(meta.build_epoch))
