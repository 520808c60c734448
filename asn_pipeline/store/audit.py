"""Invariant audits (DESIGN §5) of one day or a range of days, for the asset checks.

Each asset's checks read what they need in one read transaction (``sessions_audit``,
``inventory_audit``, ``statistics_audit``): one statement serves several checks, so that adding a
check adds no pass over the day's rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy.engine import Connection

from asn_pipeline.lookup.special_purpose import GLOBAL, classify_all
from asn_pipeline.store.database import Inventory, run

EXAMPLES = 20  # offending keys a check shows
# An IN list of ASNs stays well under SQLite's 32,766 bound parameters.
ASN_BATCH = 10_000
ADDRESS_COLUMNS = (
    "ip_address",
    "ip_class",
    "asn_source",
    "current_asn",
    "build_epoch",
    "counters_differ",
    "queued",
    "asn_missing",
    "session_asns_missing",
)


@dataclass(frozen=True)
class SessionsAudit:
    """What the days' source files and sessions say (asset ``cowrie_sessions``)."""

    damaged_files: dict[str, str]  # file -> status, of files not read whole or without events
    files: int
    lines_read: int
    rejected_lines: int
    split_sessions: int  # sessions stored as two rows across a midnight
    split_examples: list[str] = field(default_factory=list)

    @property
    def rejected_ratio(self) -> float:
        return self.rejected_lines / self.lines_read if self.lines_read else 0.0


@dataclass(frozen=True)
class AddressAudit:
    """What the days' addresses' ``ip_inventory`` rows say (asset ``ip_inventory``)."""

    addresses: int
    counter_mismatches: int  # counters that differ from the sessions, not queued
    counter_examples: list[str]
    queued: int  # addresses waiting in stale_ips
    misclassified: int  # class not the pinned table's, or a bogon with an ASN or a lookup
    misclassified_examples: list[str]
    dangling_current_asn: int  # addresses whose current_asn has no asn_inventory row
    dangling_examples: list[str]
    global_addresses: int
    global_with_asn: int
    oldest_build_epoch: int | None  # of the MaxMind ASN builds the addresses were looked up in
    session_asns_missing: int  # their sessions whose asn_number has no asn_inventory row

    @property
    def coverage(self) -> float:
        """Share of global addresses with an ASN (1.0 without global addresses)."""
        return self.global_with_asn / self.global_addresses if self.global_addresses else 1.0


@dataclass(frozen=True)
class AsnAudit:
    """The days' ASNs' counters against a recomputation (asset ``asn_inventory``)."""

    asns: int
    counter_mismatches: list[int]


@dataclass(frozen=True)
class StatisticsAudit:
    """The days' statistics against their sessions (asset ``asn_statistics``)."""

    mismatches: int  # asn_daily_stats rows that differ, are missing or extra, not queued
    pending_stale_keys: int  # keys queued in stale_*, any day


def sessions_audit(inventory: Inventory, first_day: dt.date, last_day: dt.date) -> SessionsAudit:
    """The days' source files (damaged ones, lines read and rejected) and their sessions split
    at a midnight, with the day after the range (whose sessions may continue the range's)."""
    with _snapshot(inventory) as conn:
        files = run(conn, "audit", "day_source_files", **_days(first_day, last_day)).all()
        split = run(
            conn,
            "audit",
            "split_sessions",
            first_day=first_day,
            last_day=last_day,
            day_before=first_day - dt.timedelta(days=1),
            day_after=last_day + dt.timedelta(days=1),
            examples=EXAMPLES,
        ).all()
    return SessionsAudit(
        damaged_files={name: status for name, status, _, _ in files if status != "ok"},
        files=len(files),
        lines_read=sum(lines for _, _, lines, _ in files),
        rejected_lines=sum(rejected for _, _, _, rejected in files),
        split_sessions=split[0].found if split else 0,
        split_examples=[f"{r.sensor}/{r.session_id} of {str(r.ingest_date)[:10]}" for r in split],
    )


def inventory_audit(
    inventory: Inventory, first_day: dt.date, last_day: dt.date
) -> tuple[AddressAudit, AsnAudit]:
    """The days' addresses (counters, classes, ASN references, coverage, MaxMind build) and
    the counters of their ASNs, from one committed state."""
    with _snapshot(inventory) as conn:
        rows = run(conn, "audit", "day_address_audit", **_days(first_day, last_day)).all()
        addresses = pd.DataFrame(list(map(tuple, rows)), columns=list(ADDRESS_COLUMNS))
        asns = sorted(int(a) for a in addresses["current_asn"].dropna().unique())
        wrong_asns = _asn_counter_mismatches(conn, asns)
    return _address_audit(addresses), AsnAudit(len(asns), wrong_asns)


