"""Looking the inventory's addresses up again: after a MaxMind update, and when Team Cymru's
answers expire.

The daily path does the work: ``lookup.enrich.look_up`` (MaxMind), ``lookup.cascade.
resolve_uncovered`` through the cache (Team Cymru) and ``store.inventory.upsert_lookups``, which
writes ``ip_inventory``, ``asn_inventory`` and ``ip_asn_history`` and queues the exact change of
every ASN's counters. Addresses go in batches in ``ip_address`` order (keyset), one write
transaction per batch that also applies those changes (``settle``): invariant 1 holds after every
commit, and a refresh stopped half-way leaves the rest to the next one. ``sessions`` are not
touched: ``sessions.asn_number`` stays the snapshot of the day a session was processed, and so
do ``asn_daily_stats``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
import pandas as pd

from asn_pipeline.lookup.cascade import CymruResult, resolve_uncovered
from asn_pipeline.lookup.cymru import CymruResolver
from asn_pipeline.lookup.enrich import look_up
from asn_pipeline.lookup.maxmind import MaxMindLookup
from asn_pipeline.store.cymru import read_cache
from asn_pipeline.store.database import Inventory, run
from asn_pipeline.store.inventory import upsert_lookups

DEFAULT_BATCH_SIZE = 50_000
# A Team Cymru answer an address keeps when the new MaxMind build still does not cover it.
_CYMRU_COLUMNS = {
    "current_asn": "asn_number",
    "asn_network": "asn_network",
    "asn_source": "asn_source",
    "cymru_status": "cymru_status",
}


@dataclass(frozen=True)
class RefreshBatch:
    """What one committed batch did."""

    addresses: int
    asn_changes: int
    gained: Counter[int]  # per ASN: addresses that moved into it
    lost: Counter[int]  # per ASN: addresses that moved out of it
    asn_builds_before: Counter[int | None]  # addresses per ASN build they were looked up in
    city_builds_before: Counter[int | None]
    cymru_queries: int = 0
    cymru_pending: int = 0
    dates_refreshed: tuple[dt.date, ...] = ()  # statistics days the drain recomputed


@dataclass
class RefreshTotals:
    """What a refresh did, summed over its batches (run metadata)."""

    asn_build: int | None = None  # the builds looked up in
    city_build: int | None = None
    batches: int = 0
    addresses: int = 0
    asn_changes: int = 0
    gained: Counter[int] = field(default_factory=Counter)
    lost: Counter[int] = field(default_factory=Counter)
    asn_builds_before: Counter[int | None] = field(default_factory=Counter)
    city_builds_before: Counter[int | None] = field(default_factory=Counter)
    cymru_queries: int = 0
    cymru_pending: int = 0
    dates_refreshed: set[dt.date] = field(default_factory=set)
    seconds: float = 0.0

    def add(self, batch: RefreshBatch) -> None:
        self.batches += 1
        self.addresses += batch.addresses
        self.asn_changes += batch.asn_changes
        self.gained.update(batch.gained)
        self.lost.update(batch.lost)
        self.asn_builds_before.update(batch.asn_builds_before)
        self.city_builds_before.update(batch.city_builds_before)
        self.cymru_queries += batch.cymru_queries
        self.cymru_pending += batch.cymru_pending
        self.dates_refreshed.update(batch.dates_refreshed)

    @property
    def asns_moved(self) -> list[int]:
        """The ASNs that gained or lost addresses: their counters moved."""
        return sorted(set(self.gained) | set(self.lost))


def refresh_other_builds(
    inventory: Inventory,
    maxmind: MaxMindLookup,
    run_id: str | None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    everything: bool = False,
) -> Iterator[RefreshBatch]:
    """Look up again the global addresses last looked up in another build of the ASN database
    (or of the City database, when one is configured) than ``maxmind``'s; every global address
    with ``everything``. Yields each batch once committed.

    An address the new build does not cover falls to ``none``, unless Team Cymru answered it
    before: it keeps that answer, whose freshness ``refresh_expired_cymru`` judges.
    """
    after = ""
    while True:
        stored = _select(
            inventory,
            "other_build_addresses",
            after,
            batch_size,
            everything=int(everything),
            **_build_params(maxmind),
        )
        if stored.empty:
            return
        lookups = look_up(stored["ip_address"].tolist(), maxmind).addresses
        yield _write(inventory, stored, keep_cymru_answers(lookups, stored), run_id)
        after = stored["ip_address"].iloc[-1]


def refresh_expired_cymru(
    inventory: Inventory,
    maxmind: MaxMindLookup,
    resolver: CymruResolver,
    ttl: dt.timedelta,
    run_id: str | None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[RefreshBatch]:
    """Ask Team Cymru again, through its cache, about the global addresses MaxMind does not
    cover whose answer is missing, pending or past its TTL. Yields each batch once committed."""
    selected_at = dt.datetime.now(dt.UTC)
    after = ""
    while True:
        stored = _select(inventory, "expired_cymru_addresses", after, batch_size, now=selected_at)
        if stored.empty:
            return
        lookups = look_up(stored["ip_address"].tolist(), maxmind).addresses
        uncovered = lookups.loc[lookups["asn_source"] == "none", "ip_address"].tolist()
        cache = read_cache(inventory, uncovered, dt.datetime.now(dt.UTC))
        sent = resolver.queries_sent
        lookups, result = resolve_uncovered(lookups, cache, resolver, ttl)
        yield _write(
            inventory, stored, lookups, run_id, result, queries=resolver.queries_sent - sent
        )
        after = stored["ip_address"].iloc[-1]


def holds_other_builds(inventory: Inventory, maxmind: MaxMindLookup) -> bool:
    """Whether any global address was last looked up in another build than ``maxmind``'s."""
    found = _select(
        inventory, "other_build_addresses", "", 1, everything=0, **_build_params(maxmind)
    )
    return not found.empty


