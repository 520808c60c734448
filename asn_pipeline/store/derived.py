"""Derived values: address counters, ASN counters and daily statistics.

Writers queue keys in ``stale_ips`` and ``stale_days`` in the same transaction as the facts they
change; the functions here claim those keys, recompute them from the facts and release them. ASN
counters are sums and extremes over addresses: every write that changes addresses queues, in
``stale_asn_deltas``, the exact difference between the touched rows after and before it (or a full
recomputation where a min/max cannot be maintained that way). Nothing is blindly incremented, so a
re-run or an out-of-order run cannot drift, and the cost follows what a partition touches.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from asn_pipeline.store.database import Inventory, analyze, run


@dataclass(frozen=True)
class StatisticsWritten:
    asns_refreshed: int
    days_refreshed: int
    dates_refreshed: list[dt.date]


def track_asn_changes(conn: Connection) -> None:
    """Remember the rows of the touched addresses (``w_ips``) before a write changes them."""
    run(conn, "derived", "capture_ip_before")


def queue_asn_changes(conn: Connection) -> None:
    """Queue, per ASN, the exact difference the write made to its addresses' rows."""
    for name in ("queue_asn_deltas", "count_asn_countries", "forget_empty_country_counts"):
        run(conn, "derived", name)


def collect_ip_counters(conn: Connection) -> None:
    """What the sessions of the addresses in ``w_ips`` say, into ``w_ip_counters``."""
    run(conn, "derived", "collect_ip_counters")
    analyze(conn, "w_ip_counters")


def refresh_ip_counters(conn: Connection) -> None:
    """Set the counters of the addresses in ``w_ips`` to ``w_ip_counters``
    (``collect_ip_counters``); drop those left without sessions.

    The caller brackets this with ``track_asn_changes``/``queue_asn_changes``.
    """
    run(conn, "derived", "refresh_ip_counters")
    run(conn, "derived", "delete_ips_without_sessions")
    run(conn, "derived", "release_stale_ips")


def snapshot_session_asns(
    inventory: Inventory,
    first_day: dt.date,
    last_day: dt.date | None = None,
    *,
    settle: bool = False,
) -> tuple[int, StatisticsWritten | None]:
    """Set ``sessions.asn_number`` of the sessions of ``first_day`` (to ``last_day``) to their
    address's current ASN; returns how many changed and, with ``settle``, what ``drain_queues``
    recomputed in the same transaction."""
    days = {"first_day": first_day, "last_day": last_day or first_day}
    with inventory.write() as conn:
        changed = run(conn, "derived", "collect_snapshot_changes", **days).rowcount
        analyze(conn, "w_snapshot")
        run(conn, "derived", "mark_days_of_snapshot_changes")
        run(conn, "derived", "snapshot_session_asns", **days)
        refreshed = drain_queues(conn) if settle else None
    return changed, refreshed


def refresh_statistics(inventory: Inventory) -> StatisticsWritten:
    """Drain the queues in a write transaction of their own (``drain_queues``), the daily
    statistics of the keys queued at its start computed before the write lock
    (``compute_queued_statistics``)."""
    with inventory.write(compute_queued_statistics) as conn:
        return drain_queues(conn)


def compute_queued_statistics(conn: Connection) -> None:
    """The daily statistics of every (day, ASN) queued in ``stale_days``, with the generation
    that queued it, into ``w_day_stats``: on PostgreSQL before the write lock, while another
    writer may hold it (``Inventory.write``'s ``stage``). ``drain_queues`` keeps what still
    stands under the lock."""
    run(conn, "derived", "claim_stale_days")
    analyze(conn, "w_days")
    run(conn, "derived", "compute_day_stats")
    run(conn, "derived", "mark_days_computed")


def drain_queues(conn: Connection) -> StatisticsWritten:
    """Recompute every queued key: address counters, ASN counter changes, daily statistics.

    Run at the end of a write transaction, it makes that write's commit exact (invariant 1) for
    every key it or any earlier committed write queued.
    """
    run(conn, "derived", "claim_stale_ips")
    track_asn_changes(conn)
    collect_ip_counters(conn)
    refresh_ip_counters(conn)
    queue_asn_changes(conn)
    asns = run(conn, "derived", "claim_asn_deltas").rowcount
    for name in (
        "release_asn_deltas",
        "apply_asn_deltas",
        "recompute_asn_counters",
        "refresh_asn_countries",
    ):
        run(conn, "derived", name)
    for name in (
        "forget_outdated_days",
        "forget_outdated_day_stats",
        "claim_stale_days",
        "release_stale_days",
        "compute_day_stats",
        "delete_stale_day_stats",
        "insert_stale_day_stats",
    ):
        run(conn, "derived", name)
    days = run(conn, "derived", "claimed_days").scalar_one()
    dates = [_date(d) for d in run(conn, "derived", "claimed_dates").scalars()]
    return StatisticsWritten(asns, days, dates)


def _date(value: object) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def day_statistics(inventory: Inventory, day: dt.date) -> tuple[list[dict], int]:
    """``day``'s per-ASN statistics, largest first, and its sessions without an ASN."""
    with inventory.read() as conn:
        rows = [dict(r._mapping) for r in run(conn, "derived", "day_statistics", day=day)]
        unattributed = run(conn, "derived", "day_unattributed_sessions", day=day).scalar_one()
    return rows, unattributed


@dataclass(frozen=True)
class DayFigures:
    """A day's per-ASN statistics, largest first, each with ``previous_session_count`` (the
    ASN's sessions the day before; ``None`` when it had none), and the day's sessions, distinct
    source addresses and sessions without an ASN."""

    rows: list[dict]
    sessions: int
    unique_addresses: int
    unattributed: int


def day_figures(inventory: Inventory, day: dt.date) -> DayFigures:
    """``day``'s statistics against the day before, and its totals, in one read transaction."""
    with inventory.read() as conn:
        rows = [
            dict(r._mapping)
            for r in run(
                conn,
                "derived",
                "day_statistics_with_previous_day",
                day=day,
                previous_day=day - dt.timedelta(days=1),
            )
        ]
        totals = run(conn, "derived", "day_session_totals", day=day).one()
    return DayFigures(rows, totals.sessions, totals.unique_addresses, totals.unattributed)