def statistics_audit(
    inventory: Inventory, first_day: dt.date, last_day: dt.date
) -> StatisticsAudit:
    """The days' ``asn_daily_stats`` against their sessions, and what is queued."""
    with _snapshot(inventory) as conn:
        mismatches = run(
            conn, "audit", "day_statistics_mismatches", **_days(first_day, last_day)
        ).scalar_one()
        pending = run(conn, "audit", "pending_stale_keys").scalar_one()
    return StatisticsAudit(mismatches, pending)


def counter_mismatches(
    inventory: Inventory, first_day: dt.date, last_day: dt.date | None = None
) -> dict[str, int]:
    """Rows of the days whose derived values differ from a recomputation from facts
    (invariant 1): address counters and daily statistics not queued for one, ASN counters that
    their queued difference does not mend. What the three counter checks find together."""
    last_day = last_day or first_day
    addresses, asns = inventory_audit(inventory, first_day, last_day)
    return {
        "ip_counter": addresses.counter_mismatches,
        "asn_counter": len(asns.counter_mismatches),
        "day_statistics": statistics_audit(inventory, first_day, last_day).mismatches,
    }


def dangling_asn_references(inventory: Inventory) -> int:
    """current_asn and sessions.asn_number values of the whole inventory missing from
    asn_inventory (invariant 3; the checks look at their days only)."""
    with inventory.read() as conn:
        return run(conn, "audit", "dangling_asn_references").scalar_one()


def _address_audit(addresses: pd.DataFrame) -> AddressAudit:
    expected = classify_all(addresses["ip_address"].tolist()).classes
    is_global = (addresses["ip_class"] == GLOBAL).to_numpy()
    has_asn = addresses["current_asn"].notna().to_numpy()
    bogon = expected != GLOBAL
    misclassified = (addresses["ip_class"].to_numpy() != expected) | (
        bogon & ((addresses["asn_source"] != "bogon").to_numpy() | has_asn)
    )
    differ = (addresses["counters_differ"] == 1) & (addresses["queued"] == 0)
    dangling = addresses["asn_missing"] == 1
    epochs = addresses.loc[is_global, "build_epoch"].dropna()
    return AddressAudit(
        addresses=len(addresses),
        counter_mismatches=int(differ.sum()),
        counter_examples=_first(addresses.loc[differ, "ip_address"]),
        queued=int(addresses["queued"].sum()),
        misclassified=int(misclassified.sum()),
        misclassified_examples=_first(addresses.loc[misclassified, "ip_address"]),
        dangling_current_asn=int(dangling.sum()),
        dangling_examples=_first(addresses.loc[dangling, "ip_address"]),
        global_addresses=int(is_global.sum()),
        global_with_asn=int((is_global & has_asn).sum()),
        oldest_build_epoch=int(epochs.min()) if len(epochs) else None,
        session_asns_missing=int(addresses["session_asns_missing"].sum()),
    )


def _asn_counter_mismatches(conn: Connection, asns: list[int]) -> list[int]:
    wrong: list[int] = []
    for start in range(0, len(asns), ASN_BATCH):
        batch = asns[start : start + ASN_BATCH]
        wrong += run(conn, "audit", "asn_counter_audit", asns=batch).scalars()
    return wrong


def _first(values: pd.Series) -> list[str]:
    return sorted(values.tolist())[:EXAMPLES]


@contextmanager
def _snapshot(inventory: Inventory) -> Iterator[Connection]:
    """One read transaction that sees one committed state throughout: SQLite's read
    transaction does; PostgreSQL's READ COMMITTED would take a new snapshot per statement."""
    postgres = inventory.dialect == "postgresql"
    with inventory.read() as conn:
        if postgres:
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            if postgres:
                # The audits probe indexes row by row; their plans' costs cross the JIT
                # thresholds, and compiling them took longer than running them.
                conn.exec_driver_sql("SET LOCAL jit = off")
            yield conn


def _days(first_day: dt.date, last_day: dt.date | None) -> dict[str, dt.date]:
    return {"first_day": first_day, "last_day": last_day or first_day}
