"""Celery workers that execute the steps of runs whose executor is Celery.

    asn-pipeline-celery-workers --workers 2        # two worker processes on this host

Each worker is ``celery -A asn_pipeline.celery_workers worker``: the Celery app below, made from
the same settings (``ASN_PIPELINE_CELERY_BROKER``, ``ASN_PIPELINE_CELERY_BACKEND``) and the same
``CELERY_CONFIG_SOURCE`` as the executor, with Dagster's step task. A worker loads the code
location (``asn_pipeline.definitions``) when a step arrives, so it needs the same ``ASN_PIPELINE_*``
environment as the rest of the deployment: the inventory URL, the MaxMind files, the landing
directory. It reads and writes nothing else on its own disk but Dagster's compute logs.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
from pathlib import Path

from dagster._core.execution.retries import RetryMode
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from asn_pipeline.execution import celery_config_source
from asn_pipeline.settings import ExecutorSettings, executor_settings

SETTINGS: ExecutorSettings = executor_settings()


def _app():
    executor = CeleryExecutor(
        retries=RetryMode(RetryMode.DISABLED),
        broker=SETTINGS.celery_broker,
        backend=SETTINGS.celery_backend,
        config_source=celery_config_source(SETTINGS),
    )
    return make_app(executor.app_args())


app = _app()
execute_plan = create_task(app)


def worker_command(name: str, concurrency: int, loglevel: str) -> list[str]:
    """One worker: ``concurrency`` processes that each run one step at a time."""
    celery = Path(sys.executable).with_name("celery")
    return [
        str(celery),
        "-A",
        "asn_pipeline.celery_workers",
        "worker",
        "--hostname",
        f"{name}@{socket.gethostname()}",
        "--queues",
        SETTINGS.celery_queue,
        "--concurrency",
        str(concurrency),
        "--prefetch-multiplier",
        "1",
        "--loglevel",
        loglevel,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start Celery workers for asn_pipeline's steps.")
    parser.add_argument("--workers", type=int, default=1, help="worker processes to start")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="steps each worker runs at the same time"
    )
    parser.add_argument("--name", default="asn", help="worker names: <name>-<n>@<host>")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.concurrency < 1:
        parser.error("--workers and --concurrency must be at least 1")
    workers = [
        subprocess.Popen(worker_command(f"{args.name}-{n}", args.concurrency, args.loglevel))
        for n in range(1, args.workers + 1)
    ]

    def stop(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)  # Celery's warm shutdown: finish the running steps

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    codes = [worker.wait() for worker in workers]
    return max(codes, default=0)


if __name__ == "__main__":
    sys.exit(main())
