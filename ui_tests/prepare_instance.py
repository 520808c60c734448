"""Demo data and a Dagster instance with history, for the UI test (ui_tests/ui.test.js).

Writes the demo landing directory and MaxMind databases under the directory given, then runs the
daily job for the first demo days into the instance of DAGSTER_HOME, one run per day, so that the
asset pages have several partitions to plot. The ASN_PIPELINE_* variables must already point at
the files this writes. Prints the demo days and the days materialised as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path, help="where the demo landing and .mmdb files go")
    parser.add_argument("--days", type=int, default=2, help="demo days to materialise")
    args = parser.parse_args()

    from asn_pipeline import demo

    demo.generate(args.directory)
    days = [day.isoformat() for day in demo.DEMO_DAYS]
    os.environ.setdefault("ASN_PIPELINE_START_DATE", days[0])

    import dagster as dg

    from asn_pipeline.definitions import defs
    from asn_pipeline.defs.automation.jobs import DAILY_JOB
    from asn_pipeline.defs.sources.assets import source_observations

    definitions = defs()
    job = definitions.resolve_job_def(DAILY_JOB)
    with dg.DagsterInstance.get() as instance:
        # The sources observed once, as make demo does, so the graph shows their versions.
        resources = definitions.resources
        for observation in source_observations(resources["maxmind"], resources["landing"]):
            instance.report_runless_asset_event(observation)
        for day in days[: args.days]:
            result = job.execute_in_process(
                partition_key=day, instance=instance, run_config=QUIET_LOGS, raise_on_error=False
            )
            if not result.success:
                print(f"the run of {day} failed: {result.run_id}", file=sys.stderr)
                return 1
    print(
        json.dumps(
            {
                "days": days,
                "materialised": days[: args.days],
                "start_date": os.environ["ASN_PIPELINE_START_DATE"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
