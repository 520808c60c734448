"""Upserting one day's address lookups into ip_inventory and asn_inventory, in one transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from sqlalchemy.engine import Connection

from asn_pipeline.lookup.cascade import NAME_COLUMNS, PREFIX_COLUMNS, UNROUTED_COLUMNS, CymruResult
from asn_pipeline.lookup.enrich import LOOKUP_COLUMNS
from asn_pipeline.store.database import Inventory, analyze, bulk_insert, frame_rows, run
from asn_pipeline.store.derived import (
    StatisticsWritten,
    collect_ip_counters,
    drain_queues,
    queue_asn_changes,
    refresh_ip_counters,
    track_asn_changes,
)
from asn_pipeline.store.sessions import (
    DayWrite,
    SessionsWritten,
    day_rows,
    stage_day,
    write_day,
)


@dataclass(frozen=True)
class InventoryWritten:
    addresses: int
    new_addresses: int
    asn_changes: int
    new_asns: int
    refreshed: StatisticsWritten | None = None  # what ``settle`` recomputed
    sessions: SessionsWritten | None = None  # the day written with the lookups, if any


def day_addresses(
    inventory: Inventory, first_day: dt.date, last_day: dt.date | None = None
) -> list[str]:
    """Distinct source addresses of the sessions and parts of ``first_day`` (to ``last_day``)."""
    with inventory.read() as conn:
        return list(
            run(
                conn,
                "inventory",
                "day_addresses",
                first_day=first_day,
                last_day=last_day or first_day,
            ).scalars()
        )


def address_count(inventory: Inventory) -> int:
    """Rows in ip_inventory."""
    with inventory.read() as conn:
        return run(conn, "inventory", "address_count").scalar_one()


def day_pending(inventory: Inventory, day: dt.date) -> dict[str, int]:
    """What a run that did not materialise every asset of ``day`` leaves for a later one: the
    day's addresses not looked up yet, and its sessions whose ASN snapshot is not taken."""
    with inventory.read() as conn:
        row = run(conn, "inventory", "day_pending", day=day).one()
    return dict(row._mapping)


def upsert_lookups(
    inventory: Inventory,
    lookups: pd.DataFrame,
    run_id: str | None,
    now: dt.datetime,
    cymru: CymruResult | None = None,
    *,
    day: DayWrite | None = None,
    settle: bool = False,
) -> InventoryWritten:
    """Write the lookups: Team Cymru's new answers to its cache, ASN rows, then addresses,
    their ASN history and counters, in one transaction.

    With ``day``, the day is written in the same transaction: its source files and rejected
    lines first (``store.sessions.write_day_rows``; on PostgreSQL under the day's lock, before
    the write lock), then under the write lock its sessions and fragments, after the ASN rows and
    before the addresses' counters (``store.sessions.write_day``): each session row once, with
    the ASN its address's lookup gives, so that the backfill step finds nothing to change.

    Referential integrity holds at every commit: an address's ``current_asn`` is inserted into
    ``asn_inventory`` before the address points at it, in the same transaction. The cache and
    the addresses it answered commit together or not at all. With ``settle``, the ASN counter
    changes the write queued (and any earlier write's) are applied in the same transaction, so
    its commit is exact (invariant 1).
    """
    params = {"run_id": run_id, "now": now}

    def stage(conn: Connection) -> None:
        bulk_insert(conn, "w_lookups", LOOKUP_COLUMNS, frame_rows(lookups, LOOKUP_COLUMNS))
        if cymru is not None:
            for table, columns, rows, _ in _cymru_writes(cymru):
                bulk_insert(conn, table, columns, rows)
        if day is not None:
            stage_day(conn, day)

    with inventory.write(stage, day_rows(day) if day is not None else None) as conn:
        new_asns = run(conn, "inventory", "new_asns").scalar_one()
        if cymru is not None:
            for *_, statement in _cymru_writes(cymru):
                run(conn, "inventory", statement)
        run(conn, "inventory", "upsert_asns", **params)
        sessions = None
        if day is not None:
            # The addresses of the sessions it touched stay in w_ips, refreshed below with the
            # looked-up ones: not queued in stale_ips only to be claimed back at once.
            sessions = write_day(conn, day, queue_ips=False)
        run(conn, "inventory", "collect_touched_ips")
        analyze(conn, "w_ips")
        track_asn_changes(conn)
        addresses, new_addresses, asn_changes = run(conn, "inventory", "lookup_summary").one()
        collect_ip_counters(conn)
        for name in ("upsert_ips", "record_asn_history"):
            run(conn, "inventory", name, **params)
        refresh_ip_counters(conn)
        queue_asn_changes(conn)
        if cymru is not None and cymru.names:
            run(conn, "derived", "refresh_asn_countries")
        refreshed = None
        if settle:
            # The addresses' work sets are done with: the drain starts from the queues alone.
            for name in ("forget_touched_ips", "forget_ips_before", "forget_ip_counters"):
                run(conn, "inventory", name)
            refreshed = drain_queues(conn)
    return InventoryWritten(
        addresses or 0, new_addresses or 0, asn_changes or 0, new_asns, refreshed, sessions
    )


def _cymru_writes(cymru: CymruResult) -> list[tuple[str, Sequence[str], list[tuple], str]]:
    """Team Cymru's new answers: each work table with its rows (loaded before the write lock)
    and the statement that upserts them into the cache (under it)."""
    writes = [
        ("w_cymru_prefixes", PREFIX_COLUMNS, cymru.prefixes, "upsert_cymru_prefixes"),
        ("w_cymru_unrouted", UNROUTED_COLUMNS, cymru.unrouted, "upsert_cymru_unrouted"),
        ("w_cymru_names", NAME_COLUMNS, cymru.names, "upsert_cymru_names"),
    ]
    return [write for write in writes if write[2]]
