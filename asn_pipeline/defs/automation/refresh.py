"""The inventory refresh: look addresses up again after a MaxMind update (sensor) and ask Team
Cymru again about answers past their TTL (weekly schedule); also runnable by hand."""

import datetime as dt
import json
import time
from collections import Counter

import dagster as dg

from asn_pipeline.defs.inventory.cymru import CymruConfig, pool_limit
from asn_pipeline.resources import (
    CYMRU_POOL,
    INVENTORY_POOL,
    CymruDns,
    InventoryDatabase,
    MaxMindDatabases,
)
from asn_pipeline.steps import (
    RETRY_POLICY,
    markdown_table,
    report_recomputed_statistics,
    retry_only_transient,
)
from asn_pipeline.store.refresh import (
    DEFAULT_BATCH_SIZE,
    RefreshTotals,
    holds_other_builds,
    refresh_expired_cymru,
    refresh_other_builds,
)

REFRESH_JOB = "refresh_inventory"
SENSOR_INTERVAL_S = 300  # MaxMind publishes twice a week; a file swap is noticed within 5 minutes
TOP_MOVES = 20


class RefreshConfig(dg.Config):
    """How many addresses one write transaction takes, and which addresses are looked up."""

    batch_size: int = DEFAULT_BATCH_SIZE
    only_older_builds: bool = True  # False: every global address, whatever its build


class CymruRefreshConfig(CymruConfig):
    batch_size: int = DEFAULT_BATCH_SIZE


@dg.op(pool=INVENTORY_POOL, retry_policy=RETRY_POLICY)
def relookup_other_builds(
    context: dg.OpExecutionContext,
    config: RefreshConfig,
    inventory_db: InventoryDatabase,
    maxmind: MaxMindDatabases,
) -> RefreshTotals:
    """Look up again, in batches, the global addresses last looked up in another MaxMind build."""
    started = time.monotonic()
    with retry_only_transient():
        reader = maxmind.open()
        try:
            totals = RefreshTotals(
                reader.asn_build.build_epoch,
                reader.city_build.build_epoch if reader.city_build else None,
            )
            for batch in refresh_other_builds(
                inventory_db.inventory,
                reader,
                context.run_id,
                batch_size=config.batch_size,
                everything=not config.only_older_builds,
            ):
                totals.add(batch)
                context.log.info(
                    f"batch {totals.batches}: {batch.addresses} addresses looked up again, "
                    f"{batch.asn_changes} ASN changes"
                )
        finally:
            reader.close()
    totals.seconds = round(time.monotonic() - started, 3)
    return totals


@dg.op(
    ins={"builds_refreshed": dg.In(dg.Nothing)},
    pool=CYMRU_POOL,
    retry_policy=RETRY_POLICY,
)
def reask_expired_cymru(
    context: dg.OpExecutionContext,
    config: CymruRefreshConfig,
    inventory_db: InventoryDatabase,
    maxmind: MaxMindDatabases,
    cymru: CymruDns,
) -> RefreshTotals | None:
    """Ask Team Cymru again about uncovered addresses whose answer is missing, pending or past
    its TTL; nothing when it is off."""
    if not cymru.enabled:
        context.log.info("ASN_PIPELINE_CYMRU is off: Team Cymru is not asked")
        return None
    started = time.monotonic()
    limit = pool_limit(context)
    if limit is None:
        context.log.warning(
            f"pool {CYMRU_POOL} has no limit here: this step takes the whole "
            f"ASN_PIPELINE_CYMRU_QPS={cymru.qps:g}"
        )
    qps = cymru.qps / (limit or 1)
    with retry_only_transient():
        reader = maxmind.open()
        try:
            totals = RefreshTotals(reader.asn_build.build_epoch)
            resolver = cymru.resolver(qps, config.timeout_seconds, config.attempts)
            for batch in refresh_expired_cymru(
                inventory_db.inventory,
                reader,
                resolver,
                dt.timedelta(days=cymru.ttl_days),
                context.run_id,
                batch_size=config.batch_size,
            ):
                totals.add(batch)
                context.log.info(
                    f"batch {totals.batches}: {batch.addresses} addresses resolved again, "
                    f"{batch.cymru_queries} queries, {batch.asn_changes} ASN changes"
                )
        finally:
            reader.close()
    totals.seconds = round(time.monotonic() - started, 3)
    return totals


