"""What the steps under ``defs/`` share: retries, what their run materialises, metadata."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import dagster as dg

from asn_pipeline.lookup.enrich import Lookups
from asn_pipeline.store.database import Inventory, is_transient
from asn_pipeline.store.derived import StatisticsWritten, day_figures
from asn_pipeline.store.sessions import SessionsWritten

# Transient failures (a busy SQLite database, a dropped PostgreSQL connection) are retried with
# backoff: every write step is all or nothing, so a retry starts from the previous state.
RETRY_POLICY = dg.RetryPolicy(
    max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
# Run tag that lets cowrie_sessions replace days with less than they hold (as its allow_shrink).
ALLOW_SHRINK_TAG = "asn_pipeline/allow_shrink"
STATISTICS_ASSET = "asn_statistics"

# A day with more rejected lines than this is written by cowrie_sessions itself, streaming them
# from their spool, rather than handed to the inventory step in memory (store.sessions.DayWrite).
STAGED_REJECTED_LINES_MAX = 100_000


@contextmanager
def retry_only_transient() -> Iterator[None]:
    """Let transient errors reach the step's ``RETRY_POLICY``; fail any other at once."""
    try:
        yield
    except dg.Failure:
        raise
    except Exception as error:
        if is_transient(error):
            raise
        raise dg.Failure(
            description=f"{type(error).__name__}: {error}", allow_retries=False
        ) from error


def run_materialises(context: dg.OpExecutionContext, asset: str) -> bool:
    """Whether the step's run also materialises ``asset`` (a run of the whole job does)."""
    selection = context.run.asset_selection  # None or empty: the whole job
    return not selection or dg.AssetKey(asset) in selection


def partition_days(context: dg.OpExecutionContext | dg.AssetCheckExecutionContext) -> list[dt.date]:
    """The days of the step's partition, or of its range in a single-run backfill, in order."""
    return [dt.date.fromisoformat(key) for key in context.partition_keys]


def describe_days(days: Sequence[dt.date]) -> str:
    """``2026-11-20``, or ``2026-01-01..2026-12-31`` for a range."""
    return days[0].isoformat() if len(days) == 1 else f"{days[0]}..{days[-1]}"


def report_refreshed_days(
    context: dg.OpExecutionContext,
    inventory: Inventory,
    refreshed: StatisticsWritten | None,
    days: Sequence[dt.date],
) -> None:
    """A materialisation of asn_statistics for every day outside the run's own whose figures
    this step recomputed (a session spanning midnight, an address's first day moved), so that
    the UI does not show those partitions' old figures as current."""
    own = set(days)
    others = [d for d in (refreshed.dates_refreshed if refreshed else ()) if d not in own]
    report_recomputed_statistics(
        context,
        inventory,
        others,
        f"Recomputed by the run of {describe_days(days)}: its sessions changed this day.",
        {"recomputed_by_partition": describe_days(days)},
    )


def report_recomputed_statistics(
    context: dg.OpExecutionContext,
    inventory: Inventory,
    days: Iterable[dt.date],
    description: str,
    cause: dict[str, object],
) -> None:
    """A materialisation of asn_statistics for each of ``days``, with the day's figures as they
    are now (the ones its partition plots show), and what recomputed them."""
    for day in days:
        figures = day_figures(inventory, day)
        metadata = {
            "sessions": figures.sessions,
            "asns_active": len(figures.rows),
            "sessions_attributed": sum(r["session_count"] for r in figures.rows),
            "sessions_without_asn": figures.unattributed,
            "new_addresses": sum(r["new_ip_count"] for r in figures.rows),
            "unique_addresses": figures.unique_addresses,
            **cause,
        }
        context.log_event(
            dg.AssetMaterialization(
                asset_key=STATISTICS_ASSET,
                partition=day.isoformat(),
                description=description,
                metadata=metadata,
            )
        )


def scoped_to_days(
    days: Sequence[dt.date],
    metadata: dict[str, object],
    per_day: Sequence[Sequence[object]] = (),
    per_day_headers: Sequence[str] = (),
) -> dict[str, object]:
    """The metadata of a step as is for one day. For a range (a single-run backfill), Dagster
    records the same metadata on every partition of the range: the figures are then renamed
    ``range_*`` so that no day's plot shows them as its own, the range is named, and
    ``per_day`` holds each day's figures where the step has them."""
    if len(days) == 1:
        return metadata
    scoped: dict[str, object] = {
        "partition_range": describe_days(days),
        "partitions_in_run": len(days),
        "scope": dg.MetadataValue.md(
            f"These figures cover the whole range {describe_days(days)} of a single-run "
            "backfill, not this partition alone."
        ),
    }
    for key, value in metadata.items():
        if key.startswith("dagster/"):
            continue  # a row count of the range is not one of the partition
        scoped[f"range_{key}"] = value
    if per_day:
        scoped["per_day"] = dg.MetadataValue.md(markdown_table(per_day_headers, per_day))
    return scoped


def counts_table(key: str, value: str, rows: Iterable[tuple[object, object]]) -> str:
    """A two-column markdown table, or a note when there is nothing to show."""
    return markdown_table((key, value), list(rows))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    if not rows:
        return "_none_"
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def cymru_metadata(lookups: Lookups) -> dict[str, object]:
    """What the Cymru step did, for the ip_inventory materialisation."""
    if lookups.cymru is None:
        return {"cymru": "off"}
    stats = lookups.cymru.stats
    answers = [
        ("origin", *stats.origin_answers.values()),
        ("AS name", *stats.name_answers.values()),
    ]
    return {
        "cymru": "dns",
        "cymru_addresses_uncovered": stats.addresses_uncovered,
        "cymru_queries_sent": stats.queries_sent,
        "cymru_cache_hits": stats.cache_hits,
        "cymru_cache_hits_by_kind": dg.MetadataValue.md(
            markdown_table(
                ("cache", "hits"),
                [
                    ("prefix cached before the run", stats.prefix_cache_hits),
                    ("prefix learned in the run", stats.prefixes_learned_hits),
                    ("NXDOMAIN", stats.unrouted_cache_hits),
                    ("AS name", stats.name_cache_hits),
                ],
            )
        ),
        "cymru_answers": dg.MetadataValue.md(
            markdown_table(("query", "found", "nxdomain", "failed"), answers)
        ),
        "cymru_found": stats.origin_answers["found"],
        "cymru_nxdomain": stats.origin_answers["nxdomain"],
        "cymru_failed": stats.origin_answers["failed"],
        "cymru_names_fetched": stats.names_fetched,
        "cymru_pending_addresses": stats.pending,
        "cymru_seconds": dg.MetadataValue.float(stats.seconds),
        "cymru_qps_of_step": dg.MetadataValue.float(stats.qps),
    }


def written_metadata(written: Sequence[SessionsWritten]) -> dict[str, object]:
    """What writing the days did: the sessions they own, spanning days and reusing ids."""
    sessions_owned = sum(w.sessions_owned for w in written)
    return {
        "sessions_owned_by_day": sessions_owned,
        "sessions_spanning_days": sum(w.sessions_spanning_days for w in written),
        "reused_session_ids": sum(w.reused_session_ids for w in written),
        "dagster/row_count": sessions_owned,
    }
