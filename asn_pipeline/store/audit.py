"""Invariant audits (DESIGN §5) for one day or a range of days, used by the asset checks."""

from __future__ import annotations

import datetime as dt

from asn_pipeline.lookup.special_purpose import GLOBAL, classify
from asn_pipeline.store.database import Inventory, run


def counter_mismatches(
    inventory: Inventory, first_day: dt.date, last_day: dt.date | None = None
) -> dict[str, int]:
    """Rows of the days whose derived values differ from a recomputation from facts and are not
    queued for one (invariant 1)."""
    days = _days(first_day, last_day)
    with inventory.read() as conn:
        return {
            name: run(conn, "audit", f"{name}_mismatches", **days).scalar_one()
            for name in ("ip_counter", "asn_counter", "day_statistics")
        }


def pending_stale_keys(inventory: Inventory) -> int:
    """Keys queued for a recomputation (a concurrent run changed their facts)."""
    with inventory.read() as conn:
        return run(conn, "audit", "pending_stale_keys").scalar_one()


def dangling_asn_references(
    inventory: Inventory, first_day: dt.date | None = None, last_day: dt.date | None = None
) -> int:
    """current_asn and sessions.asn_number values missing from asn_inventory (invariant 3): of
    the days' sessions and addresses, or, without days, of the whole inventory."""
    with inventory.read() as conn:
        if first_day is None:
            return run(conn, "audit", "dangling_asn_references").scalar_one()
        days = _days(first_day, last_day)
        return run(conn, "audit", "day_dangling_asn_references", **days).scalar_one()


def misclassified_addresses(
    inventory: Inventory, first_day: dt.date, last_day: dt.date | None = None
) -> list[str]:
    """The days' addresses whose stored class or enrichment disagrees with the pinned registry
    (invariant 6): a bogon must be classed as such and carry no ASN."""
    wrong = []
    with inventory.read() as conn:
        rows = run(conn, "audit", "day_address_classes", **_days(first_day, last_day))
        for ip, ip_class, source, asn in rows:
            expected = classify(ip)
            is_bogon = expected != GLOBAL
            if ip_class != expected or (is_bogon and (source != "bogon" or asn is not None)):
                wrong.append(ip)
    return wrong


def damaged_source_files(
    inventory: Inventory, first_day: dt.date, last_day: dt.date | None = None
) -> list[tuple[str, str]]:
    """(file, status) of the days' source files that were not read whole or held no event."""
    with inventory.read() as conn:
        rows = run(conn, "audit", "day_damaged_source_files", **_days(first_day, last_day))
        return [tuple(r) for r in rows]


def _days(first_day: dt.date, last_day: dt.date | None) -> dict[str, dt.date]:
    return {"first_day": first_day, "last_day": last_day or first_day}
