from collections import Counter

import dagster as dg

from asn_pipeline.defs.partitions import backfill_policy, daily_partitions
from asn_pipeline.resources import INVENTORY_POOL, InventoryDatabase
from asn_pipeline.steps import (
    RETRY_POLICY,
    markdown_table,
    partition_days,
    report_refreshed_days,
    retry_only_transient,
    scoped_to_days,
)
from asn_pipeline.store import derived

TOP_ASNS = 10


@dg.asset(
    deps=["ip_inventory", "asn_inventory"],
    partitions_def=daily_partitions,
    backfill_policy=backfill_policy,
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
    days = partition_days(context)
    with retry_only_transient():
        refreshed = derived.refresh_statistics(inventory_db.inventory)
        statistics = {day: derived.day_statistics(inventory_db.inventory, day) for day in days}
    report_refreshed_days(context, refreshed, days)
    # Sessions and new addresses add up over days; an ASN's addresses of several days do not.
    sessions, new, names = Counter(), Counter(), {}
    for rows, _ in statistics.values():
        for r in rows:
            sessions[r["asn_number"]] += r["session_count"]
            new[r["asn_number"]] += r["new_ip_count"]
            names[r["asn_number"]] = r["organization_name"]
    if len(days) == 1:
        rows = statistics[days[0]][0]
        top = (
            ("asn", "organization", "sessions", "addresses", "new"),
            [
                (
                    f"AS{r['asn_number']}",
                    r["organization_name"],
                    r["session_count"],
                    r["unique_ip_count"],
                    r["new_ip_count"],
                )
                for r in rows[:TOP_ASNS]
            ],
        )
    else:
        top = (
            ("asn", "organization", "sessions", "new addresses"),
            [
                (f"AS{asn}", names[asn], count, new[asn])
                for asn, count in sorted(sessions.items(), key=lambda item: (-item[1], item[0]))[
                    :TOP_ASNS
                ]
            ],
        )
    per_day = [
        (
            day.isoformat(),
            len(rows),
            sum(r["session_count"] for r in rows),
            unattributed,
            sum(r["new_ip_count"] for r in rows),
        )
        for day, (rows, unattributed) in statistics.items()
    ]
    metadata = {
        "asns_active": len(sessions),
        "sessions_attributed": sum(sessions.values()),
        "sessions_without_asn": sum(unattributed for _, unattributed in statistics.values()),
        "new_addresses": sum(new.values()),
        "asn_counters_refreshed": refreshed.asns_refreshed,
        "daily_statistics_refreshed": refreshed.days_refreshed,
        "top_asns": dg.MetadataValue.md(markdown_table(*top)),
        "dagster/row_count": len(sessions),
    }
    headers = ("day", "asns", "sessions", "without asn", "new addresses")
    return dg.MaterializeResult(metadata=scoped_to_days(days, metadata, per_day, headers))
