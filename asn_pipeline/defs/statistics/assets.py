import datetime as dt

import dagster as dg

from asn_pipeline.defs.partitions import daily_partitions
from asn_pipeline.resources import INVENTORY_POOL, InventoryDatabase
from asn_pipeline.steps import (
    RETRY_POLICY,
    markdown_table,
    report_refreshed_days,
    retry_only_transient,
)
from asn_pipeline.store import derived

TOP_ASNS = 10


@dg.asset(
    deps=["ip_inventory", "asn_inventory"],
    partitions_def=daily_partitions,
    group_name="honeypot",
    kinds={"python", "sql"},
    owners=["team:honeypot-data"],
    tags={"domain": "statistics"},
    pool=INVENTORY_POOL,
    retry_policy=RETRY_POLICY,
)
def asn_statistics(
    context: dg.AssetExecutionContext, inventory_db: InventoryDatabase
) -> dg.MaterializeResult:
    """Per-ASN figures for the day and cumulative counters of every ASN the day touched."""
    day = dt.date.fromisoformat(context.partition_key)
    with retry_only_transient():
        refreshed = derived.refresh_statistics(inventory_db.inventory)
        rows, unattributed = derived.day_statistics(inventory_db.inventory, day)
    report_refreshed_days(context, refreshed, day)
    top = [
        (
            f"AS{r['asn_number']}",
            r["organization_name"],
            r["session_count"],
            r["unique_ip_count"],
            r["new_ip_count"],
        )
        for r in rows[:TOP_ASNS]
    ]
    return dg.MaterializeResult(
        metadata={
            "asns_active": len(rows),
            "sessions_attributed": sum(r["session_count"] for r in rows),
            "sessions_without_asn": unattributed,
            "new_addresses": sum(r["new_ip_count"] for r in rows),
            "asn_counters_refreshed": refreshed.asns_refreshed,
            "daily_statistics_refreshed": refreshed.days_refreshed,
            "top_asns": dg.MetadataValue.md(
                markdown_table(("asn", "organization", "sessions", "addresses", "new"), top)
            ),
            "dagster/row_count": len(rows),
        }
    )
