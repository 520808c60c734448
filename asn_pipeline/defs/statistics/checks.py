import dagster as dg

from asn_pipeline.defs.partitions import daily_partitions
from asn_pipeline.resources import INVENTORY_POOL, InventoryDatabase
from asn_pipeline.steps import partition_days, scoped_to_days
from asn_pipeline.store import audit

STATISTICS_MATCH_SESSIONS = "daily_statistics_match_sessions"


@dg.asset_check(
    asset="asn_statistics",
    name=STATISTICS_MATCH_SESSIONS,
    partitions_def=daily_partitions,
    blocking=True,
    pool=INVENTORY_POOL,
)
def daily_statistics_match_sessions(
    context: dg.AssetCheckExecutionContext, inventory_db: InventoryDatabase
) -> dg.AssetCheckResult:
    """The day's asn_daily_stats rows equal what its sessions say (missing and extra rows
    included), unless queued for a recomputation."""
    days = partition_days(context)
    found = audit.statistics_audit(inventory_db.inventory, days[0], days[-1])
    return dg.AssetCheckResult(
        passed=found.mismatches == 0,
        metadata=scoped_to_days(
            days,
            {
                "day_statistics": found.mismatches,
                "pending_stale_keys": found.pending_stale_keys,
            },
        ),
    )
