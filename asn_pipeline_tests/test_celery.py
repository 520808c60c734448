"""Steps on Dagster's Celery executor over RabbitMQ: two workers standing in for two hosts.

Each worker is its own process tree (``asn-pipeline-celery-workers``), with its own working
directory and its own ``DAGSTER_HOME``; the runs' processes have a third. They share only what
hosts would share: the broker, PostgreSQL (the inventory and Dagster's storage) and the files the
pipeline reads (landing directory, MaxMind databases).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import pytest

from asn_pipeline import demo
from asn_pipeline.definitions import defs
from asn_pipeline.defs.automation.jobs import DAILY_JOB
from asn_pipeline.settings import PROJECT_ROOT
from asn_pipeline.store import Inventory
from asn_pipeline.store.report import table_checksums

BROKER = os.environ.get("ASN_PIPELINE_TEST_BROKER", "pyamqp://guest:guest@127.0.0.1:5672//")
DAYS = tuple(dt.date(2026, 11, 1) + dt.timedelta(days=n) for n in range(10))
ASSETS = "cowrie_sessions,ip_inventory,asn_inventory,asn_statistics"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
RUN_TIMEOUT_S = 600  # a run that loses a step never ends: this turns a hang into a failure
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def broker() -> str:
    """RabbitMQ; the test fails (not skips) without it when CI is set (.ci/run starts it)."""
    from kombu import Connection

    try:
        with Connection(BROKER, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as error:  # kombu raises the transport's own errors
        message = f"RabbitMQ at {BROKER} unreachable: {error}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return BROKER


def celery_home(folder: Path) -> Path:
    """A host's own ``DAGSTER_HOME`` in ``folder``: the project's Celery instance config."""
    home = folder / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "dagster_home" / "celery" / "dagster.yaml", home)
    return home


class Worker:
    """One worker host: ``asn-pipeline-celery-workers`` in a folder and session of its own."""

    def __init__(self, name: str, root: Path, env: dict[str, str]):
        self.name = name
        self.folder = root / name
        home = celery_home(self.folder)
        self.log = self.folder / "worker.log"
        command = [str(BIN / "asn-pipeline-celery-workers"), "--workers", "1", "--name", name]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                cwd=self.folder,
                env={**env, "DAGSTER_HOME": str(home)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # killpg takes the whole tree, as a lost host would
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.text():
            assert self.process.poll() is None, f"{self.name} exited:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"{self.name} not ready:\n{self.text()[-3000:]}"
            time.sleep(0.2)

    def tasks(self) -> tuple[set[str], set[str]]:
        """(ids of the step messages received, ids of those finished) so far."""
        text = self.text()
        received = set(re.findall(r"Task execute_plan\[([^\]]+)\] received", text))
        finished = set(re.findall(r"Task execute_plan\[([^\]]+)\] (?:succeeded|raised)", text))
        return received, finished

    def steps(self) -> tuple[int, int]:
        """(steps received, steps finished) so far."""
        received, finished = self.tasks()
        return len(received), len(finished)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def materialise(day: dt.date, cwd: Path, env: dict[str, str]) -> int:
    """One run of the day's four assets, as a user would start it; its steps go to Celery."""
    command = [str(BIN / "dagster"), "asset", "materialize", "-m", "asn_pipeline.definitions"]
    command += ["--select", ASSETS, "--partition", day.isoformat()]
    try:
        result = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run of {day} did not end in {RUN_TIMEOUT_S} s: a step was lost")
    if result.returncode:
        print(f"{day}: exit {result.returncode}\n{result.stderr[-3000:]}")
    return result.returncode


def serial_pass(db_url: str, monkeypatch) -> dict[str, tuple[int, str]]:
    """The reference: every day in order, in process, into an inventory of its own."""
    monkeypatch.setenv("ASN_PIPELINE_DB_URL", db_url)
    monkeypatch.delenv("ASN_PIPELINE_EXECUTOR", raising=False)
    job = defs().resolve_job_def(DAILY_JOB)
    with dg.DagsterInstance.ephemeral() as instance:
        for day in DAYS:
            job.execute_in_process(
                partition_key=day.isoformat(), instance=instance, run_config=QUIET
            )
    return checksums(db_url)


def checksums(db_url: str) -> dict[str, tuple[int, str]]:
    inventory = Inventory(db_url)
    try:
        return table_checksums(inventory)
    finally:
        inventory.dispose()


