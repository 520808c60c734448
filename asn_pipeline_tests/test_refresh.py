"""The inventory refresh (issue #10, item 3): two real .mmdb builds that disagree on some
addresses, real Dagster runs of the daily job and of ``refresh_inventory``, SQLite and PostgreSQL,
and a real DNS server for Team Cymru's answers past their TTL."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import dagster as dg
import maxminddb
import pandas as pd
import pytest

from asn_pipeline.defs.automation.refresh import REFRESH_JOB
from asn_pipeline.demo import Network, write_asn_mmdb, write_city_mmdb
from asn_pipeline_tests.conftest import (
    NETWORKS,
    UNMAPPED_IP,
    CowrieLogs,
    Pipeline,
    assert_exact,
    ts,
)
from asn_pipeline_tests.dns_server import CymruDnsServer
from asn_pipeline_tests.test_invariants import remove_failure

DAYS = (dt.date(2026, 11, 18), dt.date(2026, 11, 19), dt.date(2026, 11, 20))
BUILD_A, BUILD_B = 1_790_000_000, 1_795_000_000
# Build B disagrees with build A (conftest's NETWORKS): half of 45.10/16 moves to a new ASN,
# 45.11/16 to an existing one, 45.12/16 is gone, 198.60/16 is new; the IPv6 network stays.
NETWORKS_B = [
    Network("45.10.0.0/16", 64496, "Example Hosting A", "NL"),
    Network("45.10.128.0/17", 64500, "Example Transit E", "NL"),  # inserted later: wins
    Network("45.11.0.0/16", 64496, "Example Hosting A", "SG"),
    Network("2a01:1000::/32", 64499, "Example IPv6 D", "DE"),
    Network("198.60.0.0/16", 64501, "Example Newcomer F", "US"),
]
# Address -> (ASN in build A, ASN in build B).
ADDRESSES = {
    "45.10.0.1": (64496, 64496),
    "45.10.200.7": (64496, 64500),
    "45.11.0.5": (64497, 64496),
    "45.11.3.3": (64497, 64496),
    "45.12.0.9": (64498, None),
    "2a01:1000::5": (64499, 64499),
    UNMAPPED_IP: (None, 64501),
}
CHANGED = [ip for ip, (a, b) in ADDRESSES.items() if a != b]
BOGONS = ("192.168.1.5", "10.0.0.1")
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
_METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"


def pin_build_epoch(path: Path, epoch: int) -> None:
    """Set the ``build_epoch`` of a written ``.mmdb`` (mmdb-writer stamps the time of writing).

    In the metadata map (after the last marker, MaxMind DB spec 2.0) the key is a 11-byte UTF-8
    string and its value a uint64 (extended type 9: a control byte with the size, then 9 - 7),
    big-endian in as many bytes as it needs; the new value takes the same number of bytes.
    """
    data = bytearray(path.read_bytes())
    start = data.rindex(_METADATA_MARKER) + len(_METADATA_MARKER)
    key = data.index(b"\x4bbuild_epoch", start) + 12
    size, extended = data[key], data[key + 1]
    assert extended == 9 - 7 and epoch.bit_length() <= 8 * size
    data[key + 2 : key + 2 + size] = epoch.to_bytes(size, "big")
    path.write_bytes(bytes(data))
    with maxminddb.open_database(str(path)) as reader:
        assert reader.metadata().build_epoch == epoch


def write_build(path: Path, networks: list[Network], epoch: int) -> None:
    write_asn_mmdb(path, networks)
    pin_build_epoch(path, epoch)


def attack(logs: CowrieLogs) -> None:
    """Every address on the three days, some more than once, one session across midnight."""
    n = 0
    for d, day in enumerate(DAYS):
        for i, ip in enumerate([*ADDRESSES, *BOGONS]):
            for k in range(1 + (i + d) % 2):
                n += 1
                logs.session("sensor-a", f"s{n:04d}", ip, ts(day, 2 + i, 10 * k), events=2)
    logs.session("sensor-b", "midnight", "45.11.0.5", ts(DAYS[0], 23, 59, 40), events=3)
    logs.write()


@pytest.fixture
def built_a(pipeline: Pipeline, logs: CowrieLogs, mmdb_files) -> Pipeline:
    """Three days materialised with build A, then build B in place of the ASN database."""
    write_build(mmdb_files["asn"], NETWORKS, BUILD_A)
    attack(logs)
    pipeline.run(*DAYS)
    write_build(mmdb_files["asn"], NETWORKS_B, BUILD_B)
    return pipeline


def refresh(
    pipeline: Pipeline, *, raise_on_error: bool = True, **ops: dict
) -> dg.ExecuteInProcessResult:
    job = pipeline.definitions().resolve_job_def(REFRESH_JOB)
    run_config = {**QUIET, "ops": {name: {"config": c} for name, c in ops.items()}}
    return job.execute_in_process(
        instance=pipeline.instance, run_config=run_config, raise_on_error=raise_on_error
    )


def observed(result: dg.ExecuteInProcessResult, asset: str = "ip_inventory") -> dict:
    [observation] = [
        o
        for o in result.asset_observations_for_node("report_refresh")
        if o.asset_key.path == [asset]
    ]
    return {key: value.value for key, value in observation.metadata.items()}


def addresses(pipeline: Pipeline) -> pd.DataFrame:
    return pipeline.table("ip_inventory").set_index("ip_address")


def test_a_new_build_moves_addresses_their_history_and_counters_exactly(built_a: Pipeline):
    before = {t: built_a.table(t) for t in ("sessions", "asn_daily_stats", "ip_inventory")}
    bogon_rows = before["ip_inventory"].set_index("ip_address").loc[list(BOGONS)]

    result = refresh(built_a)

    metadata = observed(result)
    print(
        f"\n[{built_a.backend}] refresh after build {BUILD_A} -> {BUILD_B}: "
        f"{metadata['addresses_relooked_up']} addresses looked up again, "
        f"{metadata['asn_changes']} ASN changes, "
        f"{metadata['asns_with_moved_counters']} ASNs whose counters moved, "
        f"{metadata['batches']} batch(es), {metadata['seconds']} s"
    )
    assert metadata["addresses_relooked_up"] == len(ADDRESSES)  # every global one, no bogon
    assert metadata["asn_changes"] == len(CHANGED) == 5
    assert metadata["asns_with_moved_counters"] == 5  # 64496-64498, 64500, 64501
    assert metadata["maxmind_asn_build"] == f"{BUILD_A} ({len(ADDRESSES)}) -> {BUILD_B}"
    assert metadata["batches"] == 1 and metadata["cymru"] == "off"
    assert observed(result, "asn_inventory")["asn_changes"] == 5

    ips = addresses(built_a)
    for ip, (_, asn) in ADDRESSES.items():
        row = ips.loc[ip]
        assert (None if pd.isna(row["current_asn"]) else row["current_asn"]) == asn, ip
        assert row["build_epoch"] == BUILD_B
        assert row["enrichment"]["maxmind_asn"]["build_epoch"] == BUILD_B
        assert row["asn_source"] == ("none" if asn is None else "maxmind")
    assert ips.loc["45.12.0.9", "enrichment"]["maxmind_asn"]["network"] is None
    pd.testing.assert_frame_equal(ips.loc[list(BOGONS)], bogon_rows)  # never looked up

    history = built_a.table("ip_asn_history")
    rows = set(
        zip(history["ip_address"], history["asn_number"], history["build_epoch"], strict=True)
    )
    for ip in CHANGED:
        old, new = ADDRESSES[ip]
        if old is not None:
            assert (ip, old, BUILD_A) in rows, ip  # the earlier mapping stays
        if new is not None:
            assert (ip, new, BUILD_B) in rows, ip
    assert len(history) == 6 + 4  # build A's 6 mapped addresses, then the 4 new mappings

    asns = built_a.table("asn_inventory").set_index("asn_number")
    counts = asns[["unique_ip_count", "total_session_count"]]
    assert counts.loc[64498].tolist() == [0, 0]  # all its addresses left
    assert counts.loc[64497].tolist() == [0, 0]
    assert asns.loc[64500, "organization_name"] == "Example Transit E"
    assert counts.loc[64501, "unique_ip_count"] == 1
    assert counts.loc[64496, "unique_ip_count"] == 3
    assert_exact(built_a)
    # sessions.asn_number stays the snapshot of the day each session was processed.
    pd.testing.assert_frame_equal(built_a.table("sessions"), before["sessions"])
    pd.testing.assert_frame_equal(built_a.table("asn_daily_stats"), before["asn_daily_stats"])


def test_a_second_refresh_changes_nothing(built_a: Pipeline):
    refresh(built_a)
    state = {t: built_a.table(t) for t in ("ip_inventory", "asn_inventory", "ip_asn_history")}

    again = refresh(built_a)

    metadata = observed(again)
    assert (metadata["addresses_relooked_up"], metadata["asn_changes"], metadata["batches"]) == (
        0,
        0,
        0,
    )
    assert metadata["maxmind_asn_build"] == f"{BUILD_B} (no address from another build)"
    for table, rows in state.items():  # provenance included: nothing was written
        pd.testing.assert_frame_equal(built_a.table(table), rows)


def test_small_batches_give_the_state_of_one_batch(
    built_a: Pipeline, mmdb_files, request, tmp_path, monkeypatch
):
    one = built_a.other(request, tmp_path, "one_batch")
    monkeypatch.setenv("ASN_PIPELINE_DB_URL", one.db_url)
    write_build(mmdb_files["asn"], NETWORKS, BUILD_A)
    one.run(*DAYS)
    write_build(mmdb_files["asn"], NETWORKS_B, BUILD_B)
    metadata = observed(refresh(one))
    monkeypatch.setenv("ASN_PIPELINE_DB_URL", built_a.db_url)

    batched = observed(refresh(built_a, relookup_other_builds={"batch_size": 2}))

    assert metadata["batches"] == 1
    assert batched["batches"] == math.ceil(len(ADDRESSES) / 2)
    for key in ("addresses_relooked_up", "asn_changes", "asns_with_moved_counters"):
        assert batched[key] == metadata[key], key
    assert built_a.snapshot() == one.snapshot()
    assert_exact(built_a)


def fail_history_of(pipeline: Pipeline, ip: str) -> None:
    """A real database error on the next write of ``ip``'s ASN history."""
    if pipeline.backend == "sqlite":
        pipeline.execute(
            "CREATE TRIGGER injected_failure BEFORE INSERT ON ip_asn_history "
            f"WHEN NEW.ip_address = '{ip}' BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    else:
        pipeline.execute(
            "CREATE FUNCTION injected_failure() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
            "CREATE TRIGGER injected_failure BEFORE INSERT ON ip_asn_history FOR EACH ROW "
            f"WHEN (NEW.ip_address = '{ip}') EXECUTE FUNCTION injected_failure()",
        )


def test_a_failed_batch_leaves_the_committed_ones_exact_and_the_next_refresh_ends_it(
    built_a: Pipeline,
):
    fail_history_of(built_a, "45.11.3.3")

    failed = refresh(built_a, raise_on_error=False, relookup_other_builds={"batch_size": 2})

    assert not failed.success
    builds = addresses(built_a).loc[list(ADDRESSES), "build_epoch"]
    committed = int((builds == BUILD_B).sum())
    assert 0 < committed < len(ADDRESSES) and builds["45.11.3.3"] == BUILD_A
    assert_exact(built_a)  # after every batch's commit, not only at the end

    remove_failure(built_a, "ip_asn_history")
    done = observed(refresh(built_a, relookup_other_builds={"batch_size": 2}))

    assert done["addresses_relooked_up"] == len(ADDRESSES) - committed
    ips = addresses(built_a)
    assert (ips.loc[list(ADDRESSES), "build_epoch"] == BUILD_B).all()
    assert ips.loc["45.11.3.3", "current_asn"] == 64496
    assert_exact(built_a)


def test_every_address_is_looked_up_again_on_request(built_a: Pipeline):
    refresh(built_a)

    metadata = observed(refresh(built_a, relookup_other_builds={"only_older_builds": False}))

    assert metadata["addresses_relooked_up"] == len(ADDRESSES) and metadata["asn_changes"] == 0
    assert_exact(built_a)


def test_a_new_city_build_alone_refreshes_countries(built_a: Pipeline, mmdb_files):
    refresh(built_a)
    moved = [Network(n.cidr, n.asn_number, n.organization_name, "JP") for n in NETWORKS_B]
    write_city_mmdb(mmdb_files["city"], moved)
    pin_build_epoch(mmdb_files["city"], BUILD_B + 1)

    metadata = observed(refresh(built_a))

    assert metadata["addresses_relooked_up"] == len(ADDRESSES) and metadata["asn_changes"] == 0
    assert metadata["maxmind_city_build"].endswith(f"-> {BUILD_B + 1}")
    ips = addresses(built_a)
    assert set(ips.loc[list(ADDRESSES), "country_code"].dropna()) == {"JP"}
    assert ips.loc["45.10.0.1", "enrichment"]["maxmind_city"]["build_epoch"] == BUILD_B + 1
    asns = built_a.table("asn_inventory").set_index("asn_number")
    assert asns.loc[64496, "organization_country"] == "JP"
    assert_exact(built_a)


def evaluate(pipeline: Pipeline, cursor: str | None):
    definitions = pipeline.definitions()
    sensor = definitions.resolve_sensor_def("maxmind_update_sensor")
    with dg.build_sensor_context(
        instance=pipeline.instance, cursor=cursor, resources=definitions.resources
    ) as context:
        return sensor.evaluate_tick(context)


def test_the_sensor_requests_one_refresh_per_build_change(
    pipeline: Pipeline, logs: CowrieLogs, mmdb_files
):
    write_build(mmdb_files["asn"], NETWORKS, BUILD_A)
    city = maxminddb.open_database(str(mmdb_files["city"]))
    city_build = city.metadata().build_epoch
    city.close()
    attack(logs)
    pipeline.run(DAYS[0])

    first = evaluate(pipeline, None)  # the inventory is of the builds in place: nothing to do
    unchanged = evaluate(pipeline, first.cursor)
    write_build(mmdb_files["asn"], NETWORKS_B, BUILD_B)
    changed = evaluate(pipeline, unchanged.cursor)
    after = evaluate(pipeline, changed.cursor)
    fresh = evaluate(pipeline, None)  # a new sensor over an inventory of the older build
    cleared = evaluate(pipeline, "")  # a cursor cleared in the UI: the same

    assert first.run_requests == [] and unchanged.run_requests == []
    assert "unchanged" in unchanged.skip_message
    [request] = changed.run_requests
    assert request.run_key == f"maxmind:{BUILD_B}:{city_build}"
    assert after.run_requests == []
    for tick in (fresh, cleared):
        [request] = tick.run_requests
        assert request.run_key == f"maxmind:{BUILD_B}:{city_build}"
    definitions = pipeline.definitions()
    sensor = definitions.resolve_sensor_def("maxmind_update_sensor")
    assert sensor.job_name == REFRESH_JOB
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    schedule = definitions.resolve_schedule_def("refresh_inventory_weekly")
    assert schedule.job_name == REFRESH_JOB
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


# Team Cymru


@pytest.fixture
def cymru(pipeline: Pipeline, dns_server: CymruDnsServer, monkeypatch, mmdb_files) -> Pipeline:
    monkeypatch.setenv("ASN_PIPELINE_CYMRU", "dns")
    monkeypatch.setenv("ASN_PIPELINE_CYMRU_NAMESERVERS", dns_server.nameserver)
    monkeypatch.setenv("ASN_PIPELINE_CYMRU_QPS", "1000")
    write_build(mmdb_files["asn"], NETWORKS, BUILD_A)
    return pipeline


def one_session_each(logs: CowrieLogs, *ips: str) -> None:
    for i, ip in enumerate(ips):
        logs.session("sensor-a", f"c{i}", ip, ts(DAYS[0], i % 24), events=1)
    logs.write()


def test_cymru_answers_past_their_ttl_are_asked_again_and_fresh_ones_are_not(
    cymru: Pipeline, dns_server: CymruDnsServer, logs: CowrieLogs
):
    dns_server.route("81.7.0.0/16", 65580)
    dns_server.as_name(65580, "SEVEN - Seven")
    one_session_each(logs, "81.7.0.1", "94.2.2.2", "45.10.0.1")
    cymru.run(DAYS[0])
    dns_server.forget()

    fresh = observed(refresh(cymru))

    assert dns_server.names() == []
    assert (fresh["cymru_addresses_reasked"], fresh["addresses_relooked_up"]) == (0, 0)

    for table in ("cymru_prefixes", "cymru_unrouted"):
        cymru.execute(f"UPDATE {table} SET expires_at = fetched_at")
    dns_server.routes.clear()
    dns_server.route("81.7.0.0/16", 65581)  # routed by another AS now
    expired = observed(refresh(cymru))

    assert sorted(dns_server.origin_names()) == [
        "1.0.7.81.origin.asn.cymru.com",
        "2.2.2.94.origin.asn.cymru.com",
    ]
    assert expired["cymru_addresses_reasked"] == 2 and expired["cymru_queries_sent"] == 3
    assert expired["asn_changes"] == 1 and expired["cymru_asn_changes"] == 1
    ips = addresses(cymru)
    assert ips.loc["81.7.0.1", ["asn_source", "current_asn", "cymru_status"]].tolist() == [
        "cymru",
        65581,
        "found",
    ]
    assert ips.loc["94.2.2.2", "cymru_status"] == "unrouted"
    history = cymru.table("ip_asn_history")
    mapped = history[history["ip_address"] == "81.7.0.1"]
    assert sorted(zip(mapped["asn_number"], mapped["source"], strict=True)) == [
        (65580, "cymru"),
        (65581, "cymru"),
    ]
    assert_exact(cymru)


def test_an_address_the_new_build_drops_falls_to_team_cymru(
    cymru: Pipeline, dns_server: CymruDnsServer, logs: CowrieLogs, mmdb_files
):
    dns_server.route("45.12.0.0/16", 65590)
    one_session_each(logs, "45.12.0.9", "45.11.0.5")
    cymru.run(DAYS[0])
    assert dns_server.origin_names() == []  # covered by build A
    write_build(mmdb_files["asn"], NETWORKS_B, BUILD_B)

    metadata = observed(refresh(cymru))

    assert metadata["addresses_relooked_up"] == 2
    assert metadata["cymru_addresses_reasked"] == 1  # 45.12.0.9, uncovered now
    assert dns_server.origin_names() == ["9.0.12.45.origin.asn.cymru.com"]
    ips = addresses(cymru)
    assert ips.loc["45.12.0.9", ["asn_source", "current_asn", "build_epoch"]].tolist() == [
        "cymru",
        65590,
        BUILD_B,
    ]
    assert ips.loc["45.11.0.5", "current_asn"] == 64496
    assert_exact(cymru)


def test_with_cymru_off_an_earlier_cymru_answer_is_kept(
    cymru: Pipeline, dns_server: CymruDnsServer, logs: CowrieLogs, mmdb_files, monkeypatch
):
    dns_server.route("81.7.0.0/16", 65580)
    one_session_each(logs, "81.7.0.1", "45.12.0.9")
    cymru.run(DAYS[0])
    before = addresses(cymru).loc["81.7.0.1"]
    monkeypatch.setenv("ASN_PIPELINE_CYMRU", "off")
    dns_server.forget()
    write_build(mmdb_files["asn"], NETWORKS_B, BUILD_B)

    metadata = observed(refresh(cymru))

    assert dns_server.names() == [] and metadata["cymru"] == "off"
    assert metadata["addresses_relooked_up"] == 2 and metadata["asn_changes"] == 1  # 45.12.0.9
    row = addresses(cymru).loc["81.7.0.1"]
    columns = ["asn_source", "current_asn", "asn_network", "cymru_status"]
    assert (
        row[columns].tolist()
        == before[columns].tolist()
        == ["cymru", 65580, "81.7.0.0/16", "found"]
    )
    assert row["build_epoch"] == BUILD_B
    assert row["enrichment"]["cymru"] == before["enrichment"]["cymru"]
    assert row["enrichment"]["maxmind_asn"]["build_epoch"] == BUILD_B
    assert_exact(cymru)
