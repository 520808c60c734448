"""DESIGN §5 invariants on real SQLite and PostgreSQL inventories, through real Dagster runs."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3

import pandas as pd
import pytest

from asn_pipeline.demo import Network, write_asn_mmdb
from asn_pipeline.store import Inventory
from asn_pipeline.store.report import table_checksums
from asn_pipeline_tests import oracle
from asn_pipeline_tests.conftest import NETWORKS, UNMAPPED_IP, CowrieLogs, Pipeline, ts

DAYS = tuple(dt.date(2026, 11, 10) + dt.timedelta(days=i) for i in range(5))
BOGONS = {
    "192.168.1.5": "private",
    "10.0.0.1": "private",
    "100.64.1.1": "shared_cgnat",
    "192.0.2.44": "documentation",
    "fe80::1": "link_local",
}


def write_week(logs: CowrieLogs) -> None:
    """Five days: recurring addresses, sessions across midnight, bogons, IPv6, a gzip day."""
    rng = random.Random(7)
    mapped = [f"45.{10 + i % 3}.{i}.{i + 1}" for i in range(12)] + ["2a01:1000::5", UNMAPPED_IP]
    n = 0
    for day in DAYS:
        for _ in range(25):
            n += 1
            ip = rng.choice(mapped)
            sensor = rng.choice(["sensor-a", "sensor-b"])
            logs.session(sensor, f"s{n:05d}", ip, ts(day, rng.randint(0, 22), rng.randint(0, 59)))
        for ip in BOGONS:
            n += 1
            logs.session("sensor-a", f"s{n:05d}", ip, ts(day, 3))
        n += 1
        if day == DAYS[-1]:
            continue
        # Sessions spanning midnight into the next day, on both sensors.
        logs.session("sensor-a", f"mid{n}", mapped[0], ts(day, 23, 59, 30), events=4)
        logs.session("sensor-b", f"mid{n}", mapped[1], ts(day, 23, 59, 50), events=3)
    logs.session("sensor-b", "mapped-v6", "::ffff:45.10.0.1", ts(DAYS[1], 8))
    logs.raw("sensor-a", DAYS[2], b'{"eventid": "cowrie.session.connect", "src_ip": "45.1')
    logs.write(gzip_days=(DAYS[3],))


@pytest.fixture
def week(pipeline: Pipeline, logs: CowrieLogs) -> Pipeline:
    write_week(logs)
    return pipeline


def stored_sessions(pipeline: Pipeline) -> pd.DataFrame:
    return pipeline.table("sessions")


def inject_failure(pipeline: Pipeline, table: str) -> None:
    """A real database error raised by the database itself on the next insert into ``table``."""
    if pipeline.backend == "sqlite":
        pipeline.execute(
            f"CREATE TRIGGER injected_failure BEFORE INSERT ON {table} "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    else:
        pipeline.execute(
            "CREATE FUNCTION injected_failure() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
            f"CREATE TRIGGER injected_failure BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION injected_failure()",
        )


def remove_failure(pipeline: Pipeline, table: str) -> None:
    if pipeline.backend == "sqlite":
        pipeline.execute("DROP TRIGGER injected_failure")
    else:
        pipeline.execute(
            f"DROP TRIGGER injected_failure ON {table}", "DROP FUNCTION injected_failure()"
        )


def test_counters_equal_a_recomputation_from_the_logs(week: Pipeline):
    week.run(*DAYS)

    sessions = stored_sessions(week)
    expected = oracle.sessions_from_files(week.landing)
    key = ["sensor", "session_id", "ingest_date"]
    merged = expected.merge(sessions, on=key, how="outer", suffixes=("_x", ""), indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"]
    for column in ("first_event_at", "last_event_at", "event_count", "src_ip"):
        assert (merged[f"{column}_x"] == merged[column]).all(), column

    ips = week.table("ip_inventory").set_index("ip_address")
    counters = oracle.ip_counters(sessions)
    assert set(ips.index) == set(counters.index)
    pd.testing.assert_frame_equal(
        ips.loc[counters.index, counters.columns], counters, check_names=False, check_dtype=False
    )

    asns = week.table("asn_inventory").set_index("asn_number")
    expected_asns = oracle.asn_counters(week.table("ip_inventory"))
    pd.testing.assert_frame_equal(
        asns.loc[expected_asns.index, expected_asns.columns],
        expected_asns,
        check_names=False,
        check_dtype=False,
    )
    assert (asns.drop(index=expected_asns.index)["unique_ip_count"] == 0).all()

    stats = week.table("asn_daily_stats").set_index(["stat_date", "asn_number"]).sort_index()
    expected_stats = oracle.daily_stats(sessions).sort_index()
    pd.testing.assert_frame_equal(stats, expected_stats, check_names=False, check_dtype=False)
    assert stats["session_count"].sum() > 0 and stats["new_ip_count"].sum() > 0
    for queue in ("stale_ips", "stale_asn_deltas", "stale_days"):
        assert week.table(queue).empty, queue


def test_the_checks_catch_a_derived_value_nobody_queued(week: Pipeline):
    week.run(*DAYS)
    week.execute(
        "UPDATE ip_inventory SET session_count = session_count + 1 WHERE ip_address = '45.10.0.1'",
        f"UPDATE asn_daily_stats SET new_ip_count = new_ip_count + 5 "
        f"WHERE stat_date = '{DAYS[2].isoformat()}'",
    )

    # asn_statistics recomputes only what is queued, so the corruption stays for its checks.
    [result] = week.run(DAYS[2], assets=["asn_statistics"], raise_on_error=False)

    # The address and ASN counters are checked with ip_inventory and asn_inventory, which this
    # run does not materialise (test_checks.py runs all the checks on such corruptions).
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {"daily_statistics_match_sessions"}
    check = evaluations["daily_statistics_match_sessions"]
    assert not check.passed
    metadata = {k: v.value for k, v in check.metadata.items()}
    assert metadata["day_statistics"] >= 1
    assert metadata["pending_stale_keys"] == 0


def checksums(pipeline: Pipeline) -> dict[str, tuple[int, str]]:
    inventory = Inventory(pipeline.db_url)
    try:
        return table_checksums(inventory)
    finally:
        inventory.dispose()


def test_rerunning_a_partition_changes_nothing(week: Pipeline):
    week.run(*DAYS)
    before, before_sums = week.snapshot(), checksums(week)

    week.run(DAYS[2], DAYS[2], DAYS[0], *DAYS)

    assert week.snapshot() == before
    assert checksums(week) == before_sums
    week.execute("UPDATE asn_inventory SET organization_name = 'changed' WHERE asn_number = 64496")
    changed = checksums(week)
    assert changed["asn_inventory"] != before_sums["asn_inventory"]
    assert changed["sessions"] == before_sums["sessions"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_partitions_in_any_order_match_the_in_order_pass(
    week: Pipeline, tmp_path, monkeypatch, request, seed
):
    week.run(*DAYS)
    in_order = week.snapshot()

    shuffled = week.other(request, tmp_path, f"shuffled-{seed}")
    monkeypatch.setenv("ASN_PIPELINE_DB_URL", shuffled.db_url)
    order = list(DAYS) + random.Random(seed).sample(DAYS, 3)
    random.Random(seed).shuffle(order)
    shuffled.run(*order)

    assert shuffled.snapshot() == in_order


def test_backfilling_days_newest_first_matches_the_in_order_pass(
    week: Pipeline, tmp_path, monkeypatch, request
):
    week.run(*DAYS)
    in_order = week.snapshot()

    backwards = week.other(request, tmp_path, "backwards")
    monkeypatch.setenv("ASN_PIPELINE_DB_URL", backwards.db_url)
    backwards.run(*reversed(DAYS))

    assert backwards.snapshot() == in_order


def test_session_spanning_midnight_is_one_row_owned_by_its_first_day(pipeline: Pipeline, logs):
    first, second = DAYS[0], DAYS[1]
    logs.session("sensor-a", "overnight", "45.10.0.9", ts(first, 23, 59, 0), events=6)  # 2 min
    logs.session("sensor-a", "daytime", "45.10.0.9", ts(second, 10))
    logs.write()

    pipeline.run(second)  # the later day first: the session is only partly known
    partial = stored_sessions(pipeline).set_index("session_id").loc["overnight"]
    assert partial["ingest_date"] == second.isoformat() and partial["event_count"] == 3
    assert pipeline.table("session_fragments").empty  # sessions of one day: their rows alone

    pipeline.run(first, second, first)
    sessions = stored_sessions(pipeline).set_index("session_id")
    overnight = sessions.loc["overnight"]
    assert len(sessions) == 2
    assert overnight["ingest_date"] == first.isoformat()
    assert overnight["event_count"] == 6
    assert overnight["first_event_at"] == ts(first, 23, 59, 0)
    assert overnight["last_event_at"] == ts(first, 23, 59, 0) + dt.timedelta(seconds=100)
    fragments = pipeline.table("session_fragments")
    assert sorted(fragments["fragment_date"]) == [first.isoformat(), second.isoformat()]
    assert set(fragments["session_id"]) == {"overnight"}
    assert fragments["event_count"].sum() == 6

    stats = pipeline.table("asn_daily_stats").set_index("stat_date")
    assert stats.loc[first.isoformat(), "session_count"] == 1
    assert stats.loc[second.isoformat(), "session_count"] == 1
    assert stats.loc[first.isoformat(), "new_ip_count"] == 1
    assert stats.loc[second.isoformat(), "new_ip_count"] == 0
    ip = pipeline.table("ip_inventory").set_index("ip_address").loc["45.10.0.9"]
    assert ip["session_count"] == 2


def test_backfilling_an_earlier_day_takes_new_ip_count_from_the_later_day(pipeline: Pipeline, logs):
    logs.session("sensor-a", "early", "45.11.0.1", ts(DAYS[0], 9))
    logs.session("sensor-a", "late", "45.11.0.1", ts(DAYS[3], 9))
    logs.write()

    pipeline.run(DAYS[3])
    late = pipeline.table("asn_daily_stats").set_index("stat_date").loc[DAYS[3].isoformat()]
    assert late["new_ip_count"] == 1

    pipeline.run(DAYS[0])
    stats = pipeline.table("asn_daily_stats").set_index("stat_date")
    assert stats.loc[DAYS[3].isoformat(), "new_ip_count"] == 0
    assert stats.loc[DAYS[0].isoformat(), "new_ip_count"] == 1
    assert stats.loc[DAYS[3].isoformat(), "unique_ip_count"] == 1


def test_every_asn_reference_exists_in_asn_inventory(week: Pipeline):
    week.run(*DAYS)
    if week.backend == "sqlite":
        with sqlite3.connect(week.db_url.removeprefix("sqlite:///")) as conn:
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    asns = set(week.table("asn_inventory")["asn_number"])
    assert set(week.table("ip_inventory")["current_asn"].dropna().astype(int)) <= asns
    assert set(week.table("sessions")["asn_number"].dropna().astype(int)) <= asns
    assert week.table("sessions")["asn_number"].notna().sum() > 0


@pytest.mark.parametrize(
    ("table", "step", "upstream"),
    [
        # In a run of the daily job the inventory step writes the day with its lookups.
        ("session_fragments", "inventory.upsert_inventory", []),
        ("ip_inventory", "inventory.upsert_inventory", ["cowrie_sessions"]),
        ("asn_daily_stats", "asn_statistics", ["cowrie_sessions", "ip_inventory", "asn_inventory"]),
    ],
)
def test_a_failure_mid_write_leaves_the_previous_state(week: Pipeline, table, step, upstream):
    week.run(*DAYS[:3])
    if upstream:
        week.run(DAYS[3], assets=upstream)
    before = week.snapshot()
    inject_failure(week, table)  # on a row the step writes after its other writes

    [result] = week.run(DAYS[3], raise_on_error=False)

    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == [step]
    assert "injected failure" in str(failures[0].event_specific_data.error)
    assert week.snapshot() == before

    remove_failure(week, table)
    week.run(DAYS[3], DAYS[4])
    recovered = week.snapshot()
    week.run(*DAYS)
    assert week.snapshot() == recovered


def test_bogons_are_classified_and_never_looked_up(pipeline: Pipeline, logs, mmdb_files):
    # The ASN database even claims the private and CGNAT ranges: they must still not be enriched.
    write_asn_mmdb(
        mmdb_files["asn"],
        [
            *NETWORKS,
            Network("10.0.0.0/8", 64510, "Bogus", "ZZ"),
            Network("100.64.0.0/10", 64511, "Bogus", "ZZ"),
        ],
    )
    for i, ip in enumerate(BOGONS):
        logs.session("sensor-a", f"b{i}", ip, ts(DAYS[0], 5))
    logs.session("sensor-a", "anycast", "192.0.0.9", ts(DAYS[0], 5))  # globally reachable
    logs.write()

    pipeline.run(DAYS[0])

    ips = pipeline.table("ip_inventory").set_index("ip_address")
    for ip, ip_class in BOGONS.items():
        row = ips.loc[ip]
        assert row["ip_class"] == ip_class
        assert row["asn_source"] == "bogon"
        assert pd.isna(row["current_asn"])
        assert "maxmind_asn" not in row["enrichment"]
        assert row["session_count"] == 1
    assert ips.loc["192.0.0.9", "ip_class"] == "global"
    assert 64510 not in set(pipeline.table("asn_inventory")["asn_number"])


def test_each_address_records_where_its_asn_came_from(week: Pipeline, mmdb_files):
    [result, *_] = week.run(*DAYS)
    import maxminddb

    with maxminddb.open_database(str(mmdb_files["asn"])) as reader:
        build_epoch = reader.metadata().build_epoch
    ips = week.table("ip_inventory").set_index("ip_address")

    mapped = ips.loc["45.10.0.1"]
    assert mapped["asn_source"] == "maxmind" and mapped["current_asn"] == 64496
    assert mapped["build_epoch"] == build_epoch
    enrichment = mapped["enrichment"]
    assert enrichment["maxmind_asn"] == {
        "database_type": "GeoLite2-ASN",
        "build_epoch": build_epoch,
        "network": "45.10.0.0/16",
    }
    assert enrichment["maxmind_city"]["country"] == "NL"
    assert mapped["country_code"] == "NL"
    runs = {r.run_id for r in week.instance.get_runs()}
    assert set(ips["enriched_by_run"]) <= runs

    unmapped = ips.loc[UNMAPPED_IP]
    assert unmapped["asn_source"] == "none" and pd.isna(unmapped["current_asn"])
    assert ips.loc["2a01:1000::5", "current_asn"] == 64499
    assert set(ips["asn_source"]) == {"maxmind", "none", "bogon"}

    history = week.table("ip_asn_history")
    assert set(history["ip_address"]) == set(ips.index[ips["current_asn"].notna()])
    assert (history["source"] == "maxmind").all()

    asns = week.table("asn_inventory").set_index("asn_number")
    assert asns.loc[64496, "organization_name"] == "Example Hosting A"
    assert asns.loc[64496, "organization_country"] == "NL"


def test_ipv4_mapped_ipv6_is_stored_as_ipv4(week: Pipeline):
    week.run(*DAYS)
    sessions = week.table("sessions").set_index("session_id")
    assert sessions.loc["mapped-v6", "src_ip"] == "45.10.0.1"
    assert not week.table("ip_inventory")["ip_address"].str.startswith("::ffff:").any()


def test_a_new_asn_database_moves_addresses_and_their_counters(
    pipeline: Pipeline, logs, mmdb_files
):
    logs.session("sensor-a", "one", "45.10.0.1", ts(DAYS[0], 1))
    logs.session("sensor-a", "two", "45.10.0.1", ts(DAYS[0], 2))
    logs.session("sensor-a", "three", "45.10.0.2", ts(DAYS[0], 3))
    logs.write()
    pipeline.run(DAYS[0])

    moved = [*NETWORKS, Network("45.10.0.0/24", 64497, "Example Telecom B", "SG")]  # later wins
    write_asn_mmdb(mmdb_files["asn"], moved)
    pipeline.run(DAYS[0])

    asns = pipeline.table("asn_inventory").set_index("asn_number")
    assert asns.loc[64496, ["unique_ip_count", "total_session_count"]].tolist() == [0, 0]
    assert asns.loc[64497, ["unique_ip_count", "total_session_count"]].tolist() == [2, 3]
    history = pipeline.table("ip_asn_history")
    assert sorted(history.loc[history["ip_address"] == "45.10.0.1", "asn_number"]) == [64496, 64497]
    stats = pipeline.table("asn_daily_stats").set_index("asn_number")
    assert 64496 not in stats.index and stats.loc[64497, "session_count"] == 3


def test_rerun_after_a_file_changed_drops_what_is_no_longer_there(pipeline: Pipeline, logs):
    logs.session("sensor-a", "kept", "45.10.0.1", ts(DAYS[0], 1))
    logs.session("sensor-a", "dropped", "45.11.0.1", ts(DAYS[0], 2))
    logs.write()
    pipeline.run(DAYS[0])
    assert len(pipeline.table("ip_inventory")) == 2

    logs.lines.clear()
    logs.session("sensor-a", "kept", "45.10.0.1", ts(DAYS[0], 1))
    logs.write()
    [refused] = pipeline.run(DAYS[0], raise_on_error=False)  # the file holds less than it did
    assert not refused.success and len(pipeline.table("sessions")) == 2
    pipeline.run(DAYS[0], ops={"cowrie_sessions": {"config": {"allow_shrink": True}}})

    assert pipeline.table("sessions")["session_id"].tolist() == ["kept"]
    assert pipeline.table("ip_inventory")["ip_address"].tolist() == ["45.10.0.1"]
    asns = pipeline.table("asn_inventory").set_index("asn_number")
    assert asns.loc[64497, "unique_ip_count"] == 0
    assert 64497 not in set(pipeline.table("asn_daily_stats")["asn_number"])
