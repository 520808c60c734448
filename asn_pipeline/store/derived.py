"""Derived values (counters, daily statistics), recomputed from facts for the keys queued as stale.

Writers queue keys in ``stale_ips``, ``stale_asns`` and ``stale_days`` in the same transaction
as the facts they change; the functions here claim those keys, recompute and release them. Nothing
is ever incremented, so a re-run or an out-of-order run cannot drift.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from asn_pipeline.store.database import Inventory, run


@dataclass(frozen=True)
class StatisticsWritten:
    asns_refreshed: int
    days_refreshed: int


def refresh_ip_counters(conn: Connection) -> int:
    """Recompute the counters of stale addresses; drop addresses left without sessions."""
    claimed = run(conn, "derived", "claim_stale_ips").rowcount
    for name in (
        "release_stale_ips",
        "mark_asns_of_claimed_ips",
        "refresh_ip_counters",
        "delete_ips_without_sessions",
    ):
        run(conn, "derived", name)
    return claimed


def snapshot_session_asns(inventory: Inventory, day: dt.date) -> int:
    """Set ``sessions.asn_number`` of ``day``'s sessions to their address's current ASN."""
    with inventory.write() as conn:
        run(conn, "derived", "mark_days_of_snapshot_changes", day=day)
        return run(conn, "derived", "snapshot_session_asns", day=day).rowcount


def refresh_statistics(inventory: Inventory) -> StatisticsWritten:
    """Recompute every stale ASN's counters and every stale (day, ASN) statistic."""
    with inventory.write() as conn:
        refresh_ip_counters(conn)
        asns = run(conn, "derived", "claim_stale_asns").rowcount
        run(conn, "derived", "release_stale_asns")
        run(conn, "derived", "refresh_asn_counters")
        days = run(conn, "derived", "claim_stale_days").rowcount
        for name in ("release_stale_days", "delete_stale_day_stats", "insert_stale_day_stats"):
            run(conn, "derived", name)
    return StatisticsWritten(asns, days)


def day_statistics(inventory: Inventory, day: dt.date) -> tuple[list[dict], int]:
    """``day``'s per-ASN statistics, largest first, and its sessions without an ASN."""
    with inventory.read() as conn:
        rows = [dict(r._mapping) for r in run(conn, "derived", "day_statistics", day=day)]
        unattributed = run(conn, "derived", "day_unattributed_sessions", day=day).scalar_one()
    return rows, unattributed
