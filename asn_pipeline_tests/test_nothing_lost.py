"""Operating for years: pruned files, reused session ids, subset runs, dead connections, retries.

Each test runs real Dagster runs on real SQLite and PostgreSQL inventories.
"""

from __future__ import annotations

import datetime as dt
import gzip
import shutil
import threading
import time

import pandas as pd
import pytest
import sqlalchemy as sa

from asn_pipeline.store import Inventory
from asn_pipeline_tests import oracle
from asn_pipeline_tests.conftest import CowrieLogs, Pipeline, ts

D = dt.date(2026, 11, 10)
ALLOW_SHRINK = {"cowrie_sessions": {"config": {"allow_shrink": True}}}


def step_failure(result) -> str:
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return str(failure.event_specific_data.error)


def two_sensors_one_day(logs: CowrieLogs) -> None:
    logs.session("sensor-a", "a1", "45.10.0.1", ts(D, 1))
    logs.session("sensor-a", "a2", "45.11.0.1", ts(D, 2))
    logs.session("sensor-b", "b1", "45.12.0.1", ts(D, 3))
    logs.write()


def test_a_day_whose_file_was_pruned_keeps_its_data_and_the_run_names_the_file(
    pipeline: Pipeline, logs: CowrieLogs
):
    two_sensors_one_day(logs)
    pipeline.run(D)
    before = pipeline.snapshot()
    pruned = logs.root / "sensor-b" / f"cowrie.json.{D}"
    pruned.unlink()

    [result] = pipeline.run(D, raise_on_error=False)

    assert not result.success
    message = step_failure(result)
    assert f"sensor-b/cowrie.json.{D} is missing" in message and "allow_shrink" in message
    assert pipeline.snapshot() == before

    pipeline.run(D, tags={"asn_pipeline/allow_shrink": "true"})  # asked for explicitly
    assert sorted(pipeline.table("sessions")["session_id"]) == ["a1", "a2"]
    assert "45.12.0.1" not in set(pipeline.table("ip_inventory")["ip_address"])


def test_a_file_cut_short_is_refused_too(pipeline: Pipeline, logs: CowrieLogs):
    two_sensors_one_day(logs)
    pipeline.run(D)
    before = pipeline.snapshot()
    path = logs.root / "sensor-a" / f"cowrie.json.{D}"
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:2]))

    [result] = pipeline.run(D, raise_on_error=False)

    assert not result.success and "has 2 lines, 6 when read" in step_failure(result)
    assert pipeline.snapshot() == before
    pipeline.run(D, ops=ALLOW_SHRINK)
    assert pipeline.table("sessions").set_index("session_id").loc["a1", "event_count"] == 2


def test_a_day_never_ingested_without_files_is_an_empty_success(pipeline: Pipeline, logs):
    logs.root.mkdir(parents=True, exist_ok=True)

    [result] = pipeline.run(D)

    assert result.success
    assert pipeline.table("sessions").empty and pipeline.table("source_files").empty


def test_an_unmounted_landing_directory_fails_before_any_write(pipeline: Pipeline, logs):
    two_sensors_one_day(logs)
    pipeline.run(D)
    before = pipeline.snapshot()
    job = pipeline.definitions().resolve_job_def("daily_asn_inventory")  # loaded while mounted
    shutil.move(logs.root, logs.root.with_name("unmounted"))

    result = job.execute_in_process(
        partition_key=D.isoformat(), instance=pipeline.instance, raise_on_error=False
    )

    assert not result.success and str(logs.root) in step_failure(result)
    assert pipeline.snapshot() == before


def test_a_file_compressed_after_it_was_read_is_the_same_file(pipeline: Pipeline, logs):
    two_sensors_one_day(logs)
    pipeline.run(D)
    before = pipeline.snapshot()
    plain = logs.root / "sensor-b" / f"cowrie.json.{D}"
    compressed = plain.with_name(plain.name + ".gz")
    compressed.write_bytes(gzip.compress(plain.read_bytes()))

    pipeline.run(D)  # both present, as while gzip runs: the plain file is read, once
    assert pipeline.snapshot() == before
    plain.unlink()
    pipeline.run(D)

    files = pipeline.table("source_files").set_index("logical_name")
    assert (
        files.loc[f"sensor-b/cowrie.json.{D}", "source_file"]
        == compressed.relative_to(logs.root).as_posix()
    )
    after = pipeline.snapshot()
    assert {k: v for k, v in after.items() if k != "source_files"} == {
        k: v for k, v in before.items() if k != "source_files"
    }


def test_damaged_files_show_in_the_metadata_and_a_warning_check(pipeline: Pipeline, logs):
    two_sensors_one_day(logs)
    (logs.root / "sensor-c").mkdir()
    (logs.root / "sensor-c" / f"cowrie.json.{D}.gz").write_bytes(b"not gzip at all\n")

    [result] = pipeline.run(D)

    [materialisation] = [m for m in result.asset_materializations_for_node("cowrie_sessions")]
    assert materialisation.metadata["damaged_files"].value == 1
    [check] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "cowrie_files_readable"
    ]
    assert not check.passed and check.severity.value == "WARN"
    assert check.metadata["files"].value == {f"sensor-c/cowrie.json.{D}.gz": "not_gzip"}


