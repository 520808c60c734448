"""`make demo` and `make ui`: demo data, every demo partition through Dagster, a summary.

Runs against the real Dagster instance in DAGSTER_HOME (dagster_home/ by default) and the
inventory of ASN_PIPELINE_DB_URL (the embedded SQLite file by default), so the runs and
materialisations show up in the UI afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEMO_LOG_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ui", action="store_true", help="start Dagster's webserver instead")
    args = parser.parse_args()

    from asn_pipeline import demo
    from asn_pipeline.settings import DEMO_DIR, PROJECT_ROOT, ConfigurationError

    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "dagster_home"))
    paths = demo.generate(DEMO_DIR)
    if not os.environ.get("ASN_PIPELINE_LANDING_DIR"):
        # The demo's own City database, so the demo shows countries; real logs bring their own.
        os.environ.setdefault("ASN_PIPELINE_MAXMIND_CITY_DB", str(paths["city_db"]))

    if args.ui:
        print("Dagster UI on http://127.0.0.1:3000 (Ctrl-C to stop)", flush=True)
        dagster = Path(sys.executable).with_name("dagster")
        workspace = str(PROJECT_ROOT / "workspace.yaml")
        os.execv(dagster, [str(dagster), "dev", "-h", "127.0.0.1", "-p", "3000", "-w", workspace])

    try:
        return run_demo()
    except ConfigurationError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2


def run_demo() -> int:
    import dagster as dg

    from asn_pipeline import demo
    from asn_pipeline.definitions import defs
    from asn_pipeline.defs.automation.jobs import DAILY_JOB
    from asn_pipeline.settings import Settings
    from asn_pipeline.store import Inventory
    from asn_pipeline.store.report import inventory_report

    definitions = defs()
    job = definitions.resolve_job_def(DAILY_JOB)
    settings = Settings.from_environ()
    failed = []
    with dg.DagsterInstance.get() as instance:
        print(f"Dagster instance: {os.environ['DAGSTER_HOME']}")
        _observe_sources(instance, definitions)
        for day in demo.DEMO_DAYS:
            result = job.execute_in_process(
                partition_key=day.isoformat(),
                instance=instance,
                run_config=DEMO_LOG_CONFIG,
                raise_on_error=False,
            )
            checks = result.get_asset_check_evaluations()
            passed = sum(c.passed for c in checks)
            status = "ok" if result.success else "FAILED"
            print(f"  {day}  run {result.run_id[:8]}  {status}  checks {passed}/{len(checks)}")
            if not result.success or passed != len(checks):
                failed.append(day)

    inventory = Inventory(settings.db_url)
    report = inventory_report(inventory)
    inventory.dispose()
    _print_summary(inventory.display_url, report)
    if failed:
        print(f"\nFAILED partitions: {', '.join(map(str, failed))}", file=sys.stderr)
        return 1
    return 0


def _observe_sources(instance, definitions) -> None:
    """Record what the sources hold before the runs (as the UI's "Observe sources" does, but
    without a run of its own), so that the runs' materialisations name their inputs' versions."""
    from asn_pipeline.defs.sources.assets import DATA_VERSION_TAG, source_observations

    resources = definitions.resources
    observations = source_observations(resources["maxmind"], resources["landing"])
    for observation in observations:
        instance.report_runless_asset_event(observation)
    versions = {}
    for observation in observations:
        versions.setdefault(observation.asset_key.to_user_string(), []).append(
            observation.tags.get(DATA_VERSION_TAG, observation.metadata["status"].value)
        )
    shown = ", ".join(
        f"{key} {values[0]}" if len(values) == 1 else f"{key} {len(values)} days"
        for key, values in versions.items()
    )
    print(f"Sources observed: {shown}")


def _print_summary(database: str, report) -> None:
    totals = report.totals
    print(f"\nInventory: {database}")
    print(
        f"  {totals['sessions']} sessions from {totals['addresses']} addresses in "
        f"{totals['asns']} ASNs ({totals['bogons']} bogons, {totals['unmapped']} without ASN)"
    )
    print("\nTop ASNs by sessions:")
    print(f"  {'ASN':<9} {'organization':<34} {'cc':<3} {'addresses':>9} {'sessions':>9}")
    for row in report.top_asns:
        print(
            f"  AS{row['asn_number']:<7} {row['organization_name'] or '':<34} "
            f"{row['organization_country'] or '':<3} {row['unique_ip_count']:>9} "
            f"{row['total_session_count']:>9}"
        )
    rejected = ", ".join(f"{reason} {n}" for reason, n in report.rejected_by_reason) or "none"
    print(f"\nRejected lines: {totals['rejected_lines']} ({rejected})")
    print("\nOpen the Dagster UI with `make ui` -> http://127.0.0.1:3000")


if __name__ == "__main__":
    sys.exit(main())
