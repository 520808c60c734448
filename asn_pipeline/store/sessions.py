"""Writing one day's sessions: sessions, the parts of those spanning days (fragments), source
files and rejected lines, in one transaction."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
from sqlalchemy.engine import Connection

from asn_pipeline.cowrie import FRAGMENT_COLUMNS, ParsedDay
from asn_pipeline.store.database import (
    DayRows,
    Inventory,
    analyze,
    bulk_insert,
    frame_rows,
    run,
)
from asn_pipeline.store.derived import StatisticsWritten, drain_queues

REJECT_COLUMNS = (
    "ingest_date",
    "source_file",
    "line_number",
    "reason",
    "raw_line",
    "line_bytes",
    "line_sha256",
    "ingested_by_run",
)
SOURCE_FILE_COLUMNS = (
    "logical_name",
    "source_file",
    "size_bytes",
    "lines_read",
    "events_read",
    "rejected_lines",
    "status",
)


class DayWouldShrink(ValueError):
    """A write would replace a day with less than it holds (files pruned, a share unmounted)."""

    def __init__(self, day: dt.date, problems: list[str]):
        self.day = day
        self.problems = problems
        super().__init__(
            f"refusing to replace {day} with less than it holds: {'; '.join(problems)}. The "
            "previous state is kept. If the files were removed on purpose, run again with "
            "allow_shrink (run config of cowrie_sessions, or the run tag asn_pipeline/allow_shrink"
            "=true)."
        )


@dataclass(frozen=True)
class SessionsWritten:
    sessions_owned: int
    fragments: int
    sessions_spanning_days: int
    reused_session_ids: int
    refreshed: StatisticsWritten | None


@dataclass
class DayWrite:
    """What replacing one day writes: its fragments, the files read and the lines rejected.

    Built from a ``ParsedDay``; with ``in_memory`` its rejected lines are read from their spool
    into lists, so that the value pickles and can be written by a later step (the inventory
    step of the same run, or of a later one: ``store.step_outputs.stage_day``).
    """

    day: dt.date
    fragments: pd.DataFrame
    source_files: list[tuple]
    rejected: Iterable[list[tuple]]
    lines: int  # events plus rejected lines: what the day will account for
    run_id: str | None  # the run that read the files
    allow_shrink: bool = False

    @classmethod
    def of(
        cls,
        day: dt.date,
        parsed: ParsedDay,
        run_id: str | None,
        *,
        allow_shrink: bool = False,
        in_memory: bool = False,
    ) -> DayWrite:
        reports = [
            (r.logical_name, r.name, r.size_bytes, r.lines_read, r.events_read)
            + (r.rejected_lines, r.status)
            for r in parsed.file_reports
        ]
        batches = (
            [
                (day, r.source_file, r.line_number, r.reason, r.raw_line, r.line_bytes)
                + (r.line_sha256, run_id)
                for r in batch
            ]
            for batch in parsed.rejected.batches()
        )
        return cls(
            day,
            parsed.fragments,
            reports,
            list(batches) if in_memory else batches,
            int(parsed.fragments["event_count"].sum()) + len(parsed.rejected),
            run_id,
            allow_shrink,
        )

    @property
    def addresses(self) -> list[str]:
        """The day's distinct source addresses, in order."""
        return sorted(self.fragments["src_ip"].unique().tolist())


def replace_day(
    inventory: Inventory,
    day: dt.date,
    parsed: ParsedDay,
    run_id: str | None,
    *,
    allow_shrink: bool = False,
    settle: bool = False,
) -> SessionsWritten:
    """Make ``day``'s fragments, source files and rejected lines exactly what ``parsed`` read,
    and re-merge the sessions they belong to, in a transaction of their own (``write_day``).

    The keys whose counters and statistics change are queued in ``stale_*``; with ``settle``
    they are recomputed in this transaction. Raises ``DayWouldShrink``, and writes nothing, if
    the day would lose lines (``check_shrinkage``), unless ``allow_shrink``.
    """
    write = DayWrite.of(day, parsed, run_id, allow_shrink=allow_shrink)
    with inventory.write(lambda conn: stage_day(conn, write), day_rows(write)) as conn:
        written = write_day(conn, write)
        refreshed = drain_queues(conn) if settle else None
    return dataclasses.replace(written, refreshed=refreshed)


def stage_day(conn: Connection, write: DayWrite) -> None:
    """Load the day's files and fragments into their work tables (before the write lock)."""
    bulk_insert(conn, "w_source_files", SOURCE_FILE_COLUMNS, write.source_files)
    bulk_insert(
        conn, "w_fragments", FRAGMENT_COLUMNS, frame_rows(write.fragments, FRAGMENT_COLUMNS)
    )


def day_rows(write: DayWrite) -> DayRows:
    """The rows of the day alone (``write_day_rows``), for ``Inventory.write``."""
    return DayRows(write.day, lambda conn: write_day_rows(conn, write))


def write_day_rows(conn: Connection, write: DayWrite) -> None:
    """Replace what belongs to the day alone: its source files and rejected lines; note the
    sessions the write touches (``w_sessions``); and on PostgreSQL insert the day's sessions
    of its own, the ids no other day has (``w_early``). No writer of another day writes these
    rows, so on PostgreSQL this runs under the day's lock before the write lock
    (``Inventory.write``); ``write_day`` then writes the rest under it, after checking the
    early sessions against what other writes committed meanwhile. Raises ``DayWouldShrink``
    first if the day would lose lines (``check_shrinkage``)."""
    params = _params(write)
    if not write.allow_shrink:
        check_shrinkage(conn, write)
    for name in ("delete_day_rejects", "delete_day_source_files", "insert_day_source_files"):
        run(conn, "sessions", name, **params)
    for rows in write.rejected:
        bulk_insert(conn, "rejected_events", REJECT_COLUMNS, rows)
    # This write supersedes every day staged earlier for a later step to write.
    run(conn, "step_outputs", "forget_staged_days", day=write.day.isoformat())
    early = writes_early(conn)
    if early:
        run(conn, "sessions", "collect_early_sessions", **params)
        analyze(conn, "w_early")
    run(conn, "sessions", "collect_touched_sessions", **params)
    if early:
        run(conn, "sessions", "insert_early_sessions", **params)


