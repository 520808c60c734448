"""Inventory-wide figures: totals, top ASNs and rejected lines by reason."""

from __future__ import annotations

from dataclasses import dataclass

from asn_pipeline.store.database import Inventory, run


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
