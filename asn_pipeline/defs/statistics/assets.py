import time
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
from asn_pipeline.tables import CODE_VERSION, OWNERS, column_lineage, table_metadata

TOP_ASNS = 10


@dg.asset(
    deps=["ip_inventory", "asn_inventory"],
    partitions_def=daily_partitions,
    backfill_policy=backfill_policy,
    group_name="honeypot",
    kinds={"python", "sql"},
    owners=OWNERS,
    tags={"domain": "statistics"},
    code_version=CODE_VERSION,
    metadata=table_metadata("asn_daily_stats"),
    pool=INVENTORY_POOL,
    retry_policy=RETRY_POLICY,
)
def asn_statistics(
    context: dg.AssetExecutionContext, inventory_db: InventoryDatabase
) -> dg.MaterializeResult:
    """Per-ASN figures for the day in asn_daily_stats, and the cumulative counters of every ASN
    the day touched in asn_inventory."""
    started = time.monotonic()
    days = partition_days(context)
    with retry_only_transient():
        refreshed = derived.refresh_statistics(inventory_db.inventory)
        figures = {day: derived.day_figures(inventory_db.inventory, day) for day in days}
    report_refreshed_days(context, inventory_db.inventory, refreshed, days)
    # Sessions and new addresses add up over days; an ASN's addresses of several days do not.
    sessions, new, names = Counter(), Counter(), {}
    for day_figures in figures.values():
        for r in day_figures.rows:
            sessions[r["asn_number"]] += r["session_count"]
            new[r["asn_number"]] += r["new_ip_count"]
            names[r["asn_number"]] = r["organization_name"]
    if len(days) == 1:
        top = (
            ("asn", "organization", "sessions", "change", "addresses", "new addresses"),
            [
                (
                    f"AS{r['asn_number']}",
                    r["organization_name"],
                    r["session_count"],
                    _change(r["session_count"], r["previous_session_count"]),
                    r["unique_ip_count"],
                    r["new_ip_count"],
                )
                for r in figures[days[0]].rows[:TOP_ASNS]
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
            len(f.rows),
            f.sessions,
            f.unattributed,
            f.unique_addresses,
            sum(r["new_ip_count"] for r in f.rows),
        )
        for day, f in figures.items()
    ]
    metadata = {
        "sessions": sum(f.sessions for f in figures.values()),
        "asns_active": len(sessions),
        "sessions_attributed": sum(sessions.values()),
        "sessions_without_asn": sum(f.unattributed for f in figures.values()),
        "new_addresses": sum(new.values()),
        "asn_counters_refreshed": refreshed.asns_refreshed,
        "daily_statistics_refreshed": refreshed.days_refreshed,
        "top_asns": dg.MetadataValue.md(markdown_table(*top)),
        "dagster/row_count": len(sessions),
    }
    if len(days) == 1:  # distinct addresses of several days do not add up
        metadata["unique_addresses"] = figures[days[0]].unique_addresses
    metadata["step_seconds"] = dg.MetadataValue.float(round(time.monotonic() - started, 3))
    headers = ("day", "asns", "sessions", "without asn", "addresses", "new addresses")
    return dg.MaterializeResult(
        metadata={
            **scoped_to_days(days, metadata, per_day, headers),
            **column_lineage("asn_daily_stats"),
        }
    )


def _change(sessions: int, previous: int | None) -> str:
    """The change of an ASN's sessions against the day before: ``+12``, ``-3``, ``0``, or
    ``new`` when it had none that day."""
    if previous is None:
        return "new"
    return f"{sessions - previous:+d}" if sessions != previous else "0"
