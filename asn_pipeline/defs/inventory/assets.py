import dataclasses
import datetime as dt
import time

import dagster as dg

from asn_pipeline.defs.inventory.cymru import lookup_cymru
from asn_pipeline.defs.partitions import backfill_policy, daily_partitions
from asn_pipeline.lookup.enrich import Lookups, look_up
from asn_pipeline.resources import INVENTORY_POOL, InventoryDatabase, MaxMindDatabases
from asn_pipeline.steps import (
    RETRY_POLICY,
    STATISTICS_ASSET,
    counts_table,
    cymru_metadata,
    describe_days,
    partition_days,
    report_refreshed_days,
    retry_only_transient,
    run_materialises,
    scoped_to_days,
    written_metadata,
)
from asn_pipeline.store import derived, step_outputs
from asn_pipeline.store import inventory as store
from asn_pipeline.store.sessions import DayWrite, SessionsWritten
from asn_pipeline.tables import CODE_VERSION, OWNERS, column_lineage, table_metadata

# The source assets whose files the lookups read.
SOURCE_DATABASES = ("maxmind_asn_db", "maxmind_city_db")


@dg.op(
    ins={key: dg.In(dg.Nothing) for key in ("cowrie_sessions", *SOURCE_DATABASES)},
    pool=INVENTORY_POOL,
    retry_policy=RETRY_POLICY,
)
def lookup_addresses(
    context: dg.OpExecutionContext, inventory_db: InventoryDatabase, maxmind: MaxMindDatabases
) -> Lookups:
    """Classify the day's distinct source addresses and look up global ones in MaxMind: those of
    the day cowrie_sessions staged for this step's upsert to write, if any, else those of the
    day's sessions and session parts (``store.inventory.day_addresses``)."""
    days = partition_days(context)
    inventory = inventory_db.inventory
    with retry_only_transient():
        staged_by = None
        if len(days) == 1:
            # Its own run's day first (a re-execution: the run it re-executes), then any waiting.
            runs = [context.run_id, context.run.parent_run_id, context.run.root_run_id]
            staged_by = step_outputs.staged_day_run(inventory, days[0], runs)
        if staged_by is None:
            addresses = store.day_addresses(inventory, days[0], days[-1])
        else:
            key = step_outputs.staged(staged_by, days[0], step_outputs.STAGED_ADDRESSES)
            addresses = step_outputs.fetch(inventory, key)
        reader = maxmind.open()
        try:
            lookups = dataclasses.replace(look_up(addresses, reader), staged_by_run=staged_by)
        finally:
            reader.close()
    staged = f" (staged by run {staged_by})" if staged_by else ""
    context.log.info(
        f"Looked up {len(lookups.addresses)} addresses of {describe_days(days)}{staged}"
    )
    return lookups


@dg.op(
    out={"ip_summary": dg.Out(dict), "asn_inventory": dg.Out(dg.Nothing)},
    pool=INVENTORY_POOL,
    retry_policy=RETRY_POLICY,
)
def upsert_inventory(
    context: dg.OpExecutionContext,
    lookups: Lookups,
    inventory_db: InventoryDatabase,
):
    """Upsert the lookups, and Team Cymru's new answers, into ip_inventory, asn_inventory and
    the Cymru cache in one transaction; with the day's sessions, where cowrie_sessions staged
    the day for this step to write."""
    started = time.monotonic()
    days = partition_days(context)
    inventory = inventory_db.inventory
    with retry_only_transient():
        staged = _staged_day(context, inventory_db, lookups)
        written = store.upsert_lookups(
            inventory,
            lookups.addresses,
            context.run_id,
            dt.datetime.now(dt.UTC),
            cymru=lookups.cymru,
            day=staged,
        )
        address_count = store.address_count(inventory)
    upsert_seconds = dg.MetadataValue.float(round(time.monotonic() - started, 3))
    if staged is not None and written.sessions is not None:
        _report_day_written(context, staged, written.sessions)
    build, addresses = lookups.asn_build, lookups.addresses
    sources = lookups.addresses["asn_source"].value_counts()
    global_count = int((lookups.addresses["ip_class"] == "global").sum())
    covered = int(sources.get("maxmind", 0) + sources.get("cymru", 0))
    figures = {
        "asns": int(addresses["asn_number"].nunique()),
        "new_asns": written.new_asns,
        "step_seconds": upsert_seconds,
    }
    yield dg.Output(
        None,
        "asn_inventory",
        metadata={**scoped_to_days(days, figures), **column_lineage("asn_inventory")},
    )
    yield dg.Output(
        {
            "addresses": written.addresses,
            "new_addresses": written.new_addresses,
            "updated_addresses": written.addresses - written.new_addresses,
            "asn_changes": written.asn_changes,
            "lookups_by_source": dg.MetadataValue.md(
                counts_table("asn_source", "addresses", sources.items())
            ),
            "ip_classes": dg.MetadataValue.md(
                counts_table("ip_class", "addresses", addresses["ip_class"].value_counts().items())
            ),
            "ipv6_addresses": int((addresses["ip_version"] == 6).sum()),
            "coverage": dg.MetadataValue.float(
                round(covered / global_count, 4) if global_count else 1.0
            ),
            **cymru_metadata(lookups),
            "maxmind_database_type": build.database_type,
            "maxmind_build_epoch": build.build_epoch,
            "maxmind_build": dt.datetime.fromtimestamp(build.build_epoch, dt.UTC).isoformat(),
            "day_addresses": written.addresses,
            # The day's sessions were written here with their ASN: the backfill has none to set.
            "sessions_written_with_asn": written.sessions is not None,
            "dagster/row_count": address_count,
            **_earlier_steps_seconds(context),
            "upsert_seconds": upsert_seconds,
        },
        "ip_summary",
    )


