import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from asn_pipeline.cowrie import (
    DayFiles,
    FileReport,
    ParsedDay,
    SkippedFile,
    files_for_day,
    landing_files,
    parse_day,
)
from asn_pipeline.defs.partitions import backfill_policy, daily_partitions
from asn_pipeline.resources import (
    INVENTORY_POOL,
    InventoryDatabase,
    LandingDirectory,
    MaxMindDatabases,
)
from asn_pipeline.steps import (
    ALLOW_SHRINK_TAG,
    RETRY_POLICY,
    STAGED_REJECTED_LINES_MAX,
    STATISTICS_ASSET,
    counts_table,
    describe_days,
    markdown_table,
    partition_days,
    report_refreshed_days,
    retry_only_transient,
    run_materialises,
    scoped_to_days,
    written_metadata,
)
from asn_pipeline.store import inventory as inventory_store
from asn_pipeline.store import sessions, step_outputs
from asn_pipeline.store.sessions import DayWrite, SessionsWritten
from asn_pipeline.tables import CODE_VERSION, OWNERS, column_lineage, table_metadata


class CowrieSessionsConfig(dg.Config):
    allow_shrink: bool = Field(
        default=False,
        description=(
            "Replace the day even though its files now hold less than it does (a file an earlier "
            "run read is gone or shorter). Off: such a run fails and keeps the previous state."
        ),
    )


@dg.asset(
    deps=[dg.AssetDep("cowrie_landing")],
    partitions_def=daily_partitions,
    backfill_policy=backfill_policy,
    group_name="honeypot",
    kinds={"python", "sql"},
    owners=OWNERS,
    tags={"domain": "ingest"},
    code_version=CODE_VERSION,
    metadata=table_metadata("sessions"),
    pool=INVENTORY_POOL,
    retry_policy=RETRY_POLICY,
)
def cowrie_sessions(
    context: dg.AssetExecutionContext,
    config: CowrieSessionsConfig,
    inventory_db: InventoryDatabase,
    landing: LandingDirectory,
    maxmind: MaxMindDatabases,
) -> dg.MaterializeResult:
    """One row per Cowrie session of the day's logs in sessions; unusable lines go to
    rejected_events and the files read to source_files."""
    started = time.monotonic()
    days = partition_days(context)
    allow_shrink = config.allow_shrink or context.run.tags.get(ALLOW_SHRINK_TAG) == "true"
    # Without asn_statistics in the run, nothing later in it recomputes the counters these
    # writes change: the last one does so itself, in its transaction.
    settle = not run_materialises(context, STATISTICS_ASSET)
    # In a run that materialises ip_inventory too, a day is only read and checked here, and
    # written by the inventory step with its lookups, each session once with its ASN.
    hand_on = len(days) == 1 and run_materialises(context, "ip_inventory")
    inventory = inventory_db.inventory
    read = []
    staged: DayWrite | None = None
    with retry_only_transient():
        # The run's first step: a file the run needs and cannot use fails it here, before
        # anything is written, with the message the definitions no longer give at load.
        root = landing.check()
        if run_materialises(context, "ip_inventory") or run_materialises(context, "asn_inventory"):
            maxmind.check()
        # A range's days come from one listing of the landing directory, not one per day.
        listed = landing_files(root).days if len(days) > 1 else {}
        for day in days:
            # Each day is written whole in its own transaction: a failure on a later day of a
            # range leaves the earlier ones done, and a re-run redoes them idempotently.
            found = listed[day] if day in listed else files_for_day(root, day)
            for skipped in found.skipped:
                context.log.warning(
                    f"Not read: {skipped.name} ({skipped.reason}: {skipped.detail})"
                )
            with parse_day(found.files) as parsed:
                if hand_on and len(parsed.rejected) <= STAGED_REJECTED_LINES_MAX:
                    staged = DayWrite.of(
                        day, parsed, context.run_id, allow_shrink=allow_shrink, in_memory=True
                    )
                    if not allow_shrink:  # fail here, before the lookups (and again under the lock)
                        with inventory.read() as conn:
                            sessions.check_shrinkage(conn, staged)
                    written = None
                else:
                    written = sessions.replace_day(
                        inventory,
                        day,
                        parsed,
                        context.run_id,
                        allow_shrink=allow_shrink,
                        settle=settle and day == days[-1],
                    )
                read.append(DayRead.of(day, found, parsed, written))
            if written is not None:
                report_refreshed_days(context, inventory, written.refreshed, days)
        pending: dict[str, int] = {}
        if not run_materialises(context, "ip_inventory"):
            for day in days:
                for key, count in inventory_store.day_pending(inventory, day).items():
                    pending[key] = pending.get(key, 0) + count
    for report in (r for d in read for r in d.file_reports if r.status != "ok"):
        context.log.warning(f"{report.name}: {report.status}")
    metadata = _metadata(read)
    metadata["replaced_with_less_allowed"] = allow_shrink
    metadata["database"] = inventory.display_url
    if pending:
        # Materialised without ip_inventory: say what these days still wait for.
        metadata.update(pending)
        metadata["pending"] = dg.MetadataValue.md(
            f"Materialise ip_inventory (and asn_statistics) for {describe_days(days)}: "
            f"{pending['addresses_awaiting_lookup']} addresses are not looked up yet and "
            f"{pending['sessions_awaiting_asn_snapshot']} sessions have no ASN snapshot yet."
        )
    if staged is not None:
        with retry_only_transient():
            size = step_outputs.stage_day(
                inventory, staged.day, context.run_id, staged, staged.addresses
            )
        metadata["written_by"] = dg.MetadataValue.md(
            "Read and checked here; the inventory step writes the day with its lookups "
            "(`inventory.upsert_inventory`), then records this materialisation again with the "
            "written figures (`sessions_owned_by_day` and the row count)."
        )
        metadata["staged_bytes"] = size
        metadata["step_seconds"] = dg.MetadataValue.float(round(time.monotonic() - started, 3))
        return dg.MaterializeResult(metadata={**metadata, **column_lineage("sessions")})
    per_day = [
        (
            d.day.isoformat(),
            len(d.file_reports),
            d.lines_read,
            d.events_read,
            d.written.sessions_owned,
            d.rejected_lines,
        )
        for d in read
    ]
    headers = ("day", "files", "lines", "events", "sessions", "rejected")
    metadata["step_seconds"] = dg.MetadataValue.float(round(time.monotonic() - started, 3))
    return dg.MaterializeResult(
        metadata={**scoped_to_days(days, metadata, per_day, headers), **column_lineage("sessions")}
    )


