"""Writing one day's sessions: fragments, merged sessions and rejected lines, in one transaction."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from asn_pipeline.cowrie import FRAGMENT_COLUMNS, RejectedLine
from asn_pipeline.store.database import Inventory, analyze, bulk_insert, frame_rows, run

REJECT_COLUMNS = (
    "ingest_date",
    "source_file",
    "line_number",
    "reason",
    "raw_line",
    "ingested_by_run",
)


@dataclass(frozen=True)
class SessionsWritten:
    sessions_owned: int
    fragments: int
    sessions_spanning_days: int


def replace_day(
    inventory: Inventory,
    day: dt.date,
    fragments: pd.DataFrame,
    rejected: list[RejectedLine],
    run_id: str | None,
) -> SessionsWritten:
    """Make ``day``'s fragments and rejected lines exactly the given ones, and re-merge sessions.

    Every session with a fragment on ``day`` before or after is rebuilt from all of its fragments,
    so a session spanning midnight stays one row owned by its earliest day whatever the order of
    runs. The keys whose counters and statistics change are queued in ``stale_*``.
    """
    params = {"day": day, "run_id": run_id}
    with inventory.write() as conn:
        bulk_insert(conn, "w_fragments", FRAGMENT_COLUMNS, frame_rows(fragments, FRAGMENT_COLUMNS))
        for name in ("collect_touched_sessions", "collect_old_sessions", "collect_other_fragments"):
            run(conn, "sessions", name, **params)
        analyze(conn, "w_sessions", "w_old_sessions", "w_other_fragments")
        for name in (
            "merge_single_day_sessions",
            "merge_spanning_sessions",
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
        ):
            run(conn, "sessions", name, **params)
        bulk_insert(
            conn,
            "rejected_events",
            REJECT_COLUMNS,
            [(day, r.source_file, r.line_number, r.reason, r.raw_line, run_id) for r in rejected],
        )
        summary = run(conn, "sessions", "day_session_summary", **params).one()
        # A new day is missing from the planner's statistics, which then expects a few thousand
        # of its rows where there are hundreds of thousands and plans the following steps' joins
        # as index probes per row; refresh them now (PostgreSQL; a sample, well under a second).
        analyze(conn, "sessions", "session_fragments")
    return SessionsWritten(*summary)