def executed_steps(home: Path, env: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """(partition, run status, step key, worker) of every step a Celery worker began."""
    os.environ["DAGSTER_PG_URL"] = env["DAGSTER_PG_URL"]
    found = []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for record in instance.get_run_records():
            run = record.dagster_run
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
                if "Executing steps" not in (entry.dagster_event.message or ""):
                    continue
                metadata = entry.dagster_event.engine_event_data.metadata
                worker = metadata["Celery worker"].value.split("@")[0]
                found.append(
                    (run.tags["dagster/partition"], run.status.value, entry.step_key, worker)
                )
    return found


def test_two_workers_backfill_ten_days_equal_to_a_serial_pass_and_a_killed_one_loses_nothing(
    broker, postgres_schemas, tmp_path, monkeypatch
):
    paths = demo.generate(tmp_path / "demo", days=DAYS)
    for variable, key in (
        ("ASN_PIPELINE_LANDING_DIR", "landing"),
        ("ASN_PIPELINE_MAXMIND_ASN_DB", "asn_db"),
        ("ASN_PIPELINE_MAXMIND_CITY_DB", "city_db"),
    ):
        monkeypatch.setenv(variable, str(paths[key]))
    serial_url, celery_url, dagster_url = postgres_schemas(), postgres_schemas(), postgres_schemas()
    expected = serial_pass(serial_url, monkeypatch)

    env = {
        **os.environ,
        "ASN_PIPELINE_DB_URL": celery_url,
        "ASN_PIPELINE_EXECUTOR": "celery",
        "ASN_PIPELINE_CELERY_BROKER": broker,
        # A queue of this test's own: no other worker on the broker takes its steps.
        "ASN_PIPELINE_CELERY_QUEUE": f"asn_test_{uuid.uuid4().hex[:10]}",
        "DAGSTER_PG_URL": dagster_url,
    }
    orchestrator = tmp_path / "runs"
    orchestrator_home = celery_home(orchestrator)
    run_env = {**env, "DAGSTER_HOME": str(orchestrator_home)}
    # A fresh instance's pools, set once before concurrent runs (docs/deployment.md): runs that
    # start together on an instance that has never seen a pool race to create its limit.
    for pool, limit in (("asn_inventory_db", "4"), ("cymru_dns", "1")):
        subprocess.run(
            [str(BIN / "dagster"), "instance", "concurrency", "set", pool, limit],
            env=run_env,
            cwd=orchestrator,
            check=True,
            capture_output=True,
        )

    workers = [Worker(name, tmp_path, env) for name in ("w1", "w2")]
    try:
        for worker in workers:
            worker.wait_ready()
        victim, survivor = workers
        killed = threading.Event()

        def kill_mid_step() -> None:
            """SIGKILL the first worker's whole tree while it runs a step, after it finished
            at least one."""
            while not killed.is_set():
                received, finished = victim.steps()
                if finished >= 1 and received > finished:
                    time.sleep(0.3)  # well inside the step
                    victim.kill()
                    killed.set()
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_mid_step, daemon=True)
        killer.start()
        with ThreadPoolExecutor(max_workers=3) as pool:
            runs = pool.map(lambda day: materialise(day, orchestrator, run_env), DAYS)
            codes = dict(zip(DAYS, runs, strict=True))
        assert killed.is_set(), "the first worker never ran a second step: nothing was killed"
        killed.set()

        steps = executed_steps(orchestrator_home, env)
        by_worker = Counter(worker for *_, worker in steps)
        assert by_worker["w1-1"] >= 1 and by_worker["w2-1"] >= 1, by_worker
        # The step message the first worker held when it died went to the other, which ran it:
        # it was acknowledged only after the step, so the broker handed it on (a kill before
        # the step's first event leaves one "Executing" event, on the survivor). A run that
        # nonetheless failed is re-run below.
        received, finished = victim.tasks()
        lost = received - finished
        assert lost, "the first worker held no step when it was killed"
        _, finished_by_survivor = survivor.tasks()
        failed = [day for day, code in codes.items() if code]
        assert lost <= finished_by_survivor or failed, (lost, failed)
        began = Counter((day, step) for day, _, step, _ in steps)
        again = [(day, step) for (day, step), n in began.items() if n > 1]
        print(
            f"steps by worker: {dict(by_worker)}; messages handed on: {sorted(lost)}; "
            f"began twice: {again}; failed: {failed}"
        )

        # A re-run of every failed day and of the days whose step began twice (else of one
        # day), on the survivor alone.
        rerun = sorted(set(failed) | {dt.date.fromisoformat(day) for day, _ in again}) or [DAYS[1]]
        for day in rerun:
            assert materialise(day, orchestrator, run_env) == 0, day
        assert survivor.process.poll() is None
    finally:
        for worker in workers:
            worker.stop()

    actual = checksums(celery_url)
    for table, (rows, digest) in actual.items():
        print(f"| {table} | {rows} | {digest} | {expected[table][1]} |")
    assert actual == expected
    assert actual["sessions"][0] > 0 and actual["ip_inventory"][0] > 0
