"""The asset checks: each passes on a clean inventory and catches the corrupted rows it is for,
the warning ones warn at their thresholds, a range run checks its range, and a failing blocking
check stops the asset downstream of it. Real runs on real SQLite and PostgreSQL inventories."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from asn_pipeline.defs.automation.jobs import DAILY_JOB
from asn_pipeline.defs.ingest import checks as ingest
from asn_pipeline.defs.inventory import checks as inventory
from asn_pipeline.defs.statistics import checks as statistics
from asn_pipeline.settings import ConfigurationError, check_thresholds
from asn_pipeline.store import audit
from asn_pipeline.store.audit import ADDRESS_COLUMNS as COLUMNS
from asn_pipeline.store.database import query
from asn_pipeline_tests.conftest import CowrieLogs, Pipeline
from asn_pipeline_tests.test_invariants import BOGONS, DAYS, write_week

CHECKS = {
    ingest.FILES_READABLE: ("cowrie_sessions", "WARN", False),
    ingest.REJECTED_LINES: ("cowrie_sessions", "WARN", False),
    ingest.SESSIONS_MERGED: ("cowrie_sessions", "ERROR", False),
    inventory.IP_COUNTERS: ("ip_inventory", "ERROR", True),
    inventory.BOGONS_NOT_ENRICHED: ("ip_inventory", "ERROR", True),
    inventory.NO_DANGLING_CURRENT_ASN: ("ip_inventory", "ERROR", True),
    inventory.ASN_COVERAGE: ("ip_inventory", "WARN", False),
    inventory.MAXMIND_FRESH: ("ip_inventory", "WARN", False),
    inventory.ASN_COUNTERS: ("asn_inventory", "ERROR", True),
    inventory.REFERENCED_ASNS: ("asn_inventory", "ERROR", True),
    statistics.STATISTICS_MATCH_SESSIONS: ("asn_statistics", "ERROR", True),
}
MAPPED_IP = "45.10.0.1"  # in AS64496; on every day of the week, in sessions across midnight
MAPPED_ASN = 64496


@pytest.fixture
def week(pipeline: Pipeline, logs: CowrieLogs) -> Pipeline:
    write_week(logs)
    return pipeline


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    found = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert len(found) == len(result.get_asset_check_evaluations())  # each evaluated once
    return found


def metadata(evaluation: dg.AssetCheckEvaluation) -> dict[str, object]:
    return {k: v.value for k, v in evaluation.metadata.items()}


def failed(result: dg.ExecuteInProcessResult) -> set[str]:
    return {name for name, e in evaluations(result).items() if not e.passed}


def run_checks(
    pipeline: Pipeline, first: dt.date, last: dt.date | None = None
) -> dg.ExecuteInProcessResult:
    """Every check of the daily job on its own, without materialising anything (as "Execute
    checks" in the UI), for one day or, as a single-run backfill, a range."""
    job = pipeline.definitions().resolve_job_def(DAILY_JOB)
    keys = {dg.AssetCheckKey(dg.AssetKey(asset), name) for name, (asset, _, _) in CHECKS.items()}
    checks_only = job.get_subset(asset_selection=set(), asset_check_selection=keys)
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    if last is None:
        return checks_only.execute_in_process(
            partition_key=first.isoformat(),
            instance=pipeline.instance,
            raise_on_error=False,
            run_config=quiet,
        )
    return checks_only.execute_in_process(
        instance=pipeline.instance,
        raise_on_error=False,
        run_config=quiet,
        tags={
            ASSET_PARTITION_RANGE_START_TAG: first.isoformat(),
            ASSET_PARTITION_RANGE_END_TAG: last.isoformat(),
        },
    )


def without_foreign_keys(pipeline: Pipeline) -> None:
    """Let a hand-made UPDATE leave an ASN reference dangling (the raw SQLite connection of
    ``Pipeline.execute`` enforces no foreign keys; on PostgreSQL they are dropped)."""
    if pipeline.backend == "postgres":
        pipeline.execute(
            "ALTER TABLE ip_inventory DROP CONSTRAINT ip_inventory_current_asn_fkey",
            "ALTER TABLE sessions DROP CONSTRAINT sessions_asn_number_fkey",
        )


def test_every_check_passes_on_a_clean_week_with_its_severity(week: Pipeline):
    results = week.run(*DAYS)

    for result in results:
        found = evaluations(result)
        assert set(found) == set(CHECKS)
        for name, (asset, severity, blocking) in CHECKS.items():
            assert found[name].passed, (name, metadata(found[name]))
            assert found[name].asset_key == dg.AssetKey(asset)
            assert found[name].blocking is blocking
            assert found[name].severity.value == severity
    checks_only = run_checks(week, DAYS[2])
    assert checks_only.success and not failed(checks_only)
    assert not checks_only.get_asset_materialization_events()


def test_the_checks_look_at_the_days_rows(week: Pipeline):
    [result] = week.run(DAYS[1])

    found = {name: metadata(e) for name, e in evaluations(result).items()}
    addresses = week.table("session_parts").query(f"fragment_date == '{DAYS[1]}'")
    assert found[inventory.IP_COUNTERS]["addresses"] == addresses["src_ip"].nunique()
    assert found[inventory.ASN_COVERAGE]["global_addresses"] == len(
        set(addresses["src_ip"]) - set(BOGONS)
    )
    assert found[inventory.ASN_COVERAGE]["with_asn"] == found[inventory.ASN_COVERAGE][
        "global_addresses"
    ] - (1 if "198.60.1.1" in set(addresses["src_ip"]) else 0)
    files = week.table("source_files").query(f"ingest_date == '{DAYS[1]}'")
    assert found[ingest.REJECTED_LINES]["lines_read"] == files["lines_read"].sum()


def test_a_session_split_at_midnight_is_caught_on_both_days(week: Pipeline):
    week.run(*DAYS)
    sessions = week.table("sessions")
    spanning = sessions[sessions["session_id"].str.startswith("mid")].iloc[0]
    day = spanning["ingest_date"]
    next_day = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
    # Its second day's fragment stored as a session of its own.
    week.execute(
        "INSERT INTO sessions (sensor, session_id, src_ip, ingest_date, first_event_at, "
        "last_event_at, event_count, asn_number) "
        f"SELECT sensor, session_id, src_ip, '{next_day}', first_event_at, last_event_at, 1, "
        f"asn_number FROM sessions WHERE sensor = '{spanning['sensor']}' "
        f"AND session_id = '{spanning['session_id']}'"
    )

    for checked in (dt.date.fromisoformat(day), dt.date.fromisoformat(next_day)):
        result = run_checks(week, checked)
        assert ingest.SESSIONS_MERGED in failed(result)
        found = metadata(evaluations(result)[ingest.SESSIONS_MERGED])
        assert found["split_sessions"] == 1
        assert found["examples"] == [f"{spanning['sensor']}/{spanning['session_id']} of {next_day}"]
    assert ingest.SESSIONS_MERGED not in failed(run_checks(week, DAYS[-1]))


def test_counters_that_differ_from_their_facts_are_caught(week: Pipeline, monkeypatch):
    monkeypatch.setattr(audit, "ASN_BATCH", 2)  # the day's four ASNs in two statements
    week.run(*DAYS)
    week.execute(
        f"UPDATE ip_inventory SET session_count = session_count + 1 "
        f"WHERE ip_address = '{MAPPED_IP}'",
        f"UPDATE asn_daily_stats SET new_ip_count = new_ip_count + 5 "
        f"WHERE stat_date = '{DAYS[2].isoformat()}'",
    )

    result = run_checks(week, DAYS[2])

    assert failed(result) == {
        inventory.IP_COUNTERS,
        inventory.ASN_COUNTERS,  # its total no longer sums its addresses' counters
        statistics.STATISTICS_MATCH_SESSIONS,
    }
    found = {name: metadata(e) for name, e in evaluations(result).items()}
    assert found[inventory.IP_COUNTERS]["counter_mismatches"] == 1
    assert found[inventory.IP_COUNTERS]["examples"] == [MAPPED_IP]
    assert found[inventory.ASN_COUNTERS]["examples"] == [MAPPED_ASN]
    assert found[statistics.STATISTICS_MATCH_SESSIONS]["day_statistics"] >= 1
    assert found[statistics.STATISTICS_MATCH_SESSIONS]["pending_stale_keys"] == 0


def test_a_bogon_with_an_asn_is_caught(week: Pipeline):
    week.run(*DAYS)
    week.execute(
        "UPDATE ip_inventory SET ip_class = 'global', asn_source = 'maxmind', "
        f"current_asn = {MAPPED_ASN} WHERE ip_address = '192.168.1.5'"
    )

    result = run_checks(week, DAYS[0])

    assert inventory.BOGONS_NOT_ENRICHED in failed(result)
    found = metadata(evaluations(result)[inventory.BOGONS_NOT_ENRICHED])
    assert found == {"misclassified": 1, "examples": ["192.168.1.5"]}


def test_asn_references_without_a_row_are_caught(week: Pipeline):
    week.run(*DAYS)
    without_foreign_keys(week)
    # Missing ASN rows referenced both ways: by an address and its own sessions (the same ASN),
    # and by a session of another address (an ASN its address does not have).
    week.execute(
        f"UPDATE ip_inventory SET current_asn = 99999 WHERE ip_address = '{MAPPED_IP}'",
        f"UPDATE sessions SET asn_number = 99999 WHERE src_ip = '{MAPPED_IP}'",
        f"UPDATE sessions SET asn_number = 99998 WHERE session_id = 's00001' "
        f"AND src_ip <> '{MAPPED_IP}'",
    )
    sessions = week.table("sessions")
    parts = week.table("session_parts")
    day_addresses = set(parts.loc[parts["fragment_date"] == str(DAYS[0]), "src_ip"])
    expected = sessions[
        sessions["src_ip"].isin(day_addresses) & sessions["asn_number"].isin([99998, 99999])
    ]
    assert set(expected["asn_number"]) == {99998, 99999}

    result = run_checks(week, DAYS[0])

    assert {inventory.NO_DANGLING_CURRENT_ASN, inventory.REFERENCED_ASNS} <= failed(result)
    found = {name: metadata(e) for name, e in evaluations(result).items()}
    assert found[inventory.NO_DANGLING_CURRENT_ASN]["examples"] == [MAPPED_IP]
    assert found[inventory.REFERENCED_ASNS]["dangling_current_asn"] == 1
    assert found[inventory.REFERENCED_ASNS]["dangling_session_asn"] == len(expected)


def test_the_postgres_address_audit_finds_what_the_shared_one_finds(week: Pipeline):
    """PostgreSQL's own form of the address audit (a probe per address) returns the rows of
    the shared one, on each day and on the week, with every kind of finding in them."""
    if week.backend != "postgres":
        pytest.skip("the form is PostgreSQL's own")
    week.run(*DAYS)
    without_foreign_keys(week)
    week.execute(
        f"UPDATE ip_inventory SET session_count = session_count + 1, current_asn = 99999 "
        f"WHERE ip_address = '{MAPPED_IP}'",
        f"UPDATE sessions SET asn_number = 99998 WHERE session_id = 's00001' "
        f"AND src_ip <> '{MAPPED_IP}'",
        f"INSERT INTO stale_ips (ip_address) VALUES ('{MAPPED_IP}')",
        # An address of the days' parts with a row and no sessions: the fragment's own.
        f"UPDATE session_fragments SET src_ip = '45.10.9.9' WHERE src_ip = '{MAPPED_IP}'",
        "INSERT INTO ip_inventory (ip_address, ip_version, ip_class, asn_source, "
        "session_count, enriched_at) VALUES ('45.10.9.9', 4, 'global', 'none', 0, now())",
    )
    shared = query("audit", "day_address_audit")
    own = query("audit", "day_address_audit", "postgresql")
    assert own is not shared
    engine = sa.create_engine(week.db_url)
    try:
        with engine.connect() as conn:
            for first, last in [*((day, day) for day in DAYS), (DAYS[0], DAYS[-1])]:
                days = {"first_day": first, "last_day": last}
                expected = sorted(map(tuple, conn.execute(shared, days)))
                assert sorted(map(tuple, conn.execute(own, days))) == expected
    finally:
        engine.dispose()
    week_rows = pd.DataFrame(expected, columns=list(COLUMNS))
    assert "45.10.9.9" in set(week_rows["ip_address"])
    for finding in ("counters_differ", "queued", "asn_missing", "session_asns_missing"):
        assert week_rows[finding].sum() > 0, finding


def test_thresholds_warn_and_do_not_block(week: Pipeline, monkeypatch):
    monkeypatch.setenv("ASN_PIPELINE_CHECK_MAX_REJECTED_RATIO", "0.001")
    monkeypatch.setenv("ASN_PIPELINE_CHECK_MIN_ASN_COVERAGE", "1")

    [result] = week.run(DAYS[2])  # one truncated line, and an address no network covers

    assert result.success
    assert failed(result) == {ingest.REJECTED_LINES, inventory.ASN_COVERAGE}
    found = evaluations(result)
    for name in (ingest.REJECTED_LINES, inventory.ASN_COVERAGE):
        assert found[name].severity == dg.AssetCheckSeverity.WARN
    rejected = metadata(found[ingest.REJECTED_LINES])
    assert rejected["rejected_lines"] == 1
    assert rejected["rejected_ratio"] == pytest.approx(1 / rejected["lines_read"], abs=1e-6)
    assert 0 < metadata(found[inventory.ASN_COVERAGE])["coverage"] < 1
    assert result.asset_materializations_for_node("asn_statistics")


def test_an_old_maxmind_build_warns(week: Pipeline, monkeypatch):
    week.run(DAYS[0])
    built = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    week.execute(f"UPDATE ip_inventory SET build_epoch = {int(built.timestamp())}")

    result = run_checks(week, DAYS[0])

    evaluation = evaluations(result)[inventory.MAXMIND_FRESH]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    found = metadata(evaluation)
    assert found["age_days"] == pytest.approx(40, abs=0.1) and found["max_age_days"] == 35
    monkeypatch.setenv("ASN_PIPELINE_CHECK_MAXMIND_MAX_AGE_DAYS", "45")
    assert evaluations(run_checks(week, DAYS[0]))[inventory.MAXMIND_FRESH].passed


def test_a_range_run_checks_the_range(week: Pipeline):
    result = week.run_range(DAYS[0], DAYS[-1])

    found = evaluations(result)
    assert set(found) == set(CHECKS) and all(e.passed for e in found.values())
    addresses = metadata(found[inventory.IP_COUNTERS])
    assert addresses["partition_range"] == f"{DAYS[0]}..{DAYS[-1]}"
    assert addresses["range_addresses"] == week.table("ip_inventory")["ip_address"].nunique()

    # A corruption on one day of the range fails the range's checks.
    week.execute(
        f"UPDATE asn_daily_stats SET session_count = session_count + 1 "
        f"WHERE stat_date = '{DAYS[3].isoformat()}'"
    )
    assert failed(run_checks(week, DAYS[0], DAYS[-1])) == {statistics.STATISTICS_MATCH_SESSIONS}
    assert not failed(run_checks(week, DAYS[0], DAYS[2]))


def test_a_failing_blocking_check_stops_asn_statistics(week: Pipeline):
    """In a run of all four assets the ASN counters lag by their queued difference when the
    check runs (asn_statistics applies it); the check applies it itself, so a counter that was
    already wrong fails it, and asn_statistics does not run."""
    week.run(DAYS[0])
    stats_before = week.table("asn_daily_stats")
    week.execute(
        f"UPDATE asn_inventory SET total_session_count = total_session_count + 7 "
        f"WHERE asn_number = {MAPPED_ASN}"
    )

    [result] = week.run(DAYS[1], raise_on_error=False)

    assert not result.success
    assert inventory.ASN_COUNTERS in failed(result)
    assert evaluations(result)[inventory.ASN_COUNTERS].blocking
    assert not result.asset_materializations_for_node("asn_statistics")
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "day_checks" in started and "asn_statistics" not in started
    messages = [entry.user_message for entry in week.instance.all_logs(result.run_id)]
    assert any(
        m.startswith("Dependencies for step asn_statistics failed: ['day_checks'")
        and m.endswith("Not executing.")
        for m in messages
    )
    # Nothing downstream ran: no statistics of the day were written.
    assert week.table("asn_daily_stats").equals(stats_before)


def test_thresholds_from_the_environment():
    assert check_thresholds({}) == check_thresholds({"ASN_PIPELINE_CHECK_MIN_ASN_COVERAGE": " "})
    found = check_thresholds(
        {
            "ASN_PIPELINE_CHECK_MAX_REJECTED_RATIO": "0.2",
            "ASN_PIPELINE_CHECK_MIN_ASN_COVERAGE": "0",
            "ASN_PIPELINE_CHECK_MAXMIND_MAX_AGE_DAYS": "7",
        }
    )
    assert (found.max_rejected_ratio, found.min_asn_coverage, found.maxmind_max_age_days) == (
        0.2,
        0.0,
        7,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ASN_PIPELINE_CHECK_MAX_REJECTED_RATIO", "5%"),
        ("ASN_PIPELINE_CHECK_MAX_REJECTED_RATIO", "1.5"),
        ("ASN_PIPELINE_CHECK_MAX_REJECTED_RATIO", "nan"),
        ("ASN_PIPELINE_CHECK_MIN_ASN_COVERAGE", "-0.1"),
        ("ASN_PIPELINE_CHECK_MIN_ASN_COVERAGE", "inf"),
        ("ASN_PIPELINE_CHECK_MAXMIND_MAX_AGE_DAYS", "0"),
        ("ASN_PIPELINE_CHECK_MAXMIND_MAX_AGE_DAYS", "30.5"),
        ("ASN_PIPELINE_CHECK_MAXMIND_MAX_AGE_DAYS", "٣٠"),
    ],
)
def test_a_bad_threshold_names_its_variable_and_value(variable, value):
    with pytest.raises(ConfigurationError) as error:
        check_thresholds({variable: value})
    assert error.value.variable == variable
    assert str(error.value).startswith(f"{variable}={value!r}: ")


def test_a_bad_threshold_stops_the_definitions_from_loading(week: Pipeline, monkeypatch):
    monkeypatch.setenv("ASN_PIPELINE_CHECK_MIN_ASN_COVERAGE", "most")

    with pytest.raises(ConfigurationError) as raised:
        week.definitions()

    assert "ASN_PIPELINE_CHECK_MIN_ASN_COVERAGE='most': expected a share" in str(raised.value)
