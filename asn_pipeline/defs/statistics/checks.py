import dagster as dg

from asn_pipeline.defs.partitions import daily_partitions
from asn_pipeline.resources import INVENTORY_POOL, InventoryDatabase
from asn_pipeline.steps import partition_days
from asn_pipeline.store import audit

COUNTERS_MATCH_FACTS = "counters_match_facts"
NO_DANGLING_ASN = "no_dangling_asn_references"
BOGONS_NOT_ENRICHED = "bogons_not_enriched"


@dg.asset_check(
    asset="asn_statistics",
    name=COUNTERS_MATCH_FACTS,
    partitions_def=daily_partitions,
    blocking=True,
    pool=INVENTORY_POOL,
)
def counters_match_facts(
    context: dg.AssetCheckExecutionContext, inventory_db: InventoryDatabase
) -> dg.AssetCheckResult:
    """Counters of the day's addresses and ASNs, and the day's statistics, equal a recomputation
    from facts, or are queued for one (a concurrent run changed their facts since)."""
    days = partition_days(context)
    found = audit.counter_mismatches(inventory_db.inventory, days[0], days[-1])
    found["pending_stale_keys"] = audit.pending_stale_keys(inventory_db.inventory)
    violations = {k: v for k, v in found.items() if k != "pending_stale_keys"}
    return dg.AssetCheckResult(passed=not any(violations.values()), metadata=found)


@dg.asset_check(
    asset="asn_statistics",
    name=NO_DANGLING_ASN,
    partitions_def=daily_partitions,
    pool=INVENTORY_POOL,
)
def no_dangling_asn_references(
    context: dg.AssetCheckExecutionContext, inventory_db: InventoryDatabase
) -> dg.AssetCheckResult:
    """Every current_asn of the day's addresses and asn_number of its sessions exists in
    asn_inventory."""
    days = partition_days(context)
    dangling = audit.dangling_asn_references(inventory_db.inventory, days[0], days[-1])
    return dg.AssetCheckResult(passed=dangling == 0, metadata={"dangling_references": dangling})


@dg.asset_check(
    asset="ip_inventory",
    name=BOGONS_NOT_ENRICHED,
    partitions_def=daily_partitions,
    pool=INVENTORY_POOL,
)
def bogons_not_enriched(
    context: dg.AssetCheckExecutionContext, inventory_db: InventoryDatabase
) -> dg.AssetCheckResult:
    """The day's addresses carry the pinned registry's class; bogons have no ASN."""
    days = partition_days(context)
    wrong = audit.misclassified_addresses(inventory_db.inventory, days[0], days[-1])
    return dg.AssetCheckResult(
        passed=not wrong,
        metadata={"misclassified": len(wrong), "examples": dg.MetadataValue.json(wrong[:20])},
    )
