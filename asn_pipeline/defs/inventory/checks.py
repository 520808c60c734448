import datetime as dt
from collections.abc import Iterator, Sequence, Set

import dagster as dg

from asn_pipeline.defs.ingest import checks as ingest_checks
from asn_pipeline.defs.partitions import daily_partitions
from asn_pipeline.resources import INVENTORY_POOL, InventoryDatabase
from asn_pipeline.settings import CheckThresholds, check_thresholds
from asn_pipeline.steps import partition_days, scoped_to_days
from asn_pipeline.store import Inventory, audit

IP_ASSET = "ip_inventory"
ASN_ASSET = "asn_inventory"
IP_COUNTERS = "ip_counters_match_sessions"
BOGONS_NOT_ENRICHED = "bogons_not_enriched"
NO_DANGLING_CURRENT_ASN = "no_dangling_current_asn"
ASN_COVERAGE = "asn_coverage_above_threshold"
MAXMIND_FRESH = "maxmind_build_fresh"
ASN_COUNTERS = "asn_counters_match_addresses"
REFERENCED_ASNS = "referenced_asns_exist"


def _spec(name: str, asset: str, description: str, blocking: bool) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name,
        asset=asset,
        partitions_def=daily_partitions,
        blocking=blocking,
        description=description,
    )


# One step checks the day for the three assets written in the inventory step's transaction
# (cowrie_sessions' checks: defs/ingest/checks.py): it reads the day once, after that write, and
# evaluates the checks the run selected (a run of cowrie_sessions alone, its three).
@dg.multi_asset_check(
    can_subset=True,
    specs=[
        *ingest_checks.SPECS,
        _spec(
            IP_COUNTERS,
            IP_ASSET,
            "session_count, first_seen and last_seen of the day's addresses equal what their "
            "sessions say, unless queued for a recomputation.",
            blocking=True,
        ),
        _spec(
            BOGONS_NOT_ENRICHED,
            IP_ASSET,
            "The day's addresses carry the pinned registry's class; bogons have no ASN.",
            blocking=True,
        ),
        _spec(
            NO_DANGLING_CURRENT_ASN,
            IP_ASSET,
            "Every current_asn of the day's addresses has an asn_inventory row.",
            blocking=True,
        ),
        _spec(
            ASN_COVERAGE,
            IP_ASSET,
            "At least ASN_PIPELINE_CHECK_MIN_ASN_COVERAGE of the day's global addresses have "
            "an ASN (WARN).",
            blocking=False,
        ),
        _spec(
            MAXMIND_FRESH,
            IP_ASSET,
            "The MaxMind ASN build the day's addresses were looked up in is at most "
            "ASN_PIPELINE_CHECK_MAXMIND_MAX_AGE_DAYS old (WARN).",
            blocking=False,
        ),
        _spec(
            ASN_COUNTERS,
            ASN_ASSET,
            "The counters of the day's ASNs, with their queued change applied, equal a "
            "recomputation from all their addresses.",
            blocking=True,
        ),
        _spec(
            REFERENCED_ASNS,
            ASN_ASSET,
            "Every ASN the day's addresses and their sessions refer to has a row.",
            blocking=True,
        ),
    ],
    pool=INVENTORY_POOL,
)
def day_checks(context: dg.AssetCheckExecutionContext, inventory_db: InventoryDatabase):
    """The checks of cowrie_sessions, ip_inventory and asn_inventory the run selected."""
    days = partition_days(context)
    selected = context.selected_asset_check_keys
    inventory = inventory_db.inventory
    for results in (ingest_checks.results, _inventory_results):
        for check in results(inventory, days, selected):
            key = dg.AssetCheckKey(dg.AssetKey.from_coercible(check.asset_key), check.check_name)
            if key in selected:
                yield check


def _inventory_results(
    inventory: Inventory, days: Sequence[dt.date], selected: Set[dg.AssetCheckKey]
) -> Iterator[dg.AssetCheckResult]:
    """The checks of ip_inventory and asn_inventory, from the day's addresses and their ASNs
    read once for all of them; none when none of them is selected."""
    if not any(
        key.asset_key in (dg.AssetKey(IP_ASSET), dg.AssetKey(ASN_ASSET)) for key in selected
    ):
        return
    thresholds = check_thresholds()
    addresses, asns = audit.inventory_audit(inventory, days[0], days[-1])

    def result(asset: str, name: str, passed: bool, metadata: dict, warn: bool = False):
        return dg.AssetCheckResult(
            asset_key=asset,
            check_name=name,
            passed=passed,
            severity=dg.AssetCheckSeverity.WARN if warn else dg.AssetCheckSeverity.ERROR,
            metadata=scoped_to_days(days, metadata),
        )

    yield result(
        IP_ASSET,
        IP_COUNTERS,
        addresses.counter_mismatches == 0,
        {
            "addresses": addresses.addresses,
            "counter_mismatches": addresses.counter_mismatches,
            "queued_addresses": addresses.queued,
            "examples": dg.MetadataValue.json(addresses.counter_examples),
        },
    )
    yield result(
        IP_ASSET,
        BOGONS_NOT_ENRICHED,
        addresses.misclassified == 0,
        {
            "misclassified": addresses.misclassified,
            "examples": dg.MetadataValue.json(addresses.misclassified_examples),
        },
    )
    yield result(
        IP_ASSET,
        NO_DANGLING_CURRENT_ASN,
        addresses.dangling_current_asn == 0,
        {
            "dangling_current_asn": addresses.dangling_current_asn,
            "examples": dg.MetadataValue.json(addresses.dangling_examples),
        },
    )
    yield result(
        IP_ASSET,
        ASN_COVERAGE,
        addresses.coverage >= thresholds.min_asn_coverage,
        {
            "global_addresses": addresses.global_addresses,
            "with_asn": addresses.global_with_asn,
            "coverage": dg.MetadataValue.float(round(addresses.coverage, 4)),
            "min_asn_coverage": dg.MetadataValue.float(thresholds.min_asn_coverage),
        },
        warn=True,
    )
    yield result(IP_ASSET, MAXMIND_FRESH, *_freshness(addresses, thresholds), warn=True)
    yield result(
        ASN_ASSET,
        ASN_COUNTERS,
        not asns.counter_mismatches,
        {
            "asns": asns.asns,
            "counter_mismatches": len(asns.counter_mismatches),
            "examples": dg.MetadataValue.json(asns.counter_mismatches[: audit.EXAMPLES]),
        },
    )
    yield result(
        ASN_ASSET,
        REFERENCED_ASNS,
        addresses.dangling_current_asn == 0 and addresses.session_asns_missing == 0,
        {
            "dangling_current_asn": addresses.dangling_current_asn,
            "dangling_session_asn": addresses.session_asns_missing,
        },
    )


def _freshness(addresses: audit.AddressAudit, thresholds: CheckThresholds) -> tuple[bool, dict]:
    """Whether the oldest build the day's addresses were looked up in is young enough."""
    limit = thresholds.maxmind_max_age_days
    epoch = addresses.oldest_build_epoch
    if epoch is None:
        return True, {"maxmind_build": "none: no global address", "max_age_days": limit}
    built = dt.datetime.fromtimestamp(epoch, dt.UTC)
    age_days = (dt.datetime.now(dt.UTC) - built).total_seconds() / 86_400
    return age_days <= limit, {
        "maxmind_build_epoch": epoch,
        "maxmind_build": built.isoformat(),
        "age_days": dg.MetadataValue.float(round(age_days, 1)),
        "max_age_days": limit,
    }
