"""Writing one day's sessions: fragments, sessions, source files and rejected lines, in one
transaction."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from asn_pipeline.cowrie import FRAGMENT_COLUMNS, ParsedDay
from asn_pipeline.store.database import Inventory, analyze, bulk_insert, frame_rows, run
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
    and re-merge the sessions they belong to.

    A session is the fragments of one (sensor, session id) on consecutive days: the islands that
    hold the day before, the day and the day after are rebuilt from all their fragments, so a
    session spanning midnight stays one row owned by its first day whatever the order of runs,
    and an id reused after a gap stays another session. The keys whose counters and statistics
    change are queued in ``stale_*``; with ``settle`` they are recomputed in this transaction.

    Raises ``DayWouldShrink``, and writes nothing, if a file an earlier run read is gone or holds
    fewer lines, or the day would account for fewer lines than it does, unless ``allow_shrink``.
    """
    params = {
        "day": day,
        "previous_day": day - dt.timedelta(days=1),
        "next_day": day + dt.timedelta(days=1),
        "run_id": run_id,
        "now": dt.datetime.now(dt.UTC),
    }
    fragments = parsed.fragments
    reports = [
        (r.logical_name, r.name, r.size_bytes, r.lines_read, r.events_read)
        + (r.rejected_lines, r.status)
        for r in parsed.file_reports
    ]

    def stage(conn: Connection) -> None:
        bulk_insert(conn, "w_source_files", SOURCE_FILE_COLUMNS, reports)
        bulk_insert(conn, "w_fragments", FRAGMENT_COLUMNS, frame_rows(fragments, FRAGMENT_COLUMNS))

    with inventory.write(stage) as conn:
        if not allow_shrink:
            lines_now = int(fragments["event_count"].sum()) + len(parsed.rejected)
            problems = _shrinkage(conn, day, lines_now)
            if problems:
                raise DayWouldShrink(day, problems)
        for name in (
            "collect_touched_sessions",
            "collect_other_fragments",
            "collect_islands",
            "collect_old_sessions",
            "collect_old_island_sessions",
        ):
            run(conn, "sessions", name, **params)
        analyze(conn, "w_sessions", "w_old_sessions", "w_other_fragments", "w_islands")
        for name in (
            "merge_single_day_sessions",
            "merge_island_sessions",
            "collect_touched_ips",
            "mark_days_of_old_sessions",
            "remember_first_dates",
            "delete_day_fragments",
            "insert_day_fragments",
            "delete_touched_sessions",
            "insert_merged_sessions",
            "mark_days_of_merged_sessions",
            "mark_days_of_first_date_changes",
            "mark_touched_ips",
            "delete_day_rejects",
            "delete_day_source_files",
            "insert_day_source_files",
        ):
            run(conn, "sessions", name, **params)
        for batch in parsed.rejected.batches():
            rows = [
                (day, r.source_file, r.line_number, r.reason, r.raw_line, r.line_bytes)
                + (r.line_sha256, run_id)
                for r in batch
            ]
            bulk_insert(conn, "rejected_events", REJECT_COLUMNS, rows)
        summary = run(conn, "sessions", "day_session_summary", **params).one()
        # A new day is missing from the planner's statistics, which then expects a few thousand
        # of its rows where there are hundreds of thousands and plans the following steps' joins
        # as index probes per row; refresh them now (PostgreSQL; a sample, well under a second).
        analyze(conn, "sessions", "session_fragments")
        refreshed = drain_queues(conn) if settle else None
    return SessionsWritten(*summary, refreshed)


def _shrinkage(conn: Connection, day: dt.date, lines_now: int) -> list[str]:
    """What the day would lose: files gone or shorter than when read, or fewer lines in all
    (events plus rejected lines; days ingested before files were recorded have only this)."""
    problems = []
    for name, source_file, had, now, run_id in run(conn, "sessions", "lost_source_files", day=day):
        read_by = f", read by run {run_id}" if run_id else ""
        if now is None:
            problems.append(f"{source_file} is missing (it had {had} lines{read_by})")
        else:
            problems.append(f"{name} has {now} lines, {had} when read{read_by}")
    held = run(conn, "sessions", "day_lines_held", day=day).scalar_one()
    if lines_now < held:
        problems.append(f"its files hold {lines_now} events and rejected lines, the day {held}")
    return problems
