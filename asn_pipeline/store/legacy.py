"""A cowrieprocessor inventory imported into this one, and the repair of derived values.

cowrieprocessor (``cowrie-enrich-asn``) kept ``ip_inventory(ip_address, current_asn, enrichment,
first_seen, last_seen, ...)`` and ``asn_inventory(asn_number, organization_name,
organization_country, rir_registry, ...)``. Its ``enrichment`` JSON holds a ``maxmind`` and a
``cymru`` block (``asn``, ``asn_org``, ``country``, and for Cymru ``registry``), but real databases
hold anything: malformed or twice-encoded JSON, lists, numbers where names belong, nulls. Each row
is read for what it holds and every problem is counted by reason.

The import adds each legacy address-to-ASN mapping to ``ip_asn_history`` (source ``legacy``, the
legacy times) and fills the names, countries and registries this inventory lacks. It writes no
address, session or counter: those stay derived from ``sessions``. The repair, for after a
restore or a hand edit, recomputes every derived value from the facts.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from asn_pipeline.lookup.special_purpose import canonical_ip, is_bogon
from asn_pipeline.settings import redact_url
from asn_pipeline.store.database import Inventory, bulk_insert, run
from asn_pipeline.store.derived import drain_queues

SOURCE = "legacy"
CHUNK_ROWS = 50_000
MAX_ASN = 4_294_967_295
IP_COLUMNS = ("ip_address", "current_asn", "enrichment", "first_seen", "last_seen")
ASN_COLUMNS = ("organization_name", "organization_country", "rir_registry")
MAPPING_COLUMNS = ("ip_address", "asn_number", "first_observed", "last_observed")
LEGACY_ASN_COLUMNS = (
    "asn_number",
    "organization_name",
    "name_from",
    "organization_country",
    "country_from",
    "rir_registry",
    "registry_from",
)
# What is kept of an ASN, in the order of LEGACY_ASN_COLUMNS.
ASN_FIELDS = ("asn_org", "country", "registry")
# The enrichment blocks, in order of preference, and the fields read from each.
BLOCKS = {
    "maxmind": ("asn", "asn_org", "country"),
    "cymru": ("asn", "asn_org", "country", "registry"),
}
SUPPORTED_DRIVERS = ("sqlite", "postgresql+psycopg2")
_ASN_TEXT = re.compile(r"^(?:AS)?(\d{1,10})$", re.IGNORECASE)
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_REGISTRY = re.compile(r"^[a-z]+$")
# JSON encoded more than this many times is not unwrapped further.
_MAX_ENCODINGS = 3


class LegacySourceError(ValueError):
    """The legacy database cannot be opened or is not a cowrieprocessor inventory."""


@dataclass
class LegacyRead:
    """What a legacy inventory holds, parsed: one mapping per (address, ASN) with its earliest
    and latest time, the values chosen for each ASN, and the problems met, by reason."""

    source: str
    ip_rows: int = 0
    asn_rows: int = 0
    has_asn_inventory: bool = False
    mappings: dict[tuple[str, int], list[dt.datetime]] = field(default_factory=dict)
    mapping_sources: Counter[str] = field(default_factory=Counter)
    asns: list[tuple] = field(default_factory=list)
    problems: Counter[str] = field(default_factory=Counter)

    @property
    def addresses(self) -> int:
        return len({ip for ip, _ in self.mappings})


@dataclass(frozen=True)
class LegacyImported:
    read: LegacyRead
    asns_created: int
    fills: list[tuple[str, str, int]]  # (column, where the value came from, ASNs)
    legacy_asns_without_row: int
    history_new: int
    history_widened: int
    addresses_in_inventory: int
    addresses_with_other_asn: int


@dataclass(frozen=True)
class Repaired:
    asn_rows_restored: int
    names_filled: int
    registries_filled: int
    country_counts_corrected: int
    ip_counters_corrected: int
    addresses_dropped: int
    asn_counters_corrected: int
    asn_countries_changed: int
    daily_statistics_added: int
    daily_statistics_removed: int
    daily_statistics_corrected: int

    @property
    def changes(self) -> int:
        return sum(vars(self).values())


def source_url(value: str) -> str:
    """A validated SQLAlchemy URL of a legacy database (its PostgreSQL scheme names psycopg2);
    a ``LegacySourceError`` names the value, password masked."""
    shown = display_url(value)
    try:
        url = sa.engine.make_url(value.strip())
        url.port  # noqa: B018 - parsed lazily; a bad port raises here
    except (sa.exc.ArgumentError, ValueError):
        raise LegacySourceError(f"source_db_url={shown!r}: not a SQLAlchemy URL") from None
    if url.host and "@" in url.host:
        raise LegacySourceError(
            f"source_db_url={shown!r}: the password holds an unescaped '@'; write it as %40"
        )
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")
    if url.drivername not in SUPPORTED_DRIVERS:
        raise LegacySourceError(
            f"source_db_url={shown!r}: unsupported driver; use {' or '.join(SUPPORTED_DRIVERS)}"
        )
    if url.drivername == "sqlite" and not (url.database and Path(url.database).is_file()):
        raise LegacySourceError(f"source_db_url={shown!r}: no such SQLite file")
    return url.render_as_string(hide_password=False)


def display_url(value: str) -> str:
    """``value`` with any password masked, even when it is not a valid URL."""
    try:
        return redact_url(value.strip())
    except (sa.exc.ArgumentError, ValueError):
        return re.sub(r"(//[^:/@]*:).*@", r"\1***@", value)


def read_legacy(url: str, chunk_rows: int = CHUNK_ROWS) -> LegacyRead:
    """Read a cowrieprocessor inventory, in chunks, in one read-only snapshot of it."""
    url = source_url(url)
    read = LegacyRead(source=display_url(url))
    reader = _RowReader(read)
    with _source(url) as conn:
        tables = set(sa.inspect(conn).get_table_names())
        if "ip_inventory" not in tables:
            raise LegacySourceError(f"source_db_url={read.source!r}: no table ip_inventory")
        if "session_fragments" in tables:
            raise LegacySourceError(
                f"source_db_url={read.source!r}: an asn_pipeline inventory, not a "
                "cowrieprocessor one"
            )
        _require_columns(conn, "ip_inventory", IP_COLUMNS, read.source)
        columns = [sa.column(c) for c in IP_COLUMNS]
        columns[2] = sa.cast(sa.column("enrichment"), sa.Text).label("enrichment")
        statement = sa.select(*columns).select_from(sa.table("ip_inventory"))
        for chunk in _chunks(conn, statement, chunk_rows):
            for row in chunk:
                reader.ip_row(*row)
        if "asn_inventory" in tables:
            read.has_asn_inventory = True
            present = {c["name"] for c in sa.inspect(conn).get_columns("asn_inventory")}
            if "asn_number" not in present:
                raise LegacySourceError(
                    f"source_db_url={read.source!r}: table asn_inventory has no asn_number"
                )
            statement = sa.select(
                sa.column("asn_number"),
                *(sa.column(c) if c in present else sa.null().label(c) for c in ASN_COLUMNS),
            ).select_from(sa.table("asn_inventory"))
            for chunk in _chunks(conn, statement, chunk_rows):
                for row in chunk:
                    reader.asn_row(*row)
    read.asns = reader.chosen_asn_values()
    return read


def import_legacy(
    inventory: Inventory, read: LegacyRead, run_id: str | None, now: dt.datetime
) -> LegacyImported:
    """Write what ``read_legacy`` read in one transaction: ASN rows the mappings need, the
    values this inventory lacks, then the history. A re-run changes nothing."""
    params = {"now": now, "run_id": run_id}
    mappings = [(ip, asn, first, last) for (ip, asn), (first, last) in read.mappings.items()]
    with inventory.write() as conn:
        for start in range(0, len(mappings), CHUNK_ROWS):
            chunk = mappings[start : start + CHUNK_ROWS]
            bulk_insert(conn, "w_legacy_mappings", MAPPING_COLUMNS, chunk)
        bulk_insert(conn, "w_legacy_asns", LEGACY_ASN_COLUMNS, read.asns)
        created = run(conn, "legacy", "create_legacy_asns", **params).rowcount
        fills = [tuple(r) for r in run(conn, "legacy", "legacy_fills")]
        run(conn, "legacy", "fill_legacy_asns", **params)
        without_row = run(conn, "legacy", "legacy_asns_without_row").scalar_one()
        new_rows, widened = run(conn, "legacy", "legacy_history_changes").one()
        run(conn, "legacy", "record_legacy_history")
        in_inventory, other_asn = run(conn, "legacy", "legacy_addresses_in_inventory").one()
    return LegacyImported(
        read=read,
        asns_created=created,
        fills=fills,
        legacy_asns_without_row=without_row,
        history_new=new_rows,
        history_widened=widened,
        addresses_in_inventory=in_inventory,
        addresses_with_other_asn=other_asn,
    )


def repair_inventory(inventory: Inventory, run_id: str | None, now: dt.datetime) -> Repaired:
    """Rebuild asn_inventory's rows, names and counters, and every other derived value, from
    this inventory's own facts, in one transaction: restore the ASN rows something references,
    fill missing names from the Team Cymru cache, recount addresses per country, queue every
    address, ASN and (day, ASN) and drain the queues."""
    params = {"now": now, "run_id": run_id}
    with inventory.write() as conn:
        for name in ("capture_ips", "capture_asns", "capture_day_stats"):
            run(conn, "legacy", name)
        restored = run(conn, "legacy", "restore_referenced_asns", **params).rowcount
        names, registries = run(conn, "legacy", "cymru_cache_fills").one()
        run(conn, "legacy", "fill_from_cymru_cache", **params)
        country_counts = run(conn, "legacy", "country_count_corrections").scalar_one()
        for name in ("clear_country_counts", "count_countries"):
            run(conn, "legacy", name)
        for name in ("queue_every_ip", "queue_every_asn", "queue_every_day"):
            run(conn, "legacy", name)
        drain_queues(conn)
        dropped, ips_corrected = run(conn, "legacy", "repaired_ips").one()
        asns_corrected, countries = run(conn, "legacy", "repaired_asns").one()
        added, removed, days_corrected = run(conn, "legacy", "repaired_day_stats").one()
    return Repaired(
        asn_rows_restored=restored,
        names_filled=names,
        registries_filled=registries,
        country_counts_corrected=country_counts,
        ip_counters_corrected=ips_corrected,
        addresses_dropped=dropped,
        asn_counters_corrected=asns_corrected,
        asn_countries_changed=countries,
        daily_statistics_added=added,
        daily_statistics_removed=removed,
        daily_statistics_corrected=days_corrected,
    )


@contextmanager
def _source(url: str) -> Iterator[Connection]:
    """A read-only connection to the legacy database, in one snapshot (REPEATABLE READ on
    PostgreSQL; a SQLite read transaction, the file opened read-only)."""
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        engine = sa.create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True),
        )
    else:
        engine = sa.create_engine(url, isolation_level="REPEATABLE READ")
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            else:
                conn.exec_driver_sql("BEGIN")
            yield conn
            conn.rollback()
    finally:
        engine.dispose()


def _require_columns(conn: Connection, table: str, needed: tuple[str, ...], source: str) -> None:
    present = {c["name"] for c in sa.inspect(conn).get_columns(table)}
    missing = [c for c in needed if c not in present]
    if missing:
        raise LegacySourceError(
            f"source_db_url={source!r}: table {table} has no column {', '.join(missing)}"
        )


def _chunks(conn: Connection, statement: sa.Select, size: int) -> Iterator[list[tuple]]:
    """The rows of ``statement`` as plain tuples of the driver's values, ``size`` at a time
    (a server-side cursor on PostgreSQL)."""
    result = conn.execution_options(stream_results=True).execute(statement)
    for partition in result.partitions(size):
        yield [tuple(row) for row in partition]


@dataclass(frozen=True)
class _Block:
    asn: int | None
    asn_absent: bool
    values: dict[str, str | None]


class _RowReader:
    """Parses legacy rows into ``read``, counting each problem by reason."""

    def __init__(self, read: LegacyRead):
        self.read = read
        self.problems = read.problems
        # field -> ASN -> where the value came from -> value -> rows that gave it
        self.seen: dict[str, dict[int, dict[str, Counter[str]]]] = {
            key: defaultdict(lambda: defaultdict(Counter)) for key in ASN_FIELDS
        }

    def ip_row(
        self, address: object, current_asn: object, enrichment: object, first: object, last: object
    ) -> None:
        self.read.ip_rows += 1
        ip = self._address(address)
        if ip is None:
            return
        current = self._asn(current_asn, "current_asn", present=True)
        blocks = self._blocks(self._enrichment(enrichment))
        block_asns = {name: b.asn for name, b in blocks.items() if b.asn is not None}
        asn, chosen_from = current, "current_asn"
        if asn is None:
            for name in BLOCKS:
                if name in block_asns:
                    asn, chosen_from = block_asns[name], f"{name}.asn"
                    break
        for name, other in block_asns.items():
            if f"{name}.asn" != chosen_from and other != asn:
                self.problems[f"{chosen_from}: differs from {name}.asn"] += 1
        for name, block in blocks.items():
            # A block without an asn describes the row's ASN; one with an unreadable asn, none.
            described = block.asn if block.asn is not None else asn if block.asn_absent else None
            self._remember(described, name, block.values)
        if asn is None:
            self.problems["mapping: no ASN"] += 1
            return
        times = self._times(first, last)
        if times is None:
            return
        self.read.mapping_sources[chosen_from] += 1
        held = self.read.mappings.get((ip, asn))
        if held is None:
            self.read.mappings[(ip, asn)] = list(times)
        else:
            self.problems["address: duplicate once canonical"] += 1
            held[0], held[1] = min(held[0], times[0]), max(held[1], times[1])

    def asn_row(self, asn_number: object, name: object, country: object, registry: object) -> None:
        self.read.asn_rows += 1
        asn = self._asn(asn_number, "asn_inventory.asn_number", present=True)
        if asn is None:
            return
        values = {
            "asn_org": self._text(name, "asn_inventory.organization_name", present=True),
            "country": self._country(country, "asn_inventory.organization_country", True),
            "registry": self._registry(registry, "asn_inventory.rir_registry", present=True),
        }
        self._remember(asn, "asn_inventory", values)

    def chosen_asn_values(self) -> list[tuple]:
        """Per ASN and column: the legacy asn_inventory's value, else the most common in the
        MaxMind blocks, else in the Cymru blocks (ties: the smallest value)."""
        asns = set().union(*self.seen.values())
        return [
            (asn, *(v for key in ASN_FIELDS for v in _most_common(self.seen[key].get(asn, {}))))
            for asn in sorted(asns)
        ]

    def _remember(self, asn: int | None, source: str, values: dict[str, str | None]) -> None:
        if asn is None:
            return
        for key, value in values.items():
            if value is not None:
                self.seen[key][asn][source][value] += 1

    def _address(self, value: object) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            self.problems["address: missing (row skipped)"] += 1
            return None
        if not isinstance(value, str):
            self.problems["address: wrong type (row skipped)"] += 1
            return None
        try:
            ip = canonical_ip(value)
        except ValueError:
            self.problems["address: unparseable (row skipped)"] += 1
            return None
        if is_bogon(ip):
            self.problems["address: special-purpose, never mapped (row skipped)"] += 1
            return None
        if ip != value:
            self.problems["address: canonicalised"] += 1
        return ip

    def _enrichment(self, value: object) -> object:
        if value is None:
            self.problems["enrichment: null"] += 1
            return None
        if isinstance(value, bytes | memoryview):
            value = bytes(value).decode("utf-8", errors="replace")
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            self.problems["enrichment: malformed JSON"] += 1
            return None
        unwrapped = 0
        while isinstance(parsed, str) and unwrapped < _MAX_ENCODINGS:
            try:
                parsed = orjson.loads(parsed)
            except orjson.JSONDecodeError:
                break
            unwrapped += 1
        if unwrapped:
            self.problems["enrichment: JSON encoded twice"] += 1
        if not isinstance(parsed, dict):
            self.problems["enrichment: not an object"] += 1
            return None
        return parsed

    def _blocks(self, enrichment: object) -> dict[str, _Block]:
        """Each usable block: its ASN and its name, country and registry."""
        if not isinstance(enrichment, dict):
            return {}
        found = {}
        for name, fields in BLOCKS.items():
            if name not in enrichment:
                continue
            block = enrichment[name]
            if block is None:
                self.problems[f"{name}: null"] += 1
                continue
            if not isinstance(block, dict):
                self.problems[f"{name}: not an object"] += 1
                continue
            present = {key: key in block for key in fields}
            asn = self._asn(block.get("asn"), f"{name}.asn", present["asn"])
            values = {
                "asn_org": self._text(block.get("asn_org"), f"{name}.asn_org", present["asn_org"]),
                "country": self._country(
                    block.get("country"), f"{name}.country", present["country"]
                ),
            }
            if "registry" in fields:
                values["registry"] = self._registry(
                    block.get("registry"), f"{name}.registry", present["registry"]
                )
            asn_absent = not present["asn"] or block["asn"] is None
            found[name] = _Block(asn, asn_absent, values)
        if not any(name in enrichment for name in BLOCKS):
            self.problems["enrichment: no maxmind or cymru block"] += 1
        return found

    def _absent(self, value: object, where: str, present: bool) -> bool:
        if not present:
            self.problems[f"{where}: missing"] += 1
            return True
        if value is None:
            self.problems[f"{where}: null"] += 1
            return True
        return False

    def _asn(self, value: object, where: str, present: bool) -> int | None:
        if self._absent(value, where, present):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.problems[f"{where}: wrong type"] += 1
            return None
        if isinstance(value, float):
            if not value.is_integer():
                self.problems[f"{where}: wrong type"] += 1
                return None
            self.problems[f"{where}: a float"] += 1
            value = int(value)
        elif isinstance(value, str):
            match = _ASN_TEXT.match(value.strip())
            if match is None:
                self.problems[f"{where}: not an ASN"] += 1
                return None
            self.problems[f"{where}: text"] += 1
            value = int(match.group(1))
        if not 0 < value <= MAX_ASN:
            self.problems[f"{where}: out of range"] += 1
            return None
        return value

    def _text(self, value: object, where: str, present: bool) -> str | None:
        if self._absent(value, where, present):
            return None
        if not isinstance(value, str):
            self.problems[f"{where}: wrong type"] += 1
            return None
        if not value.strip():
            self.problems[f"{where}: empty"] += 1
            return None
        return value.strip()

    def _country(self, value: object, where: str, present: bool) -> str | None:
        text = self._text(value, where, present)
        if text is None:
            return None
        if not _COUNTRY.match(text.upper()):
            self.problems[f"{where}: not a country code"] += 1
            return None
        return text.upper()

    def _registry(self, value: object, where: str, present: bool) -> str | None:
        text = self._text(value, where, present)
        if text is None:
            return None
        if not _REGISTRY.match(text.lower()):
            self.problems[f"{where}: not a registry"] += 1
            return None
        return text.lower()

    def _times(self, first: object, last: object) -> tuple[dt.datetime, dt.datetime] | None:
        first_at = self._time(first, "first_seen")
        last_at = self._time(last, "last_seen")
        if first_at is None and last_at is None:
            self.problems["mapping: no usable time (not imported)"] += 1
            return None
        first_at, last_at = first_at or last_at, last_at or first_at
        if first_at > last_at:
            self.problems["mapping: first_seen after last_seen (swapped)"] += 1
            first_at, last_at = last_at, first_at
        return first_at, last_at

    def _time(self, value: object, where: str) -> dt.datetime | None:
        if value is None:
            self.problems[f"{where}: null"] += 1
            return None
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value.strip())
            except ValueError:
                self.problems[f"{where}: unparseable"] += 1
                return None
        if not isinstance(value, dt.datetime):
            self.problems[f"{where}: wrong type"] += 1
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        try:
            value = value.astimezone(dt.UTC)
        except OverflowError:
            value = None
        if value is None or value.year < 1000:
            self.problems[f"{where}: out of range"] += 1
            return None
        return value


def _most_common(by_source: dict[str, Counter[str]]) -> tuple[str | None, str | None]:
    """(value, source) from the first source, in order of preference, that gave one."""
    for source in ("asn_inventory", *BLOCKS):
        counts = by_source.get(source)
        if counts:
            value = min(counts, key=lambda v: (-counts[v], v))
            return value, source
    return None, None
