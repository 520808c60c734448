"""The checks of cowrie_sessions.

They are evaluated by the step that checks the inventory too (``day_checks`` in
``defs/inventory/checks.py``): in a run that materialises ip_inventory, the inventory step writes
the day cowrie_sessions read (each session once, with its ASN), so the checks must read the day
after that write; one step then reads the day once for every check of the three assets.
"""

import datetime as dt
from collections.abc import Container, Sequence

import dagster as dg

from asn_pipeline.defs.partitions import daily_partitions
from asn_pipeline.settings import check_thresholds
from asn_pipeline.steps import scoped_to_days
from asn_pipeline.store import Inventory, audit

ASSET = "cowrie_sessions"
FILES_READABLE = "cowrie_files_readable"
REJECTED_LINES = "rejected_lines_below_threshold"
SESSIONS_MERGED = "sessions_spanning_midnight_merged"

SPECS = [
    dg.AssetCheckSpec(
        FILES_READABLE,
        asset=ASSET,
        partitions_def=daily_partitions,
        description="Every file the day was read from is whole and holds events (WARN).",
    ),
    dg.AssetCheckSpec(
        REJECTED_LINES,
        asset=ASSET,
        partitions_def=daily_partitions,
        description=(
            "The day's rejected lines are at most ASN_PIPELINE_CHECK_MAX_REJECTED_RATIO of "
            "the lines read (WARN)."
        ),
    ),
    dg.AssetCheckSpec(
        SESSIONS_MERGED,
        asset=ASSET,
        partitions_def=daily_partitions,
        # Not blocking: in a run of the daily job the sessions are written by ip_inventory's
        # step, which cannot wait for a check that reads what it writes. The blocking
        # ip_counters_match_sessions reads the same sessions before asn_statistics runs.
        blocking=False,
        description=(
            "A session spanning midnight is one row: no session of the day or the next "
            "begins where a part of the same id lies on the day before."
        ),
    ),
]


def results(
    inventory: Inventory, days: Sequence[dt.date], selected: Container[dg.AssetCheckKey]
) -> list[dg.AssetCheckResult]:
    """The checks of cowrie_sessions, from the day's source files and sessions read once for the
    three; none when none of them is selected."""
    if not any(spec.key in selected for spec in SPECS):
        return []
    thresholds = check_thresholds()
    found = audit.sessions_audit(inventory, days[0], days[-1])
    return [
        dg.AssetCheckResult(
            asset_key=ASSET,
            check_name=FILES_READABLE,
            passed=not found.damaged_files,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=scoped_to_days(
                days,
                {
                    "damaged_files": len(found.damaged_files),
                    "files": dg.MetadataValue.json(found.damaged_files),
                },
            ),
        ),
        dg.AssetCheckResult(
            asset_key=ASSET,
            check_name=REJECTED_LINES,
            passed=found.rejected_ratio <= thresholds.max_rejected_ratio,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=scoped_to_days(
                days,
                {
                    "rejected_lines": found.rejected_lines,
                    "lines_read": found.lines_read,
                    "rejected_ratio": dg.MetadataValue.float(round(found.rejected_ratio, 6)),
                    "max_rejected_ratio": dg.MetadataValue.float(thresholds.max_rejected_ratio),
                },
            ),
        ),
        dg.AssetCheckResult(
            asset_key=ASSET,
            check_name=SESSIONS_MERGED,
            passed=found.split_sessions == 0,
            metadata=scoped_to_days(
                days,
                {
                    "split_sessions": found.split_sessions,
                    "examples": dg.MetadataValue.json(found.split_examples),
                },
            ),
        ),
    ]
