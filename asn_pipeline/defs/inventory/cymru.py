import dataclasses
import datetime as dt

import dagster as dg

from asn_pipeline.lookup.cascade import resolve_uncovered
from asn_pipeline.lookup.cymru import DEFAULT_ATTEMPTS, DEFAULT_TIMEOUT_S
from asn_pipeline.lookup.enrich import Lookups
from asn_pipeline.resources import CYMRU_POOL, CymruDns, InventoryDatabase
from asn_pipeline.steps import RETRY_POLICY, retry_only_transient
from asn_pipeline.store.cymru import read_cache


class CymruConfig(dg.Config):
    """How long one Team Cymru query waits, and how often a name is tried."""

    timeout_seconds: float = DEFAULT_TIMEOUT_S
    attempts: int = DEFAULT_ATTEMPTS


@dg.op(pool=CYMRU_POOL, retry_policy=RETRY_POLICY)
def lookup_cymru(
    context: dg.OpExecutionContext,
    config: CymruConfig,
    lookups: Lookups,
    inventory_db: InventoryDatabase,
    cymru: CymruDns,
) -> Lookups:
    """Ask Team Cymru over DNS about the global addresses MaxMind did not cover, and the names
    of the day's ASNs, through the cache in the inventory; pass through when it is off."""
    if not cymru.enabled:
        context.log.info("ASN_PIPELINE_CYMRU is off: Team Cymru is not asked")
        return lookups
    now = dt.datetime.now(dt.UTC)
    limit = pool_limit(context)
    if limit is None:
        context.log.warning(
            f"pool {CYMRU_POOL} has no limit here: concurrent steps may together exceed "
            f"ASN_PIPELINE_CYMRU_QPS={cymru.qps:g}; set one with "
            f"`dagster instance concurrency set {CYMRU_POOL} 1`"
        )
    frame = lookups.addresses
    uncovered = frame.loc[frame["asn_source"] == "none", "ip_address"].tolist()
    with retry_only_transient():
        cache = read_cache(inventory_db.inventory, uncovered, now)
        resolver = cymru.resolver(cymru.qps / (limit or 1), config.timeout_seconds, config.attempts)
        addresses, result = resolve_uncovered(
            frame, cache, resolver, dt.timedelta(days=cymru.ttl_days)
        )
    stats = result.stats
    context.log.info(
        f"Team Cymru: {stats.addresses_uncovered} addresses MaxMind did not cover, "
        f"{stats.queries_sent} queries, {stats.cache_hits} cache hits, {stats.pending} pending"
    )
    return dataclasses.replace(lookups, addresses=addresses, cymru=result)


def pool_limit(context: dg.OpExecutionContext) -> int | None:
    """The limit of the Cymru pool on this instance (its own, or ``pools.default_limit``);
    ``None`` where the instance enforces none (an ephemeral instance)."""
    storage = context.instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return None
    return storage.get_concurrency_info(CYMRU_POOL).limit
