"""Team Cymru's answer cache in the inventory: what the Cymru step reads before it asks.

The cache is written by ``store.inventory.upsert_lookups``, in the transaction that writes the
addresses it answered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import orjson

from asn_pipeline.lookup.cascade import CachedPrefix, CachedUnrouted, CymruCache, cached_prefix
from asn_pipeline.store.database import Inventory, run

# Addresses per statement of the NXDOMAIN cache look-up (SQLite binds at most 32,766 values).
_CHUNK = 10_000


def read_cache(inventory: Inventory, ips: Sequence[str], now: dt.datetime) -> CymruCache:
    """Every cached prefix (fresh ones answer addresses, expired ones stand in while a re-query
    fails), the fresh NXDOMAIN answers of ``ips``, and the ASNs with a fresh AS-name answer."""
    fresh: list[CachedPrefix] = []
    stale: list[CachedPrefix] = []
    unrouted: dict[str, CachedUnrouted] = {}
    with inventory.read() as conn:
        for row in run(conn, "cymru", "all_prefixes", now=now):
            entry = cached_prefix(
                row.prefix,
                [int(a) for a in (row.asns or "").split()],
                row.country_code,
                row.rir_registry,
                row.allocated,
                row.query_name,
                _json_list(row.raw_answer),
                _time(row.fetched_at),
            )
            (fresh if row.fresh else stale).append(entry)
        for start in range(0, len(ips), _CHUNK):
            chunk = list(ips[start : start + _CHUNK])
            for row in run(conn, "cymru", "fresh_unrouted", now=now, ips=chunk):
                unrouted[row.ip_address] = CachedUnrouted(row.query_name, _time(row.fetched_at))
        named = {int(a) for a in run(conn, "cymru", "fresh_names", now=now).scalars()}
    return CymruCache(fresh, stale, unrouted, named)


def _json_list(value: object) -> list[str]:
    """A JSON array as stored: text on SQLite, already parsed from jsonb on PostgreSQL."""
    return list(orjson.loads(value) if isinstance(value, str | bytes) else value)


def _time(value: object) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(str(value))
