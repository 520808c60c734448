"""What one step hands to the next goes through the inventory database, not a host's disk."""

from __future__ import annotations

import datetime as dt
import pickle
import zlib
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from asn_pipeline.definitions import defs
from asn_pipeline.defs.automation.jobs import DAILY_JOB
from asn_pipeline.lookup.enrich import Lookups
from asn_pipeline.store import Inventory, step_outputs
from asn_pipeline.store.schema import ensure_schema
from asn_pipeline.store.step_outputs import RETENTION, StepOutputKey, StepOutputMissing
from asn_pipeline_tests.conftest import CowrieLogs, Pipeline, assert_exact, configure
from asn_pipeline_tests.test_invariants import DAYS, inject_failure, remove_failure, write_week

DAY = DAYS[2]
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def daily_job() -> dg.JobDefinition:
    return defs().resolve_job_def(DAILY_JOB)


@pytest.fixture
def on_disk(monkeypatch, mmdb_files, logs: CowrieLogs, db_url, tmp_path) -> Pipeline:
    """The week's logs, and a Dagster instance with its own storage folder on disk."""
    configure(monkeypatch, db_url, logs, mmdb_files)
    write_week(logs)
    inventory = Inventory(db_url)
    ensure_schema(inventory)
    inventory.dispose()
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield Pipeline(db_url, logs.root, instance)


def stored(pipeline: Pipeline) -> pd.DataFrame:
    return pipeline.table("step_outputs").sort_values(["step_key", "output_name"])


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_run_hands_its_values_through_the_inventory_and_nothing_through_disk(on_disk):
    (result,) = on_disk.run(DAY)
    assert result.success

    rows = stored(on_disk)
    assert set(rows["run_id"]) == {result.run_id}
    handed = list(zip(rows["step_key"], rows["output_name"], strict=True))
    assert handed == [
        ("inventory.lookup_addresses", "result"),
        ("inventory.lookup_cymru", "result"),
        ("inventory.upsert_inventory", "ip_summary"),
    ]
    assert (rows["byte_count"] > 0).all()
    lookups = pickle.loads(zlib.decompress(rows.iloc[0]["payload"]))
    assert isinstance(lookups, Lookups)
    sessions = on_disk.table("sessions")
    day_addresses = set(sessions.loc[sessions["ingest_date"] == DAY.isoformat(), "src_ip"])
    assert set(lookups.addresses["ip_address"]) == day_addresses
    # Dagster's storage folder holds no step output (the filesystem IO manager would have
    # written <run_id>/<step>/<output> files there).
    storage = on_disk.instance.storage_directory()
    written = files_under(Path(storage))
    assert not [f for f in written if result.run_id in f and ("result" in f or "summary" in f)]
    assert_exact(on_disk)


def test_a_re_execution_from_failure_reads_its_parent_runs_outputs(on_disk):
    inject_failure(on_disk, "ip_asn_history")
    failed = dg.execute_job(
        dg.reconstructable(daily_job),
        instance=on_disk.instance,
        tags={"dagster/partition": DAY.isoformat()},
        run_config=QUIET,
        raise_on_error=False,
    )
    assert not failed.success
    steps = {e.step_key for e in failed.get_step_failure_events()}
    assert steps == {"inventory.upsert_inventory"}
    assert on_disk.table("ip_inventory").empty  # all or nothing
    remove_failure(on_disk, "ip_asn_history")

    again = dg.execute_job(
        dg.reconstructable(daily_job),
        instance=on_disk.instance,
        reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, on_disk.instance),
        tags={"dagster/partition": DAY.isoformat()},  # as the UI's re-execution copies them
        run_config=QUIET,
    )
    assert again.success
    # The lookups were not made again: the re-execution loaded those its parent run kept.
    executed = {e.step_key for e in again.get_step_success_events()}
    assert "inventory.lookup_addresses" not in executed
    assert "inventory.upsert_inventory" in executed
    rows = stored(on_disk)
    assert set(rows.loc[rows["step_key"] == "inventory.lookup_cymru", "run_id"]) == {failed.run_id}
    assert set(rows.loc[rows["step_key"] == "inventory.upsert_inventory", "run_id"]) == {
        again.run_id
    }
    assert_exact(on_disk)


def test_old_outputs_are_pruned_and_a_missing_one_is_named(db_url):
    inventory = Inventory(db_url)
    try:
        ensure_schema(inventory)
        now = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
        old = StepOutputKey("run-old", "inventory.lookup_addresses", "result")
        new = StepOutputKey("run-new", "inventory.lookup_addresses", "result")
        step_outputs.keep(inventory, old, {"a": 1}, now - RETENTION - dt.timedelta(seconds=1))
        step_outputs.keep(inventory, new, {"b": 2}, now)
        # A retried step replaces what it wrote.
        step_outputs.keep(inventory, new, {"b": 3}, now)
        assert step_outputs.fetch(inventory, new) == {"b": 3}
        with pytest.raises(StepOutputMissing, match="run-old.*pruned after 7 days"):
            step_outputs.fetch(inventory, old)
    finally:
        inventory.dispose()