def keep_cymru_answers(lookups: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """``lookups`` (rows in the order of ``stored``), where MaxMind still does not cover an
    address Team Cymru answered before, with that answer kept: ASN, prefix, source, status and
    ``enrichment['cymru']``; the MaxMind part is the new lookup's."""
    keep = (lookups["asn_source"].to_numpy() == "none") & stored["cymru_status"].notna().to_numpy()
    if not keep.any():
        return lookups
    frame = lookups.copy()
    rows = frame.index[keep]
    kept = stored.loc[keep]
    for column, target in _CYMRU_COLUMNS.items():
        values = kept[column].tolist()
        if target == "asn_number":
            values = pd.array([None if pd.isna(v) else int(v) for v in values], dtype="Int64")
        frame.loc[rows, target] = values
    frame.loc[rows, "enrichment"] = [
        _with_cymru_answer(new, answer)
        for new, answer in zip(
            frame.loc[rows, "enrichment"].tolist(), kept["cymru_answer"], strict=True
        )
    ]
    return frame


def _with_cymru_answer(enrichment: str, answer: object) -> str:
    """``enrichment`` with the stored ``cymru`` document (JSON text on SQLite, parsed from
    jsonb on PostgreSQL)."""
    if answer is None:
        return enrichment
    document = orjson.loads(enrichment)
    document["cymru"] = orjson.loads(answer) if isinstance(answer, str | bytes) else answer
    return orjson.dumps(document).decode()


def _build_params(maxmind: MaxMindLookup) -> dict[str, int]:
    city = maxmind.city_build
    return {
        "asn_epoch": maxmind.asn_build.build_epoch,
        "check_city": int(city is not None),
        "city_epoch": city.build_epoch if city is not None else -1,
    }


def _select(
    inventory: Inventory, name: str, after: str, batch_size: int, **params: object
) -> pd.DataFrame:
    """The next batch of stored rows after address ``after``, in address order."""
    with inventory.read() as conn:
        result = run(conn, "refresh", name, after=after, batch_size=batch_size, **params)
        return pd.DataFrame(result.all(), columns=list(result.keys()))


def _write(
    inventory: Inventory,
    stored: pd.DataFrame,
    lookups: pd.DataFrame,
    run_id: str | None,
    cymru: CymruResult | None = None,
    queries: int = 0,
) -> RefreshBatch:
    written = upsert_lookups(
        inventory, lookups, run_id, dt.datetime.now(dt.UTC), cymru=cymru, settle=True
    )
    before = pd.array(_asns(stored["current_asn"]), dtype="Int64")
    after = pd.array(_asns(lookups["asn_number"]), dtype="Int64")
    moved = (before.fillna(-1) != after.fillna(-1)).to_numpy(dtype=bool)
    refreshed = written.refreshed
    return RefreshBatch(
        addresses=written.addresses,
        asn_changes=written.asn_changes,
        gained=Counter(after[moved].dropna().tolist()),
        lost=Counter(before[moved].dropna().tolist()),
        asn_builds_before=Counter(_asns(stored["build_epoch"])),
        city_builds_before=Counter(_asns(stored["city_build_epoch"])),
        cymru_queries=queries,
        cymru_pending=int((lookups["cymru_status"] == "pending").sum()),
        dates_refreshed=tuple(refreshed.dates_refreshed) if refreshed else (),
    )


def _asns(values: pd.Series) -> list[int | None]:
    return [None if pd.isna(v) else int(v) for v in values.tolist()]
