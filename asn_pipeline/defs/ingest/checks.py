import dagster as dg

from asn_pipeline.defs.partitions import daily_partitions
from asn_pipeline.resources import INVENTORY_POOL, InventoryDatabase
from asn_pipeline.settings import check_thresholds
from asn_pipeline.steps import partition_days, scoped_to_days
from asn_pipeline.store import audit

ASSET = "cowrie_sessions"
FILES_READABLE = "cowrie_files_readable"
REJECTED_LINES = "rejected_lines_below_threshold"
SESSIONS_MERGED = "sessions_spanning_midnight_merged"


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            FILES_READABLE,
            asset=ASSET,
            partitions_def=daily_partitions,
            description="Every file the day was read from is whole and holds events (WARN).",
        ),
        dg.AssetCheckSpec(
            REJECTED_LINES,
            asset=ASSET,
            partitions_def=daily_partitions,
            description=(
                "The day's rejected lines are at most ASN_PIPELINE_CHECK_MAX_REJECTED_RATIO of "
                "the lines read (WARN)."
            ),
        ),
        dg.AssetCheckSpec(
            SESSIONS_MERGED,
            asset=ASSET,
            partitions_def=daily_partitions,
            blocking=True,
            description=(
                "A session spanning midnight is one row: no session of the day or the next "
                "begins where a fragment of the same id lies on the day before."
            ),
        ),
    ],
    pool=INVENTORY_POOL,
)
def cowrie_sessions_checks(context: dg.AssetCheckExecutionContext, inventory_db: InventoryDatabase):
    """The day's source files and sessions, read once for the three checks of cowrie_sessions."""
    thresholds = check_thresholds()
    days = partition_days(context)
    found = audit.sessions_audit(inventory_db.inventory, days[0], days[-1])
    yield dg.AssetCheckResult(
        asset_key=ASSET,
        check_name=FILES_READABLE,
        passed=not found.damaged_files,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=scoped_to_days(
            days,
            {
                "damaged_files": len(found.damaged_files),
                "files": dg.MetadataValue.json(found.damaged_files),
            },
        ),
    )
    yield dg.AssetCheckResult(
        asset_key=ASSET,
        check_name=REJECTED_LINES,
        passed=found.rejected_ratio <= thresholds.max_rejected_ratio,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=scoped_to_days(
            days,
            {
                "rejected_lines": found.rejected_lines,
                "lines_read": found.lines_read,
                "rejected_ratio": dg.MetadataValue.float(round(found.rejected_ratio, 6)),
                "max_rejected_ratio": dg.MetadataValue.float(thresholds.max_rejected_ratio),
            },
        ),
    )
    yield dg.AssetCheckResult(
        asset_key=ASSET,
        check_name=SESSIONS_MERGED,
        passed=found.split_sessions == 0,
        metadata=scoped_to_days(
            days,
            {
                "split_sessions": found.split_sessions,
                "examples": dg.MetadataValue.json(found.split_examples),
            },
        ),
    )