def writes_early(conn: Connection) -> bool:
    """Whether a write of a day inserts its sessions of ids no other day has before the write
    lock (``w_early``): on PostgreSQL. SQLite's one lock covers all of the write, so there is
    nothing to gain there."""
    return conn.dialect.name == "postgresql"


def write_day(conn: Connection, write: DayWrite, *, queue_ips: bool = True) -> SessionsWritten:
    """Replace the day's sessions with its new parts (``w_fragments``) and re-merge the sessions
    they belong to, in the caller's write transaction, under the write lock.

    A session is the parts of one (sensor, session id) on consecutive days: the islands that
    hold the day before, the day and the day after are rebuilt from all their parts, so a
    session spanning midnight stays one row owned by its first day whatever the order of runs,
    and an id reused after a gap stays another session. A session of one day alone is stored as
    its row; only the parts of a session spanning days are kept in ``session_fragments`` (a
    neighbour's part becomes a fragment when this day joins its session, and its row alone when
    this day leaves it), so those rows are written under the lock too. Each session row is
    written with its ASN snapshot: the ASN ``w_lookups`` gives its address where the caller is
    upserting the day's lookups in the same transaction (``store.inventory.upsert_lookups``),
    else the address's current ASN. Stale keys are queued; ``w_ips`` is left holding the
    addresses of the touched sessions, which are queued in ``stale_ips`` too unless the caller
    refreshes their counters from ``w_ips`` in the same transaction (``queue_ips=False``).

    On PostgreSQL the day's sessions whose id no other day had were inserted before the lock
    (``write_day_rows``, ``w_early``); those whose id a write of another day has given a session
    since are deleted and written here as the others are.
    """
    params = _params(write)
    if writes_early(conn):
        for name in (
            "collect_late_sessions",
            "delete_late_sessions",
            "touch_late_sessions",
            "forget_late_sessions",
        ):
            run(conn, "sessions", name, **params)
    for name in (
        "collect_id_sessions",
        "collect_other_parts",
        "collect_islands",
        "collect_old_sessions",
        "collect_old_island_sessions",
    ):
        run(conn, "sessions", name, **params)
    # The sets the statements below read (w_sessions and w_id_sessions have no later reader).
    analyze(conn, "w_old_sessions", "w_other_parts", "w_islands")
    for name in (
        "merge_single_day_sessions",
        "merge_island_sessions",
        "collect_touched_ips",
        "mark_days_of_old_sessions",
        "remember_first_dates",
        "delete_day_fragments",
        "insert_day_fragments",
        "insert_joined_fragments",
        "delete_split_fragments",
        "delete_touched_sessions",
        "insert_merged_sessions",
        "mark_days_of_merged_sessions",
        "mark_day_of_early_sessions",
        "mark_days_of_first_date_changes",
    ):
        run(conn, "sessions", name, **params)
    if queue_ips:
        run(conn, "sessions", "mark_touched_ips")
    summary = run(conn, "sessions", "day_session_summary", **params).one()
    # A new day is missing from the planner's statistics, which then expects a few thousand
    # of its rows where there are hundreds of thousands and plans the following steps' joins
    # as index probes per row; refresh them now (PostgreSQL; a sample, well under a second).
    analyze(conn, "sessions", "session_fragments")
    return SessionsWritten(*summary, None)


def _params(write: DayWrite) -> dict[str, object]:
    day = write.day
    return {
        "day": day,
        "previous_day": day - dt.timedelta(days=1),
        "next_day": day + dt.timedelta(days=1),
        "run_id": write.run_id,
        "now": dt.datetime.now(dt.UTC),
    }


def check_shrinkage(conn: Connection, write: DayWrite) -> None:
    """Raise ``DayWouldShrink`` if the day would lose lines: a file an earlier run read is gone
    or holds fewer lines, or the day would account for fewer lines than it does. Reads only:
    the ingest step runs it before handing the day on, and the write again under its lock."""
    problems = _shrinkage(conn, write.day, write.source_files, write.lines)
    if problems:
        raise DayWouldShrink(write.day, problems)


def _shrinkage(
    conn: Connection, day: dt.date, source_files: list[tuple], lines_now: int
) -> list[str]:
    """What the day would lose: files gone or shorter than when read, or fewer lines in all
    (events plus rejected lines; days ingested before files were recorded have only this)."""
    lines_read = {row[0]: row[3] for row in source_files}  # logical name -> lines
    problems = []
    for name, source_file, had, run_id in run(conn, "sessions", "day_source_files", day=day):
        now = lines_read.get(name)
        if now is not None and now >= had:
            continue
        read_by = f", read by run {run_id}" if run_id else ""
        if now is None:
            problems.append(f"{source_file} is missing (it had {had} lines{read_by})")
        else:
            problems.append(f"{name} has {now} lines, {had} when read{read_by}")
    held = run(conn, "sessions", "day_lines_held", day=day).scalar_one()
    if lines_now < held:
        problems.append(f"its files hold {lines_now} events and rejected lines, the day {held}")
    return problems
