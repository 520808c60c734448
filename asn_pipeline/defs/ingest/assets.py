import datetime as dt

import dagster as dg

from asn_pipeline.cowrie import files_for_day, parse_day
from asn_pipeline.defs.partitions import daily_partitions
from asn_pipeline.defs.reporting import counts_table
from asn_pipeline.resources import INVENTORY_POOL, InventoryDatabase, LandingDirectory
from asn_pipeline.store import sessions


@dg.asset(
    partitions_def=daily_partitions,
    group_name="honeypot",
    kinds={"python", "sql"},
    owners=["team:honeypot-data"],
    tags={"domain": "ingest"},
    pool=INVENTORY_POOL,
)
def cowrie_sessions(
    context: dg.AssetExecutionContext, inventory_db: InventoryDatabase, landing: LandingDirectory
) -> dg.MaterializeResult:
    """One row per Cowrie session in the day's logs; unusable lines go to rejected_events."""
    day = dt.date.fromisoformat(context.partition_key)
    files = files_for_day(landing.root, day)
    if not files:
        context.log.warning(f"No Cowrie files for {day} under {landing.root}")
    parsed = parse_day(files)
    written = sessions.replace_day(
        inventory_db.inventory, day, parsed.fragments, parsed.rejected, context.run_id
    )
    return dg.MaterializeResult(
        metadata={
            "files": dg.MetadataValue.json([f.name for f in files]),
            "file_count": len(files),
            "lines_read": parsed.lines_read,
            "events_read": parsed.events_read,
            "sessions_in_files": len(parsed.fragments),
            "sessions_owned_by_day": written.sessions_owned,
            "sessions_spanning_days": written.sessions_spanning_days,
            "rejected_lines": len(parsed.rejected),
            "rejected_by_reason": dg.MetadataValue.md(
                counts_table("reason", "lines", parsed.reasons.most_common())
            ),
            "blank_lines": parsed.blank_lines,
            "src_ip_conflicts": parsed.src_ip_conflicts,
            "database": inventory_db.inventory.display_url,
            "dagster/row_count": written.sessions_owned,
        }
    )
