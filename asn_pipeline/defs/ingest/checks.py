import dagster as dg

from asn_pipeline.defs.partitions import daily_partitions
from asn_pipeline.resources import INVENTORY_POOL, InventoryDatabase
from asn_pipeline.steps import partition_days
from asn_pipeline.store import audit

FILES_READABLE = "cowrie_files_readable"


@dg.asset_check(
    asset="cowrie_sessions",
    name=FILES_READABLE,
    partitions_def=daily_partitions,
    pool=INVENTORY_POOL,
)
def cowrie_files_readable(
    context: dg.AssetCheckExecutionContext, inventory_db: InventoryDatabase
) -> dg.AssetCheckResult:
    """Every file the day was read from is whole and holds events (a damaged .gz, a file that is
    not gzip, or one without a single event warns)."""
    days = partition_days(context)
    damaged = audit.damaged_source_files(inventory_db.inventory, days[0], days[-1])
    return dg.AssetCheckResult(
        passed=not damaged,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "damaged_files": len(damaged),
            "files": dg.MetadataValue.json({name: status for name, status in damaged}),
        },
    )