def _staged_day(
    context: dg.OpExecutionContext, inventory_db: InventoryDatabase, lookups: Lookups
) -> DayWrite | None:
    """The day cowrie_sessions staged and these lookups are of, to write with them; ``None`` if
    there is none, or a write of the day has superseded it since the lookup."""
    if lookups.staged_by_run is None:
        return None
    key = step_outputs.staged(lookups.staged_by_run, partition_days(context)[0])
    try:
        return step_outputs.fetch(inventory_db.inventory, key)
    except step_outputs.StepOutputMissing:
        context.log.info(
            f"The day staged by run {lookups.staged_by_run} was written or superseded since"
        )
        return None


def _report_day_written(
    context: dg.OpExecutionContext, staged: DayWrite, written: SessionsWritten
) -> None:
    """cowrie_sessions' materialisation of the day this step wrote, recorded again with what
    writing it did: the reading step's metadata and data version (the same inputs and code),
    and the figures only the write knows."""
    day = staged.day.isoformat()
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("cowrie_sessions"), asset_partitions=[day]),
        limit=1,
    ).records
    read = records[0] if records and records[0].run_id == staged.run_id else None
    read_by = "" if staged.run_id == context.run_id else f" (read by run {staged.run_id})"
    context.log_event(
        dg.AssetMaterialization(
            asset_key="cowrie_sessions",
            partition=day,
            description=f"Written with the day's lookups by inventory.upsert_inventory{read_by}",
            metadata={
                **(read.asset_materialization.metadata if read else {}),
                **written_metadata([written]),
                "written_by_run": context.run_id,
                **column_lineage("sessions"),
            },
            tags=read.asset_materialization.tags if read else None,
        )
    )


def _earlier_steps_seconds(context: dg.OpExecutionContext) -> dict[str, dg.FloatMetadataValue]:
    """How long the run's lookup steps took, as Dagster recorded them."""
    steps = {"lookup_addresses": "lookup_seconds", "lookup_cymru": "cymru_step_seconds"}
    seconds = {}
    for stats in context.instance.get_run_step_stats(context.run_id):
        name = stats.step_key.rsplit(".", 1)[-1]
        if name in steps and stats.start_time and stats.end_time:
            seconds[steps[name]] = dg.MetadataValue.float(
                round(stats.end_time - stats.start_time, 3)
            )
    return seconds


@dg.op(out=dg.Out(dg.Nothing), pool=INVENTORY_POOL, retry_policy=RETRY_POLICY)
def backfill_session_asns(
    context: dg.OpExecutionContext, ip_summary: dict, inventory_db: InventoryDatabase
):
    """Snapshot each of the day's sessions' current ASN into sessions.asn_number (nothing to do
    where the upsert wrote the day's sessions with it)."""
    started = time.monotonic()
    days = partition_days(context)
    # Without asn_statistics in the run, this last write recomputes the counters itself.
    settle = not run_materialises(context, STATISTICS_ASSET)
    with retry_only_transient():
        if ip_summary.get("sessions_written_with_asn", False):  # absent from older runs
            changed = 0
            refreshed = derived.refresh_statistics(inventory_db.inventory) if settle else None
        else:
            changed, refreshed = derived.snapshot_session_asns(
                inventory_db.inventory, days[0], days[-1], settle=settle
            )
    report_refreshed_days(context, inventory_db.inventory, refreshed, days)
    metadata = {
        **ip_summary,
        "session_asn_snapshots_changed": changed,
        "step_seconds": dg.MetadataValue.float(round(time.monotonic() - started, 3)),
    }
    yield dg.Output(
        None, metadata={**scoped_to_days(days, metadata), **column_lineage("ip_inventory")}
    )


@dg.graph_multi_asset(
    outs={
        "ip_inventory": dg.AssetOut(
            description=(
                "Every attacker address in ip_inventory: class, current ASN, provenance and "
                "counters; every ASN an address was mapped to in ip_asn_history."
            ),
            kinds={"python", "sql"},
            owners=OWNERS,
            tags={"domain": "inventory"},
            code_version=CODE_VERSION,
            metadata=table_metadata("ip_inventory"),
        ),
        "asn_inventory": dg.AssetOut(
            description="Every ASN an attacker address belongs to: name, country, counters.",
            kinds={"python", "sql"},
            owners=OWNERS,
            tags={"domain": "inventory"},
            code_version=CODE_VERSION,
            metadata=table_metadata("asn_inventory"),
        ),
    },
    ins={
        key: dg.AssetIn(dagster_type=dg.Nothing) for key in ("cowrie_sessions", *SOURCE_DATABASES)
    },
    partitions_def=daily_partitions,
    backfill_policy=backfill_policy,
    group_name="honeypot",
)
def inventory(cowrie_sessions, maxmind_asn_db, maxmind_city_db):
    """Lookup (MaxMind, then Team Cymru), upsert, then backfill the day's sessions' ASN."""
    lookups = lookup_cymru(
        lookup_addresses(
            cowrie_sessions=cowrie_sessions,
            maxmind_asn_db=maxmind_asn_db,
            maxmind_city_db=maxmind_city_db,
        )
    )
    ip_summary, asn_inventory = upsert_inventory(lookups)
    return {"ip_inventory": backfill_session_asns(ip_summary), "asn_inventory": asn_inventory}
