import datetime as dt

import dagster as dg
from pydantic import Field

from asn_pipeline.cowrie import files_for_day, parse_day
from asn_pipeline.defs.partitions import daily_partitions
from asn_pipeline.resources import INVENTORY_POOL, InventoryDatabase, LandingDirectory
from asn_pipeline.steps import (
    ALLOW_SHRINK_TAG,
    RETRY_POLICY,
    STATISTICS_ASSET,
    counts_table,
    markdown_table,
    report_refreshed_days,
    retry_only_transient,
    run_materialises,
)
from asn_pipeline.store import inventory as inventory_store
from asn_pipeline.store import sessions


class CowrieSessionsConfig(dg.Config):
    allow_shrink: bool = Field(
        default=False,
        description=(
            "Replace the day even though its files now hold less than it does (a file an earlier "
            "run read is gone or shorter). Off: such a run fails and keeps the previous state."
        ),
    )


@dg.asset(
    partitions_def=daily_partitions,
    group_name="honeypot",
    kinds={"python", "sql"},
    owners=["team:honeypot-data"],
    tags={"domain": "ingest"},
    pool=INVENTORY_POOL,
    retry_policy=RETRY_POLICY,
)
def cowrie_sessions(
    context: dg.AssetExecutionContext,
    config: CowrieSessionsConfig,
    inventory_db: InventoryDatabase,
    landing: LandingDirectory,
) -> dg.MaterializeResult:
    """One row per Cowrie session in the day's logs; unusable lines go to rejected_events."""
    day = dt.date.fromisoformat(context.partition_key)
    allow_shrink = config.allow_shrink or context.run.tags.get(ALLOW_SHRINK_TAG) == "true"
    # Without asn_statistics in the run, nothing later in it recomputes the counters this write
    # changes: it does so itself, in the same transaction.
    settle = not run_materialises(context, STATISTICS_ASSET)
    inventory = inventory_db.inventory
    with retry_only_transient():
        found = files_for_day(landing.root, day)
        for skipped in found.skipped:
            context.log.warning(f"Not read: {skipped.name} ({skipped.reason}: {skipped.detail})")
        with parse_day(found.files) as parsed:
            written = sessions.replace_day(
                inventory, day, parsed, context.run_id, allow_shrink=allow_shrink, settle=settle
            )
        pending = (
            {}
            if run_materialises(context, "ip_inventory")
            else inventory_store.day_pending(inventory, day)
        )
    report_refreshed_days(context, written.refreshed, day)
    reports = parsed.file_reports
    damaged = [r for r in reports if r.status != "ok"]
    for report in damaged:
        context.log.warning(f"{report.name}: {report.status}")
    metadata = {
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
        "damaged_files": len(damaged),
        "files_not_read": dg.MetadataValue.md(
            markdown_table(
                ("file", "reason", "detail"), [(s.name, s.reason, s.detail) for s in found.skipped]
            )
        ),
        "lines_read": parsed.lines_read,
        "events_read": parsed.events_read,
        "sessions_in_files": len(parsed.fragments),
        "sessions_owned_by_day": written.sessions_owned,
        "sessions_spanning_days": written.sessions_spanning_days,
        "reused_session_ids": written.reused_session_ids,
        "rejected_lines": len(parsed.rejected),
        "rejected_by_reason": dg.MetadataValue.md(
            counts_table("reason", "lines", parsed.reasons.most_common())
        ),
        "blank_lines": parsed.blank_lines,
        "src_ip_conflicts": parsed.src_ip_conflicts,
        "replaced_with_less_allowed": allow_shrink,
        "database": inventory.display_url,
        "dagster/row_count": written.sessions_owned,
    }
    if pending:
        # Materialised without ip_inventory: say what this day still waits for.
        metadata.update(pending)
        metadata["pending"] = dg.MetadataValue.md(
            "Materialise ip_inventory (and asn_statistics) for this day: "
            f"{pending['addresses_awaiting_lookup']} addresses are not looked up yet and "
            f"{pending['sessions_awaiting_asn_snapshot']} sessions have no ASN snapshot yet."
        )
    return dg.MaterializeResult(metadata=metadata)
