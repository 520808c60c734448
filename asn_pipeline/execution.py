"""Where a run's steps execute (``ASN_PIPELINE_EXECUTOR``), and the Celery settings that the
run's process and every worker (``asn_pipeline.celery_workers``) share."""

from __future__ import annotations

import os

import dagster as dg

from asn_pipeline.settings import ExecutorSettings

# Celery settings of both sides. A step's message is acknowledged when the step has finished, not
# when a worker takes it: a worker that dies mid-step (killed, its host lost) leaves the message
# unacknowledged, the broker hands it to another worker when the dead one's connection drops, and
# the step runs again there. Every step is all or nothing in the inventory, so running it again
# is safe. One message at a time per worker process: a step is long, and a prefetched one would
# wait behind it instead of going to an idle worker.
CELERY_CONFIG_SOURCE = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
}


def _from_environ(variable: str, value: str) -> str | dict[str, str]:
    """The variable's name where it is set, so the launchpad shows the name, not a password."""
    return {"env": variable} if os.environ.get(variable, "").strip() else value


def celery_config_source(settings: ExecutorSettings) -> dict[str, object]:
    """Celery's settings of both sides: the shared ones and the queue the steps go to."""
    return {**CELERY_CONFIG_SOURCE, "task_default_queue": settings.celery_queue}


def celery_config(settings: ExecutorSettings) -> dict[str, object]:
    """The Celery executor's config: broker, result backend and the shared settings."""
    return {
        "broker": _from_environ("ASN_PIPELINE_CELERY_BROKER", settings.celery_broker),
        "backend": _from_environ("ASN_PIPELINE_CELERY_BACKEND", settings.celery_backend),
        "config_source": celery_config_source(settings),
    }


def executor_for(settings: ExecutorSettings) -> dg.ExecutorDefinition:
    """The executor of every job. In process (the default): a partition's steps form a chain,
    and a process per step (the multiprocess executor) cost about 2 s each, most of a run's
    time; runs in parallel come from the run queue and the pools. Celery: each step is a
    message that any worker may take, on any host."""
    if settings.kind == "multiprocess":
        return dg.multiprocess_executor
    if settings.kind == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(celery_config(settings), name="celery")
    return dg.in_process_executor
