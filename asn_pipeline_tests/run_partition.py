"""Materialise one partition in a process of its own (concurrency and SIGKILL tests).

    python -m asn_pipeline_tests.run_partition 2026-11-20 [DAGSTER_HOME]

Configuration comes from the environment, as for any Dagster run; exit status 0 on success. The
run is recorded on an ephemeral instance, or on the instance in the directory given (one that
enforces concurrency pools, shared by the processes of a test).
"""

from __future__ import annotations

import sys

import dagster as dg

from asn_pipeline.definitions import defs
from asn_pipeline.defs.automation.jobs import DAILY_JOB

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def main(day: str, home: str | None = None) -> int:
    job = defs().resolve_job_def(DAILY_JOB)
    print("ready", flush=True)  # definitions loaded: execution starts now
    instance = dg.DagsterInstance.from_config(home) if home else dg.DagsterInstance.ephemeral()
    with instance:
        result = job.execute_in_process(
            partition_key=day, instance=instance, raise_on_error=False, run_config=QUIET
        )
    if result.success:
        return 0
    for event in result.all_events:  # what failed, for the test that reads this stream
        if event.is_step_failure or (
            event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
            and not event.asset_check_evaluation_data.passed
        ):
            print(f"{event.step_key}: {event.message}", file=sys.stderr)
            if event.is_step_failure:
                print(event.step_failure_data.error.to_string(), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
