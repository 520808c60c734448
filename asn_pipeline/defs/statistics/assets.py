import datetime as dt

import dagster as dg

from asn_pipeline.defs.partitions import daily_partitions
from asn_pipeline.defs.reporting import markdown_table
from asn_pipeline.resources import InventoryDatabase
from asn_pipeline.store import derived

TOP_ASNS = 10


@dg.op(ins={"ip_inventory": dg.In(dg.Nothing), "asn_inventory": dg.In(dg.Nothing)})
def backfill_session_asns(context: dg.OpExecutionContext, inventory_db: InventoryDatabase) -> int:
    """Snapshot the current ASN of each of the day's sessions into sessions.asn_number."""
    changed = derived.snapshot_session_asns(
        inventory_db.inventory, dt.date.fromisoformat(context.partition_key)
    )
    context.log.info(f"ASN snapshot changed on {changed} sessions")
    return changed


@dg.op(out=dg.Out(dg.Nothing))
def compute_asn_statistics(
    context: dg.OpExecutionContext, snapshot_changes: int, inventory_db: InventoryDatabase
):
    """Recompute the day's per-ASN statistics and the counters of every ASN it touched."""
    day = dt.date.fromisoformat(context.partition_key)
    refreshed = derived.refresh_statistics(inventory_db.inventory)
    rows, unattributed = derived.day_statistics(inventory_db.inventory, day)
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
    yield dg.Output(
        None,
        metadata={
            "asns_active": len(rows),
            "sessions_attributed": sum(r["session_count"] for r in rows),
            "sessions_without_asn": unattributed,
            "new_addresses": sum(r["new_ip_count"] for r in rows),
            "session_snapshots_changed": snapshot_changes,
            "asn_counters_refreshed": refreshed.asns_refreshed,
            "daily_statistics_refreshed": refreshed.days_refreshed,
            "top_asns": dg.MetadataValue.md(
                markdown_table(("asn", "organization", "sessions", "addresses", "new"), top)
            ),
            "dagster/row_count": len(rows),
        },
    )


@dg.graph_asset(
    ins={
        "ip_inventory": dg.AssetIn(dagster_type=dg.Nothing),
        "asn_inventory": dg.AssetIn(dagster_type=dg.Nothing),
    },
    partitions_def=daily_partitions,
    group_name="honeypot",
    kinds={"python", "sql"},
    owners=["team:honeypot-data"],
    tags={"domain": "statistics"},
)
def asn_statistics(ip_inventory, asn_inventory):
    """Per-ASN figures for the day and cumulative counters of every ASN the day touched."""
    changes = backfill_session_asns(ip_inventory=ip_inventory, asn_inventory=asn_inventory)
    return compute_asn_statistics(changes)