def reused_id_logs(logs: CowrieLogs) -> list[dt.date]:
    """One id reused after a gap, another spanning three consecutive days, on one sensor."""
    days = [D + dt.timedelta(days=i) for i in (0, 1, 2, 20)]
    logs.session("sensor-a", "c0ffee000001", "45.10.0.1", ts(days[0], 9))
    logs.session("sensor-a", "c0ffee000001", "45.11.0.7", ts(days[3], 9))  # 48 random bits again
    logs.session("sensor-a", "long", "45.12.0.1", ts(days[0], 23, 59, 50), events=2)
    logs.session("sensor-a", "long", "45.12.0.1", ts(days[1], 12), events=1)
    logs.session("sensor-a", "long", "45.12.0.1", ts(days[2], 0, 0, 5), events=1)
    for day in days:
        logs.session("sensor-b", f"daily-{day}", "45.10.0.2", ts(day, 6))
    logs.write()
    return days


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2, 1, 3)])
def test_a_session_id_reused_after_a_gap_is_another_session(
    pipeline: Pipeline, logs: CowrieLogs, order
):
    days = reused_id_logs(logs)

    pipeline.run(*(days[i] for i in order))

    sessions = pipeline.table("sessions").set_index(["session_id", "ingest_date"]).sort_index()
    reused = sessions.loc["c0ffee000001"]
    assert list(reused.index) == [str(days[0]), str(days[3])]
    assert reused["src_ip"].tolist() == ["45.10.0.1", "45.11.0.7"]
    assert reused["event_count"].tolist() == [3, 3]
    long = sessions.loc["long"]
    assert list(long.index) == [str(days[0])] and long["event_count"].tolist() == [4]
    expected = oracle.sessions_from_files(pipeline.landing)
    assert len(sessions) == len(expected)
    ips = pipeline.table("ip_inventory").set_index("ip_address")
    assert ips.loc["45.11.0.7", "session_count"] == 1 and ips.loc["45.10.0.1", "session_count"] == 1


def test_removing_the_middle_day_of_a_session_splits_it(pipeline: Pipeline, logs: CowrieLogs):
    days = reused_id_logs(logs)
    pipeline.run(*days)
    (logs.root / "sensor-a" / f"cowrie.json.{days[1]}").unlink()

    pipeline.run(days[1], ops=ALLOW_SHRINK)

    long = pipeline.table("sessions").set_index("session_id").loc[["long"]]
    assert long["ingest_date"].tolist() == [str(days[0]), str(days[2])]
    assert long["event_count"].tolist() == [1, 1]  # its second event was in the removed file
    # Two sessions of one day each: their rows alone, no fragment left on the days around the
    # removed one, and each part still names the run that read its day.
    assert "long" not in set(pipeline.table("session_fragments")["session_id"])
    parts = pipeline.table("session_parts").set_index("session_id").loc[["long"]]
    files = pipeline.table("source_files").groupby("ingest_date")["ingested_by_run"].max()
    assert parts["ingested_by_run"].tolist() == [files[str(days[0])], files[str(days[2])]]


def test_counters_are_exact_after_materialising_cowrie_sessions_alone(
    pipeline: Pipeline, logs: CowrieLogs
):
    logs.session("sensor-a", "one", "45.10.0.1", ts(D, 1))
    logs.session("sensor-a", "late", "45.10.0.1", ts(D, 23, 59, 40), events=3)  # into D+1
    logs.session("sensor-a", "next", "45.10.0.1", ts(D + dt.timedelta(days=1), 5))
    logs.write()
    pipeline.run(D, D + dt.timedelta(days=1))
    logs.session("sensor-a", "two", "45.10.0.1", ts(D, 2))
    logs.session("sensor-a", "new-address", "45.11.0.9", ts(D, 3))
    logs.write()

    [result] = pipeline.run(D, assets=["cowrie_sessions"])

    ips = pipeline.table("ip_inventory").set_index("ip_address")
    assert ips.loc["45.10.0.1", "session_count"] == 4
    asns = pipeline.table("asn_inventory").set_index("asn_number")
    assert asns.loc[64496, "total_session_count"] == 4
    stats = pipeline.table("asn_daily_stats").set_index("stat_date")
    assert stats.loc[str(D), "session_count"] == 3
    for queue in ("stale_ips", "stale_asn_deltas", "stale_days"):
        assert pipeline.table(queue).empty, queue
    [materialisation] = result.asset_materializations_for_node("cowrie_sessions")
    assert materialisation.metadata["addresses_awaiting_lookup"].value == 1
    assert "ip_inventory" in materialisation.metadata["pending"].value


