"""The audit questions of docs/audit.md, one function each, over the queries in ``lineage.sql``.

Rows come back as dicts with the same Python types on both databases: times as UTC
``datetime``, dates as ``date`` (by the column-name rule stated in ``lineage.sql``), JSON
columns as Python objects. Everything here only reads.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping

from asn_pipeline.lookup.special_purpose import canonical_ip
from asn_pipeline.store.database import Inventory, run

MODULE = "lineage"
JSON_COLUMNS = frozenset({"enrichment", "cymru_raw_answer"})
TIME_SUFFIXES = ("_at", "_seen", "_observed")
DATE_SUFFIXES = ("_date", "_day")
# The whole-inventory checks of prove_counters, by the table whose stored values they check.
DIFFERENCE_QUERIES = {
    "asn_inventory": "asn_counter_differences",
    "ip_inventory": "ip_counter_differences",
    "asn_daily_stats": "daily_stat_differences",
}


def why_address_in_asn(inventory: Inventory, ip_address: str) -> dict | None:
    """Why address X is in ASN Y: its row (source, network, build, run, enrichment), the Team
    Cymru prefix if Cymru answered, and under ``history`` every ASN it was ever mapped to.
    ``None`` when the inventory has no such address."""
    ip = canonical_ip(ip_address)
    with inventory.read() as conn:
        row = _first(run(conn, MODULE, "why_address_in_asn", ip_address=ip))
        if row is not None:
            row["history"] = _rows(run(conn, MODULE, "address_asn_history", ip_address=ip))
    return row


def asn_first_appearance(inventory: Inventory, asn_number: int) -> dict | None:
    """When ASN Y first appeared: first attack time of its addresses, first day with sessions,
    first lookup that mapped an address to it, with that mapping's build and run."""
    with inventory.read() as conn:
        return _first(run(conn, MODULE, "asn_first_appearance", asn_number=asn_number))


def address_provenance(inventory: Inventory, ip_address: str) -> dict | None:
    """Which run and which MaxMind builds wrote an address row."""
    with inventory.read() as conn:
        rows = run(conn, MODULE, "address_provenance", ip_address=canonical_ip(ip_address))
        return _first(rows)


def session_provenance(inventory: Inventory, sensor: str, session_id: str) -> list[dict]:
    """The sessions of one Cowrie id, one row per part (a day of a session), with the run that
    read each."""
    with inventory.read() as conn:
        rows = run(conn, MODULE, "session_provenance", sensor=sensor, session_id=session_id)
        return _rows(rows)


def day_provenance(inventory: Inventory, day: dt.date) -> list[dict]:
    """The files day D's sessions were read from and the run that read them."""
    with inventory.read() as conn:
        return _rows(run(conn, MODULE, "day_provenance", day=day))


def prove_counters(inventory: Inventory, asn_number: int) -> dict | None:
    """ASN Y's counters next to their recomputation from ``ip_inventory`` and from sessions."""
    with inventory.read() as conn:
        return _first(run(conn, MODULE, "prove_counters", asn_number=asn_number))


def counter_differences(inventory: Inventory) -> dict[str, list[dict]]:
    """Every stored counter of the inventory that differs from its facts, by table: all lists
    empty when every ASN counter, address counter and daily figure is right. Rows with
    ``queued`` = 1 are changes a committed write left for the next drain of the queues."""
    with inventory.read() as conn:
        return {table: _rows(run(conn, MODULE, name)) for table, name in DIFFERENCE_QUERIES.items()}


def _first(rows: Iterable) -> dict | None:
    found = _rows(rows)
    return found[0] if found else None


def _rows(rows: Iterable) -> list[dict]:
    return [_plain(row._mapping) for row in rows]


def _plain(row: Mapping[str, object]) -> dict:
    return {name: _value(name, value) for name, value in row.items()}


def _value(name: str, value: object) -> object:
    if value is None:
        return None
    if name in JSON_COLUMNS:
        return json.loads(value) if isinstance(value, str) else value
    if name.endswith(TIME_SUFFIXES):
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        return value.astimezone(dt.UTC)
    if name.endswith(DATE_SUFFIXES) and isinstance(value, str):
        return dt.date.fromisoformat(value)
    return value
