"""Each session written once, with its ASN: the day cowrie_sessions reads is written by the
inventory step with the day's lookups (docs/performance.md, "Round two")."""

from __future__ import annotations

import dagster as dg
import pytest

from asn_pipeline_tests.conftest import Pipeline, assert_exact, ts
from asn_pipeline_tests.test_invariants import DAYS, inject_failure, remove_failure, write_week


@pytest.fixture
def week(pipeline: Pipeline, logs) -> Pipeline:
    write_week(logs)
    pipeline.create_schema()
    return pipeline


def count_session_updates(pipeline: Pipeline) -> None:
    """A real trigger that records every row an UPDATE of sessions changes."""
    pipeline.execute("CREATE TABLE session_updates (session_id text)")
    if pipeline.backend == "sqlite":
        pipeline.execute(
            "CREATE TRIGGER count_updates AFTER UPDATE ON sessions "
            "BEGIN INSERT INTO session_updates VALUES (new.session_id); END"
        )
    else:
        pipeline.execute(
            "CREATE FUNCTION count_updates() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO session_updates VALUES (new.session_id); RETURN NULL; END $$",
            "CREATE TRIGGER count_updates AFTER UPDATE ON sessions "
            "FOR EACH ROW EXECUTE FUNCTION count_updates()",
        )


def ip_inventory_metadata(result: dg.ExecuteInProcessResult) -> dict:
    [materialisation] = [
        m
        for m in result.asset_materializations_for_node("inventory")
        if m.asset_key == dg.AssetKey("ip_inventory")
    ]
    return materialisation.metadata


def staged_rows(pipeline: Pipeline) -> list[str]:
    rows = pipeline.table("step_outputs")
    rows = rows[rows["output_name"].isin(["staged_day", "staged_addresses"])]
    return sorted(rows["mapping_key"] + "/" + rows["output_name"])


def test_a_run_of_the_daily_job_writes_each_session_once_with_its_asn(week: Pipeline):
    count_session_updates(week)

    results = week.run(*DAYS)

    assert week.table("session_updates").empty  # no session row was written a second time
    sessions = week.table("sessions")
    current = week.table("ip_inventory").set_index("ip_address")["current_asn"]
    snapshot = sessions["asn_number"].astype("Int64")
    assert snapshot.equals(sessions["src_ip"].map(current).astype("Int64"))
    assert snapshot.notna().sum() > 0
    for day, result in zip(DAYS, results, strict=True):
        ips = ip_inventory_metadata(result)
        assert ips["sessions_written_with_asn"].value is True
        assert ips["session_asn_snapshots_changed"].value == 0
        written = week.latest_metadata("cowrie_sessions", day)
        owned = int((sessions["ingest_date"] == day.isoformat()).sum())
        assert written["sessions_owned_by_day"].value == owned
        assert written["dagster/row_count"].value == owned
        assert (
            written["files"].value
            == result.asset_materializations_for_node("cowrie_sessions")[0].metadata["files"].value
        )  # the reading step's figures, carried over
    assert staged_rows(week) == []
    assert_exact(week)


def test_the_same_days_written_by_cowrie_sessions_alone_give_the_same_inventory(
    week: Pipeline, request, tmp_path, monkeypatch
):
    week.run(*DAYS)
    written_once = week.snapshot()

    apart = week.other(request, tmp_path, "apart")
    monkeypatch.setenv("ASN_PIPELINE_DB_URL", apart.db_url)
    apart.create_schema()
    count_session_updates(apart)
    for day in DAYS:
        apart.run(day, assets=["cowrie_sessions"])
        apart.run(day, assets=["ip_inventory", "asn_inventory", "asn_statistics"])

    assert not apart.table("session_updates").empty  # the backfill set the new ones' ASN
    assert apart.snapshot() == written_once


def test_a_day_read_by_a_failed_run_is_written_by_the_next_inventory_run(week: Pipeline):
    week.run(*DAYS[:2])
    before = week.snapshot()
    inject_failure(week, "ip_inventory")

    [failed] = week.run(DAYS[2], raise_on_error=False)

    assert not failed.success
    assert week.snapshot() == before
    assert staged_rows(week) == [f"{DAYS[2]}/staged_addresses", f"{DAYS[2]}/staged_day"]
    # However old, a staged day outlives the pruning of step outputs until it is written.
    week.execute("UPDATE step_outputs SET written_at = '2001-01-01 00:00:00+00:00'")
    remove_failure(week, "ip_inventory")

    [result] = week.run(DAYS[2], assets=["ip_inventory", "asn_inventory", "asn_statistics"])

    assert result.success
    assert staged_rows(week) == []
    sessions = week.table("sessions")
    assert (sessions["ingest_date"] == DAYS[2].isoformat()).any()
    [record] = week.instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("cowrie_sessions"), asset_partitions=[DAYS[2].isoformat()]
        ),
        limit=1,
    ).records
    written = record.asset_materialization
    assert written.metadata["written_by_run"].value == result.run_id
    assert f"read by run {failed.run_id}" in written.description
    assert_exact(week)


def test_a_run_writes_the_day_it_read_itself_whatever_the_clocks_say(week: Pipeline, logs):
    inject_failure(week, "ip_inventory")
    [failed] = week.run(DAYS[0], raise_on_error=False)
    remove_failure(week, "ip_inventory")
    # The failed run's staged day looks newer than any other (another host's clock ahead).
    week.execute(
        "UPDATE step_outputs SET written_at = '2099-01-01 00:00:00+00:00' "
        f"WHERE run_id = '{failed.run_id}'"
    )
    logs.session("sensor-a", "late-arrival", "45.10.0.77", ts(DAYS[0], 23, 0))
    logs.write()

    [result] = week.run(DAYS[0])

    assert result.success
    assert "late-arrival" in set(week.table("sessions")["session_id"])
    assert staged_rows(week) == []  # the older staged day is superseded too
    assert_exact(week)


def test_a_day_read_again_supersedes_the_day_it_staged_before(week: Pipeline):
    inject_failure(week, "ip_inventory")
    week.run(DAYS[0], raise_on_error=False)
    remove_failure(week, "ip_inventory")

    week.run(DAYS[0], assets=["cowrie_sessions"])  # written by itself: the staged day is stale

    assert staged_rows(week) == []
    week.run(DAYS[0], assets=["ip_inventory", "asn_inventory", "asn_statistics"])
    assert_exact(week)


def test_a_day_with_many_rejected_lines_is_written_by_cowrie_sessions(week: Pipeline, monkeypatch):
    monkeypatch.setattr("asn_pipeline.defs.ingest.assets.STAGED_REJECTED_LINES_MAX", 0)

    [result] = week.run(DAYS[2])  # the day with a rejected line

    [own] = result.asset_materializations_for_node("cowrie_sessions")
    sessions = week.table("sessions")
    assert own.metadata["sessions_owned_by_day"].value == len(sessions)
    assert ip_inventory_metadata(result)["sessions_written_with_asn"].value is False
    assert len(week.table("rejected_events")) == 1
    assert_exact(week)
