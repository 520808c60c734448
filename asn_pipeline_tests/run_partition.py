"""Materialise one partition in a process of its own (concurrency and SIGKILL tests).

    python -m asn_pipeline_tests.run_partition 2026-11-20

Configuration comes from the environment, as for any Dagster run; exit status 0 on success.
"""

from __future__ import annotations

import sys

import dagster as dg

from asn_pipeline.definitions import defs
from asn_pipeline.defs.automation.jobs import DAILY_JOB

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def main(day: str) -> int:
    job = defs().resolve_job_def(DAILY_JOB)
    print("ready", flush=True)  # definitions loaded: execution starts now
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            partition_key=day, instance=instance, raise_on_error=False, run_config=QUIET
        )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
