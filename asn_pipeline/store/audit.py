"""Invariant audits (DESIGN §5) for one day, used by the asset checks."""

from __future__ import annotations

import datetime as dt

from asn_pipeline.lookup.special_purpose import GLOBAL, classify
from asn_pipeline.store.database import Inventory, run


def counter_mismatches(inventory: Inventory, day: dt.date) -> dict[str, int]:
    """Rows whose derived values differ from a recomputation from facts and are not queued for
    one (invariant 1), and how many keys are queued (``pending_stale_keys``)."""
    with inventory.read() as conn:
        found = {
            name: run(conn, "audit", f"{name}_mismatches", day=day).scalar_one()
            for name in ("ip_counter", "asn_counter", "day_statistics")
        }
        found["pending_stale_keys"] = run(conn, "audit", "pending_stale_keys").scalar_one()
    return found


def dangling_asn_references(inventory: Inventory, day: dt.date | None = None) -> int:
    """current_asn and sessions.asn_number values missing from asn_inventory (invariant 3): of
    ``day``'s sessions and addresses, or of the whole inventory."""
    with inventory.read() as conn:
        if day is None:
            return run(conn, "audit", "dangling_asn_references").scalar_one()
        return run(conn, "audit", "day_dangling_asn_references", day=day).scalar_one()


def misclassified_addresses(inventory: Inventory, day: dt.date) -> list[str]:
    """The day's addresses whose stored class or enrichment disagrees with the pinned registry
    (invariant 6): a bogon must be classed as such and carry no ASN."""
    wrong = []
    with inventory.read() as conn:
        for ip, ip_class, source, asn in run(conn, "audit", "day_address_classes", day=day):
            expected = classify(ip)
            is_bogon = expected != GLOBAL
            if ip_class != expected or (is_bogon and (source != "bogon" or asn is not None)):
                wrong.append(ip)
    return wrong


def damaged_source_files(inventory: Inventory, day: dt.date) -> list[tuple[str, str]]:
    """(file, status) of ``day``'s source files that were not read whole or held no event."""
    with inventory.read() as conn:
        return [tuple(r) for r in run(conn, "audit", "day_damaged_source_files", day=day)]