def test_a_run_that_changes_another_days_statistics_materialises_that_partition(
    pipeline: Pipeline, logs: CowrieLogs
):
    first, second = D, D + dt.timedelta(days=1)
    logs.session("sensor-a", "overnight", "45.10.0.1", ts(first, 23, 59, 30), events=4)
    logs.write()
    pipeline.run(second)  # the later day alone owns the session for now

    [result] = pipeline.run(first)

    partitions = {
        e.event_specific_data.materialization.partition
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
        and e.event_specific_data.materialization.asset_key.path == ["asn_statistics"]
    }
    assert partitions == {str(first), str(second)}
    assert pipeline.table("asn_daily_stats")["stat_date"].tolist() == [str(first)]


def test_ip_inventory_row_count_is_the_tables(pipeline: Pipeline, logs: CowrieLogs):
    logs.session("sensor-a", "one", "45.10.0.1", ts(D, 1))
    logs.session("sensor-a", "two", "45.10.0.2", ts(D + dt.timedelta(days=1), 1))
    logs.write()
    pipeline.run(D)

    [result] = pipeline.run(D + dt.timedelta(days=1))

    [materialisation] = [
        m
        for m in result.asset_materializations_for_node("inventory")
        if m.asset_key.path == ["ip_inventory"]
    ]
    assert materialisation.metadata["dagster/row_count"].value == 2
    assert materialisation.metadata["day_addresses"].value == 1


def test_a_dropped_connection_is_retried_and_the_step_succeeds(pipeline: Pipeline, logs):
    if pipeline.backend != "postgres":
        pytest.skip("a server that drops the connection: PostgreSQL")
    two_sensors_one_day(logs)
    pipeline.create_schema()
    # The first insert into session_fragments kills its own connection, once (a sequence is not
    # rolled back with the transaction).
    pipeline.execute(
        "CREATE SEQUENCE drops",
        "CREATE FUNCTION drop_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF nextval('drops') = 1 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF; "
        "RETURN NULL; END $$",
        "CREATE TRIGGER drop_once AFTER INSERT ON session_fragments "
        "FOR EACH STATEMENT EXECUTE FUNCTION drop_once()",
    )

    [result] = pipeline.run(D)

    assert result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.step_key for e in retries] == ["inventory.upsert_inventory"]  # it writes the day
    assert sorted(pipeline.table("sessions")["session_id"]) == ["a1", "a2", "b1"]


def test_a_failure_that_is_not_transient_is_not_retried(pipeline: Pipeline, logs):
    two_sensors_one_day(logs)
    pipeline.run(D)
    (logs.root / "sensor-b" / f"cowrie.json.{D}").unlink()

    [result] = pipeline.run(D, raise_on_error=False)

    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_a_writer_idle_in_its_transaction_gives_the_lock_up(postgres_schemas):
    url = postgres_schemas()
    stuck = Inventory(url, idle_in_transaction_timeout_s=1)
    other = Inventory(url)
    got_lock_after: list[float] = []

    def write() -> None:
        with other.write():
            got_lock_after.append(time.monotonic() - started)

    try:
        with other.write():
            pass  # connected, schema-less work tables made: the wait below is the lock's
        with pytest.raises(sa.exc.OperationalError), stuck.write() as conn:
            started = time.monotonic()
            waiter = threading.Thread(target=write)
            waiter.start()
            time.sleep(6)  # a client frozen mid-transaction: the server ends it after 1 s
            conn.exec_driver_sql("SELECT 1")
        waiter.join()
    finally:
        stuck.dispose()
        other.dispose()
    assert got_lock_after and got_lock_after[0] < 5, got_lock_after


def test_a_waiting_writer_says_who_holds_the_lock(db_url):
    holder = Inventory(db_url, application_name="asn_pipeline holder-under-test")
    waiter = Inventory(db_url)
    messages: list[str] = []
    waiter.on_wait = messages.append
    release = threading.Event()

    def hold() -> None:
        with holder.write():
            release.wait(10)

    thread = threading.Thread(target=hold)
    try:
        with holder.write():
            pass  # the schema's work tables exist
        thread.start()
        time.sleep(0.5)
        threading.Timer(1.0, release.set).start()
        with waiter.write():
            pass
    finally:
        release.set()
        thread.join()
        holder.dispose()
        waiter.dispose()
    assert messages and "holder-under-test" in messages[0], messages


def test_every_step_has_a_retry_policy(pipeline: Pipeline):
    job = pipeline.definitions().resolve_job_def("daily_asn_inventory")
    steps = {"cowrie_sessions", "lookup_addresses", "upsert_inventory", "backfill_session_asns"}
    steps.add("asn_statistics")
    ops = {op.name: op for op in job.graph.iterate_op_defs()}
    assert all(ops[name].retry_policy is not None for name in steps)


def test_the_consecutive_days_rule_matches_the_oracle(pipeline: Pipeline, logs: CowrieLogs):
    days = reused_id_logs(logs)
    pipeline.run(*days)
    expected = oracle.sessions_from_files(pipeline.landing)
    stored = pipeline.table("sessions")
    key = ["sensor", "session_id", "ingest_date"]
    merged = expected.merge(stored, on=key, how="outer", indicator=True)
    assert (merged["_merge"] == "both").all(), merged
    assert isinstance(merged, pd.DataFrame)
