import datetime as dt
from typing import Optional

import dagster as dg
import sqlalchemy as sa

from asn_pipeline.resources import INVENTORY_POOL, InventoryDatabase
from asn_pipeline.steps import RETRY_POLICY, counts_table, markdown_table, retry_only_transient
from asn_pipeline.store import legacy

BACKFILL_JOB = "asn_inventory_backfill"


class LegacyImportConfig(dg.Config):
    """Where the cowrieprocessor inventory to import is; none: repair this inventory instead."""

    source_db_url: Optional[str] = None  # noqa: UP045 - Dagster reads the type to make its schema


@dg.op(pool=INVENTORY_POOL, retry_policy=RETRY_POLICY, out=dg.Out(dg.Nothing))
def backfill_asn_inventory(
    context: dg.OpExecutionContext, config: LegacyImportConfig, inventory_db: InventoryDatabase
):
    """Import a cowrieprocessor inventory's address-to-ASN mappings and AS names; without a
    source, rebuild asn_inventory's rows, names and counters from this inventory's own rows."""
    now = dt.datetime.now(dt.UTC)
    if config.source_db_url is None:
        with retry_only_transient():
            repaired = legacy.repair_inventory(inventory_db.inventory, context.run_id, now)
        context.log.info(f"Repair: {repaired.changes} derived values or rows changed")
        metadata = _repair_metadata(repaired)
        _observe(context, ["ip_inventory", "asn_inventory", "asn_statistics"], metadata)
        yield dg.Output(None, metadata=metadata)
        return
    with retry_only_transient():
        read = _read_source(config.source_db_url)
    context.log.info(
        f"Read {read.ip_rows} ip_inventory and {read.asn_rows} asn_inventory rows of "
        f"{read.source}: {len(read.mappings)} mappings, {sum(read.problems.values())} problems"
    )
    with retry_only_transient():
        imported = legacy.import_legacy(inventory_db.inventory, read, context.run_id, now)
    metadata = _import_metadata(imported)
    _observe(context, ["asn_inventory"], metadata)
    yield dg.Output(None, metadata=metadata)


def _read_source(url: str) -> legacy.LegacyRead:
    """The legacy database, read; a source that cannot be opened or read fails the step at once
    (most often a wrong URL: a retry would meet it again) with the URL, password masked, and the
    first line of the driver's message, which names the server and never the password."""
    try:
        return legacy.read_legacy(url)
    except legacy.LegacySourceError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    except sa.exc.SQLAlchemyError as error:
        first_line = (str(getattr(error, "orig", None) or error).strip().splitlines() or [""])[0]
        raise dg.Failure(
            description=f"source_db_url={legacy.display_url(url)!r}: "
            f"{type(error).__name__}: {first_line}",
            allow_retries=False,
        ) from None


def _import_metadata(imported: legacy.LegacyImported) -> dict[str, object]:
    read = imported.read
    problems = sorted(read.problems.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "source": read.source,
        "legacy_ip_rows": read.ip_rows,
        "legacy_asn_rows": read.asn_rows,
        "legacy_asn_inventory": read.has_asn_inventory,
        "addresses_imported": read.addresses,
        "mappings": len(read.mappings),
        "mappings_by_source": dg.MetadataValue.md(
            counts_table("ASN taken from", "rows", sorted(read.mapping_sources.items()))
        ),
        "history_rows_new": imported.history_new,
        "history_rows_widened": imported.history_widened,
        "asns_created": imported.asns_created,
        "values_filled": dg.MetadataValue.md(
            markdown_table(("column", "from legacy", "ASNs"), imported.fills)
        ),
        "names_filled": _filled(imported, "organization_name"),
        "countries_filled": _filled(imported, "organization_country"),
        "registries_filled": _filled(imported, "rir_registry"),
        "legacy_asns_skipped": imported.legacy_asns_without_row,
        "addresses_in_inventory": imported.addresses_in_inventory,
        "addresses_with_other_current_asn": imported.addresses_with_other_asn,
        "problems": sum(read.problems.values()),
        "problems_by_reason": dg.MetadataValue.md(counts_table("reason", "rows", problems)),
        "problem_counts": dg.MetadataValue.json(dict(problems)),
    }


def _repair_metadata(repaired: legacy.Repaired) -> dict[str, object]:
    counts = dict(vars(repaired))
    return {
        "mode": "repair",
        **counts,
        "changes": dg.MetadataValue.md(counts_table("what", "rows", counts.items())),
    }


def _observe(context: dg.OpExecutionContext, assets: list[str], metadata: dict) -> None:
    """Whole-table changes, shown on each asset (no partition: they touch every day)."""
    for asset in assets:
        context.log_event(
            dg.AssetObservation(
                asset_key=asset,
                description=f"Changed by the job {BACKFILL_JOB} (all partitions).",
                metadata=metadata,
            )
        )


def _filled(imported: legacy.LegacyImported, column: str) -> int:
    return sum(n for name, _, n in imported.fills if name == column)


@dg.job(name=BACKFILL_JOB, tags={"domain": "inventory"})
def asn_inventory_backfill():
    """Import a cowrieprocessor inventory (config source_db_url), or, without one, repair
    asn_inventory and every derived value from this inventory's own rows."""
    backfill_asn_inventory()