@dg.op
def report_refresh(
    context: dg.OpExecutionContext,
    builds: RefreshTotals,
    cymru: RefreshTotals | None,
    inventory_db: InventoryDatabase,
) -> None:
    """Show the refresh on ip_inventory and asn_inventory, whose rows it changed."""
    metadata = refresh_metadata(builds, cymru)
    # The assets are partitioned by day and a refresh changes rows of any day: an observation
    # without a partition shows it in each asset's events without claiming a partition.
    for asset in ("ip_inventory", "asn_inventory"):
        context.log_event(
            dg.AssetObservation(
                asset_key=asset,
                description="Inventory refresh: addresses looked up again.",
                metadata=metadata,
            )
        )
    report_recomputed_statistics(
        context,
        inventory_db.inventory,
        sorted(builds.dates_refreshed | (cymru.dates_refreshed if cymru else set())),
        "Recomputed during the inventory refresh: another run queued it.",
        {"recomputed_by_run": context.run_id},
    )
    context.add_output_metadata(metadata)


def refresh_metadata(builds: RefreshTotals, cymru: RefreshTotals | None) -> dict[str, object]:
    """What the refresh did, as run and asset metadata."""
    both = [builds, cymru] if cymru else [builds]
    gained = sum((t.gained for t in both), start=Counter())
    lost = sum((t.lost for t in both), start=Counter())
    moved = sorted(set(gained) | set(lost), key=lambda a: (-gained[a] - lost[a], a))
    return {
        "addresses_relooked_up": builds.addresses,
        "asn_changes": sum(t.asn_changes for t in both),
        "asns_with_moved_counters": len(moved),
        "asn_moves": dg.MetadataValue.md(
            markdown_table(
                ("asn", "addresses in", "addresses out"),
                [(f"AS{a}", gained[a], lost[a]) for a in moved[:TOP_MOVES]],
            )
        ),
        "maxmind_asn_build": _builds_text(builds.asn_builds_before, builds.asn_build),
        "maxmind_city_build": _builds_text(builds.city_builds_before, builds.city_build),
        "maxmind_asn_build_epoch": builds.asn_build,
        "cymru": "dns" if cymru else "off",
        "cymru_addresses_reasked": cymru.addresses if cymru else 0,
        "cymru_asn_changes": cymru.asn_changes if cymru else 0,
        "cymru_queries_sent": cymru.cymru_queries if cymru else 0,
        "cymru_pending_addresses": cymru.cymru_pending if cymru else 0,
        "batches": sum(t.batches for t in both),
        "seconds": dg.MetadataValue.float(round(sum(t.seconds for t in both), 3)),
    }


def _builds_text(before: Counter, now: int | None) -> str:
    """``1790000000 (12), none (3) -> 1795000000``: the other builds the addresses had been
    looked up in, with how many addresses each, and the build they are looked up in now."""
    now_text = "none" if now is None else str(now)
    other = sorted(
        ((b, n) for b, n in before.items() if b != now), key=lambda i: (i[0] is None, i[0] or 0)
    )
    if not other:
        return f"{now_text} (no address from another build)"
    parts = ", ".join(f"{'none' if b is None else b} ({n})" for b, n in other)
    return f"{parts} -> {now_text}"


@dg.job(
    name=REFRESH_JOB,
    description=(
        "Look the inventory's addresses up again: those from another MaxMind build, and those "
        "whose Team Cymru answer expired. Counters stay exact; sessions keep their ASN snapshot."
    ),
    tags={"domain": "inventory"},
)
def refresh_inventory():
    builds = relookup_other_builds()
    report_refresh(builds, reask_expired_cymru(builds_refreshed=builds))


@dg.sensor(
    job=refresh_inventory,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def maxmind_update_sensor(
    context: dg.SensorEvaluationContext,
    maxmind: MaxMindDatabases,
    inventory_db: InventoryDatabase,
):
    """Request a refresh when the ASN or City database's build_epoch changes."""
    reader = maxmind.open()
    try:
        builds = {
            "asn": reader.asn_build.build_epoch,
            "city": reader.city_build.build_epoch if reader.city_build else None,
        }
        first = not context.cursor  # a first tick, or a cursor cleared in the UI
        if first:
            wanted = holds_other_builds(inventory_db.inventory, reader)
        else:
            wanted = json.loads(context.cursor) != builds
    finally:
        reader.close()
    context.update_cursor(json.dumps(builds))
    if not wanted:
        now = f"ASN {builds['asn']}, City {builds['city']}"
        if first:
            return dg.SkipReason(f"The inventory holds no address from builds other than {now}")
        return dg.SkipReason(f"MaxMind builds unchanged: {now}")
    city = builds["city"] if builds["city"] is not None else "none"
    return dg.RunRequest(
        run_key=f"maxmind:{builds['asn']}:{city}",
        tags={
            "asn_pipeline/maxmind_asn_build": str(builds["asn"]),
            "asn_pipeline/maxmind_city_build": str(city),
        },
    )


refresh_inventory_weekly = dg.ScheduleDefinition(
    name="refresh_inventory_weekly",
    job=refresh_inventory,
    cron_schedule="0 4 * * 0",  # Sundays 04:00 UTC
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Ask Team Cymru again about answers past their TTL; catch any missed build.",
)