@dataclass(frozen=True)
class DayRead:
    """What one day's files held and what writing them did (figures only: a range's days are
    not kept in memory)."""

    day: dt.date
    skipped: list[SkippedFile]
    file_reports: list[FileReport]
    lines_read: int
    events_read: int
    sessions_in_files: int
    rejected_lines: int
    reasons: Counter[str]
    blank_lines: int
    src_ip_conflicts: int
    written: SessionsWritten | None  # None: handed to the inventory step to write

    @classmethod
    def of(cls, day: dt.date, found: DayFiles, parsed: ParsedDay, written: SessionsWritten | None):
        return cls(
            day,
            found.skipped,
            parsed.file_reports,
            parsed.lines_read,
            parsed.events_read,
            len(parsed.fragments),
            len(parsed.rejected),
            parsed.reasons,
            parsed.blank_lines,
            parsed.src_ip_conflicts,
            written,
        )


def _metadata(read: list[DayRead]) -> dict[str, object]:
    """The figures of the days read: one day's, or the sums over a range."""
    reports = [r for d in read for r in d.file_reports]
    skipped = [s for d in read for s in d.skipped]
    reasons = sum((d.reasons for d in read), Counter())
    written = [d.written for d in read if d.written is not None]
    return {
        "files": dg.MetadataValue.md(
            markdown_table(
                ("file", "status", "lines", "events", "rejected", "bytes"),
                [
                    (r.name, r.status, r.lines_read, r.events_read, r.rejected_lines, r.size_bytes)
                    for r in reports
                ],
            )
        ),
        "file_count": len(reports),
        "damaged_files": sum(r.status != "ok" for r in reports),
        "files_not_read": dg.MetadataValue.md(
            markdown_table(
                ("file", "reason", "detail"), [(s.name, s.reason, s.detail) for s in skipped]
            )
        ),
        "lines_read": sum(d.lines_read for d in read),
        "events_read": sum(d.events_read for d in read),
        "sessions_in_files": sum(d.sessions_in_files for d in read),
        **(written_metadata(written) if len(written) == len(read) else {}),
        "rejected_lines": sum(d.rejected_lines for d in read),
        "rejected_by_reason": dg.MetadataValue.md(
            counts_table("reason", "lines", reasons.most_common())
        ),
        "blank_lines": sum(d.blank_lines for d in read),
        "src_ip_conflicts": sum(d.src_ip_conflicts for d in read),
    }
