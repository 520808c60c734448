"""Inventory-wide figures: totals, top ASNs and rejected lines by reason."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd

from asn_pipeline.store.database import Inventory, run

DATA_TABLES = (
    "sessions",
    "session_fragments",
    "ip_inventory",
    "asn_inventory",
    "asn_daily_stats",
    "ip_asn_history",
    "rejected_events",
    "source_files",
)
# Columns saying when and by which run a row was written: they differ between equal states.
PROVENANCE_COLUMNS = frozenset(
    {
        "enriched_at",
        "enriched_by_run",
        "updated_at",
        "updated_by_run",
        "first_observed",
        "last_observed",
        "ingested_by_run",
        "ingested_at",
    }
)


@dataclass(frozen=True)
class InventoryReport:
    totals: dict[str, int]
    top_asns: list[dict]
    rejected_by_reason: list[tuple[str, int]]


def inventory_report(inventory: Inventory, top: int = 10) -> InventoryReport:
    with inventory.read() as conn:
        totals = dict(run(conn, "report", "totals").one()._mapping)
        top_asns = [dict(r._mapping) for r in run(conn, "report", "top_asns", limit=top)]
        rejected = [tuple(r) for r in run(conn, "report", "rejected_by_reason")]
    return InventoryReport(totals, top_asns, rejected)


def table_checksums(inventory: Inventory) -> dict[str, tuple[int, str]]:
    """(rows, MD5) of every data table without provenance columns, order-independent: two
    inventories with equal checksums hold the same data."""
    checksums = {}
    with inventory.read() as conn:
        for table in DATA_TABLES:
            frame = pd.read_sql_table(table, conn)
            frame = frame[sorted(c for c in frame.columns if c not in PROVENANCE_COLUMNS)]
            lines = sorted(
                "|".join(_canonical(v) for v in row) for row in frame.itertuples(index=False)
            )
            digest = hashlib.md5("\n".join(lines).encode(), usedforsecurity=False).hexdigest()
            checksums[table] = (len(frame), digest)
    return checksums


def _canonical(value: object) -> str:
    if value is None or (not isinstance(value, dict) and pd.isna(value)):
        return ""
    if isinstance(value, pd.Timestamp):
        return value.tz_localize("UTC").isoformat() if value.tzinfo is None else value.isoformat()
    return str(value)
