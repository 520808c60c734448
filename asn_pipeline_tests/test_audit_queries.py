"""The audit questions of docs/audit.md (issue #12, item 4), answered on inventories materialised
by real Dagster runs on SQLite and PostgreSQL, and checked against those runs, the .mmdb files,
the Dagster event log and the oracle's reading of the Cowrie files."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import maxminddb
import pandas as pd
import pytest
import sqlalchemy as sa

from asn_pipeline.demo import Network, write_asn_mmdb
from asn_pipeline.settings import PROJECT_ROOT
from asn_pipeline.store import Inventory, lineage
from asn_pipeline.store.database import query, run
from asn_pipeline_tests import oracle
from asn_pipeline_tests.conftest import NETWORKS, UNMAPPED_IP, CowrieLogs, Pipeline, ts
from asn_pipeline_tests.dns_server import CymruDnsServer
from asn_pipeline_tests.test_invariants import BOGONS, DAYS, write_week
from asn_pipeline_tests.test_refresh import pin_build_epoch

DOC = PROJECT_ROOT / "docs" / "audit.md"
LINEAGE_SQL = PROJECT_ROOT / "asn_pipeline" / "sql" / "queries" / "lineage.sql"
# One value for each parameter the queries take, all present in the audited inventory.
PARAMETERS = {
    "ip_address": "45.10.0.1",
    "asn_number": 64496,
    "day": DAYS[1],
    "sensor": "sensor-a",
    "session_id": "reused",
}
NEW_BUILD = 1_799_000_000


@dataclass
class Audited:
    """Five materialised days (test_invariants' week and an id reused after a gap)."""

    pipeline: Pipeline
    inventory: Inventory
    runs: dict[dt.date, str]  # day -> the run id of its materialisation
    mmdb_files: dict[str, Path]

    def last_lookup_run(self, ip: str) -> str:
        """The run of the last day with a part of a session of ``ip``: the last run that looked
        it up."""
        parts = self.pipeline.table("session_parts")
        days = parts.loc[parts["src_ip"] == ip, "fragment_date"]
        return self.runs[dt.date.fromisoformat(days.max())]


@pytest.fixture
def audited(pipeline: Pipeline, logs: CowrieLogs, mmdb_files) -> Audited:
    write_week(logs)
    logs.session("sensor-a", "reused", "45.11.2.3", ts(DAYS[0], 6))
    logs.session("sensor-a", "reused", "45.12.2.3", ts(DAYS[3], 6))  # the same id, days later
    logs.write(gzip_days=(DAYS[3],))
    results = pipeline.run(*DAYS)
    inventory = Inventory(pipeline.db_url)
    runs = {day: result.run_id for day, result in zip(DAYS, results, strict=True)}
    yield Audited(pipeline, inventory, runs, mmdb_files)
    inventory.dispose()


def mmdb_answer(path: Path, ip: str) -> tuple[dict | None, str, int]:
    """What the .mmdb file says about ``ip``: record, network, build_epoch."""
    with maxminddb.open_database(str(path)) as reader:
        record, prefix_len = reader.get_with_prefix_len(ip)
        network = ipaddress.ip_network(f"{ip}/{prefix_len}", strict=False).compressed
        return record, network, reader.metadata().build_epoch


def oracle_sessions(pipeline: Pipeline) -> pd.DataFrame:
    """Sessions as the Cowrie files say, with the ASN conftest's networks give their address."""
    sessions = oracle.sessions_from_files(pipeline.landing)
    networks = [(ipaddress.ip_network(n.cidr), n.asn_number) for n in NETWORKS]
    sessions["asn"] = [
        next((asn for net, asn in networks if ipaddress.ip_address(ip) in net), None)
        for ip in sessions["src_ip"]
    ]
    return sessions


def latest_materialization(instance: dg.DagsterInstance, asset: str, day: dt.date):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[day.isoformat()]),
        limit=1,
    ).records
    return records[0].event_log_entry


def test_why_address_in_asn_gives_the_row_the_mmdb_file_and_the_run_that_wrote_it(
    audited: Audited,
):
    stored = audited.pipeline.table("ip_inventory").set_index("ip_address")
    for ip in stored.index:
        why = lineage.why_address_in_asn(audited.inventory, ip)
        row = stored.loc[ip]
        assert why["current_asn"] == (None if row.isna()["current_asn"] else row["current_asn"])
        assert (why["asn_source"], why["enriched_by_run"]) == (
            row["asn_source"],
            audited.last_lookup_run(ip),
        )
        assert why["enriched_at"] == row["enriched_at"]
        if ip in BOGONS:
            assert (why["asn_source"], why["build_epoch"], why["history"]) == ("bogon", None, [])
            assert why["enrichment"] == {
                "bogon": {"ip_class": BOGONS[ip], "registry": "iana-special-purpose"}
            }
            continue
        record, network, build = mmdb_answer(audited.mmdb_files["asn"], ip)
        assert why["build_epoch"] == build and why["maxmind_database_type"] == "GeoLite2-ASN"
        assert why["enrichment"]["maxmind_asn"]["build_epoch"] == build
        if ip == UNMAPPED_IP:
            assert record is None and why["asn_source"] == "none" and why["history"] == []
            continue
        assert why["current_asn"] == record["autonomous_system_number"]
        assert why["organization_name"] == record["autonomous_system_organization"]
        assert (why["asn_source"], why["asn_network"], why["mapping_build_epoch"]) == (
            "maxmind",
            network,
            build,
        )
        assert why["cymru_prefix"] is None and why["other_mappings"] == 0
        [history] = why["history"]
        assert (history["asn_number"], history["is_current"]) == (why["current_asn"], 1)
        assert history["first_observed"] == why["mapping_first_observed"] <= why["enriched_at"]
        assert history["last_observed"] == why["mapping_last_observed"] == why["enriched_at"]

    # The form the logs wrote it in finds the canonical row.
    mapped = lineage.why_address_in_asn(audited.inventory, "::ffff:45.10.0.1")
    assert mapped["ip_address"] == "45.10.0.1"
    assert lineage.why_address_in_asn(audited.inventory, "203.0.113.250") is None


def test_the_run_in_the_row_is_the_one_the_ui_shows_for_its_partition(audited: Audited):
    instance = audited.pipeline.instance
    build = mmdb_answer(audited.mmdb_files["asn"], "45.10.0.1")[2]
    for day, run_id in audited.runs.items():
        event = latest_materialization(instance, "ip_inventory", day)
        assert event.run_id == run_id
        assert instance.get_run_by_id(run_id).tags["dagster/partition"] == day.isoformat()
        assert event.asset_materialization.metadata["maxmind_build_epoch"].value == build
    provenance = lineage.address_provenance(audited.inventory, "45.10.0.1")
    day = provenance["last_session_day"]
    event = latest_materialization(instance, "ip_inventory", day)
    assert provenance["enriched_by_run"] == event.run_id
    assert (
        provenance["build_epoch"]
        == event.asset_materialization.metadata["maxmind_build_epoch"].value
    )


def observe_asn_database(pipeline: Pipeline) -> None:
    """Observe the source maxmind_asn_db, as its page's Observe button does."""
    job = pipeline.definitions().resolve_implicit_global_asset_job_def()
    job.execute_in_process(
        instance=pipeline.instance,
        asset_selection=[dg.AssetKey("maxmind_asn_db")],
        run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
    )


def test_the_materialisation_records_the_observed_build_the_rows_hold(
    pipeline: Pipeline, logs: CowrieLogs, mmdb_files
):
    logs.session("sensor-a", "s1", "45.10.0.1", ts(DAYS[0], 9))
    logs.write()
    inventory = Inventory(pipeline.db_url)
    try:
        for build in (1_790_000_000, NEW_BUILD):
            pin_build_epoch(mmdb_files["asn"], build)
            observe_asn_database(pipeline)
            [result] = pipeline.run(DAYS[0])
            event = latest_materialization(pipeline.instance, "ip_inventory", DAYS[0])
            tags = event.asset_materialization.tags
            why = lineage.why_address_in_asn(inventory, "45.10.0.1")
            assert (why["build_epoch"], why["enriched_by_run"]) == (build, result.run_id)
            assert tags["dagster/input_data_version/maxmind_asn_db"] == str(build)
            assert event.run_id == result.run_id
    finally:
        inventory.dispose()


def test_asn_first_appearance_is_the_oracles_first_session_and_the_run_that_first_mapped_it(
    audited: Audited,
):
    sessions = oracle_sessions(audited.pipeline)
    build = mmdb_answer(audited.mmdb_files["asn"], "45.10.0.1")[2]
    for network in NETWORKS:
        own = sessions[sessions["asn"] == network.asn_number]
        first = lineage.asn_first_appearance(audited.inventory, network.asn_number)
        first_day = dt.date.fromisoformat(own["ingest_date"].min())
        assert first["first_session_day"] == first_day
        assert first["first_session_at"] == first["first_seen"] == own["first_event_at"].min()
        assert first["last_seen"] == own["last_event_at"].max()
        assert ipaddress.ip_address(first["first_mapped_address"]) in ipaddress.ip_network(
            network.cidr
        )
        assert first["first_mapped_address"] in set(
            own.loc[own["ingest_date"] == str(first_day), "src_ip"]
        )
        assert (first["first_mapped_source"], first["first_mapping_build_epoch"]) == (
            "maxmind",
            build,
        )
        assert first["first_mapped_by_run"] == first["updated_by_run"] == audited.runs[first_day]
        assert first["first_mapped_at"] == first["updated_at"]
    assert lineage.asn_first_appearance(audited.inventory, 4_200_000_000) is None


def test_a_new_build_keeps_the_old_mapping_in_the_history_and_names_the_run_that_moved_it(
    audited: Audited,
):
    # 45.10.0.1 has a fragment on the last day: a session from the day before runs past midnight.
    moved = [Network("45.10.0.0/16", 64500, "Example Transit E", "NL"), *NETWORKS[1:]]
    write_asn_mmdb(audited.mmdb_files["asn"], moved)
    pin_build_epoch(audited.mmdb_files["asn"], NEW_BUILD)
    before = lineage.why_address_in_asn(audited.inventory, "45.10.0.1")

    [rerun] = audited.pipeline.run(DAYS[-1])

    why = lineage.why_address_in_asn(audited.inventory, "45.10.0.1")
    assert (why["current_asn"], why["build_epoch"], why["enriched_by_run"]) == (
        64500,
        NEW_BUILD,
        rerun.run_id,
    )
    assert why["organization_name"] == "Example Transit E" and why["other_mappings"] == 1
    history = {h["asn_number"]: h for h in why["history"]}
    assert history[64496]["is_current"] == 0 and history[64500]["is_current"] == 1
    assert history[64496]["build_epoch"] == before["build_epoch"]
    assert history[64496]["first_observed"] == before["mapping_first_observed"]
    assert history[64500]["first_observed"] > history[64496]["last_observed"]
    first = lineage.asn_first_appearance(audited.inventory, 64500)
    assert (first["first_mapped_by_run"], first["first_mapping_build_epoch"]) == (
        rerun.run_id,
        NEW_BUILD,
    )
    assert first["first_mapped_at"] == why["mapping_first_observed"]
    # The sessions of earlier days keep the ASN of their snapshot: no daily statistics for 64500
    # before the re-run day.
    assert first["first_session_day"] == DAYS[-1]


def test_why_address_in_asn_shows_the_team_cymru_prefix_that_answered(
    pipeline: Pipeline, logs: CowrieLogs, dns_server: CymruDnsServer, monkeypatch
):
    monkeypatch.setenv("ASN_PIPELINE_CYMRU", "dns")
    monkeypatch.setenv("ASN_PIPELINE_CYMRU_NAMESERVERS", dns_server.nameserver)
    monkeypatch.setenv("ASN_PIPELINE_CYMRU_QPS", "1000")
    dns_server.route("81.7.0.0/16", 65580, country="DE", registry="ripencc")
    dns_server.as_name(65580, "SEVEN - Seven")
    logs.session("sensor-a", "c1", "81.7.0.1", ts(DAYS[0], 1))
    logs.session("sensor-a", "c2", "45.10.0.1", ts(DAYS[0], 2))
    logs.write()
    [result] = pipeline.run(DAYS[0])
    inventory = Inventory(pipeline.db_url)
    try:
        why = lineage.why_address_in_asn(inventory, "81.7.0.1")
        covered = lineage.why_address_in_asn(inventory, "45.10.0.1")
    finally:
        inventory.dispose()

    assert (why["asn_source"], why["current_asn"], why["cymru_status"]) == ("cymru", 65580, "found")
    assert why["asn_network"] == why["cymru_prefix"] == "81.7.0.0/16"
    assert (why["cymru_origin_asns"], why["cymru_registry"]) == ("65580", "ripencc")
    assert why["cymru_query_name"] == "1.0.7.81.origin.asn.cymru.com"
    assert why["cymru_raw_answer"] == ["65580 | 81.7.0.0/16 | DE | ripencc | 2010-05-17"]
    assert why["cymru_fetched_at"] < why["cymru_expires_at"]
    assert why["enrichment"]["cymru"]["query"] == why["cymru_query_name"]
    assert (why["organization_name"], why["name_source"]) == ("SEVEN - Seven", "cymru")
    assert why["enriched_by_run"] == result.run_id
    [history] = why["history"]
    assert (history["asn_number"], history["source"]) == (65580, "cymru")
    assert covered["cymru_status"] is None and covered["cymru_prefix"] is None


def test_address_provenance_names_the_run_and_both_database_builds(audited: Audited):
    sessions = oracle_sessions(audited.pipeline)
    asn_build = mmdb_answer(audited.mmdb_files["asn"], "45.10.0.1")[2]
    city_build = mmdb_answer(audited.mmdb_files["city"], "45.10.0.1")[2]
    for ip in ("45.10.0.1", "2a01:1000::5", UNMAPPED_IP, "10.0.0.1"):
        provenance = lineage.address_provenance(audited.inventory, ip)
        own = sessions[sessions["src_ip"] == ip]
        assert provenance["enriched_by_run"] == audited.last_lookup_run(ip)
        assert provenance["sessions"] == len(own)
        assert provenance["first_session_day"] == dt.date.fromisoformat(own["ingest_date"].min())
        assert provenance["last_session_day"] == dt.date.fromisoformat(own["ingest_date"].max())
        if ip == "10.0.0.1":
            assert provenance["build_epoch"] is None
            assert provenance["maxmind_city_build_epoch"] is None
            continue
        assert (provenance["build_epoch"], provenance["maxmind_database_type"]) == (
            asn_build,
            "GeoLite2-ASN",
        )
        assert (
            provenance["maxmind_city_build_epoch"],
            provenance["maxmind_city_database_type"],
        ) == (
            city_build,
            "GeoLite2-City",
        )
    first = lineage.asn_first_appearance(audited.inventory, 64496)
    provenance = lineage.address_provenance(audited.inventory, "45.10.0.1")
    assert provenance["asn_row_updated_by_run"] == first["first_mapped_by_run"]


def test_session_provenance_lists_each_fragment_and_the_run_that_read_it(audited: Audited):
    fragments = audited.pipeline.table("session_fragments")
    midnight = fragments[fragments["session_id"].str.startswith("mid")]
    sensor, session_id = midnight.iloc[0][["sensor", "session_id"]]
    rows = lineage.session_provenance(audited.inventory, sensor, session_id)

    days = [r["fragment_date"] for r in rows]
    assert len(days) == 2 and days[1] - days[0] == dt.timedelta(days=1)
    assert {r["ingest_date"] for r in rows} == {days[0]}
    assert [r["ingested_by_run"] for r in rows] == [audited.runs[d] for d in days]
    assert sum(r["fragment_event_count"] for r in rows) == rows[0]["event_count"]
    assert rows[0]["first_event_at"] == rows[0]["fragment_first_event_at"]
    assert rows[1]["last_event_at"] == rows[1]["fragment_last_event_at"]

    reused = lineage.session_provenance(audited.inventory, "sensor-a", "reused")
    assert [(r["ingest_date"], r["fragment_date"], r["src_ip"]) for r in reused] == [
        (DAYS[0], DAYS[0], "45.11.2.3"),
        (DAYS[3], DAYS[3], "45.12.2.3"),
    ]
    assert [r["asn_number"] for r in reused] == [64497, 64498]
    assert [r["ingested_by_run"] for r in reused] == [audited.runs[DAYS[0]], audited.runs[DAYS[3]]]


def test_day_provenance_lists_the_files_read_and_the_run_that_read_them(audited: Audited):
    for day in DAYS:
        files = lineage.day_provenance(audited.inventory, day)
        on_disk = sorted(
            p.relative_to(audited.pipeline.landing).as_posix()
            for p in audited.pipeline.landing.glob(f"*/cowrie.json.{day.isoformat()}*")
        )
        assert [f["source_file"] for f in files] == on_disk
        assert {f["ingested_by_run"] for f in files} == {audited.runs[day]}
        assert all(f["ingest_date"] == day and f["status"] == "ok" for f in files)
        for f in files:
            path = audited.pipeline.landing / f["source_file"]
            assert f["size_bytes"] == path.stat().st_size
    assert {f["source_file"][-3:] for f in lineage.day_provenance(audited.inventory, DAYS[3])} == {
        ".gz"
    }

    [rerun] = audited.pipeline.run(DAYS[2])
    assert {f["ingested_by_run"] for f in lineage.day_provenance(audited.inventory, DAYS[2])} == {
        rerun.run_id
    }


def test_prove_counters_equals_the_oracle_and_every_difference_is_zero(audited: Audited):
    sessions = oracle_sessions(audited.pipeline)
    for network in NETWORKS:
        own = sessions[sessions["asn"] == network.asn_number]
        proof = lineage.prove_counters(audited.inventory, network.asn_number)
        for source in ("", "ip_inventory_", "sessions_"):
            assert proof[f"{source}unique_ip_count"] == own["src_ip"].nunique()
            assert proof[f"{source}total_session_count"] == len(own)
            assert proof[f"{source}first_seen"] == own["first_event_at"].min()
            assert proof[f"{source}last_seen"] == own["last_event_at"].max()
        assert (
            proof["unique_ip_difference"],
            proof["session_difference"],
            proof["seen_differs"],
            proof["addresses_with_wrong_counters"],
            proof["queued"],
        ) == (0, 0, 0, 0, 0)
    assert lineage.counter_differences(audited.inventory) == {
        "asn_inventory": [],
        "ip_inventory": [],
        "asn_daily_stats": [],
    }


def test_prove_counters_names_every_hand_made_corruption(audited: Audited):
    stats = audited.pipeline.table("asn_daily_stats")
    deleted = stats[stats["asn_number"] == 64498].iloc[0]
    audited.pipeline.execute(
        "UPDATE asn_inventory SET total_session_count = total_session_count + 2 "
        "WHERE asn_number = 64496",
        "UPDATE ip_inventory SET session_count = session_count + 1 "
        "WHERE ip_address = '2a01:1000::5'",
        "UPDATE asn_inventory SET first_seen = last_seen WHERE asn_number = 64497",
        f"UPDATE asn_daily_stats SET new_ip_count = new_ip_count + 1 "
        f"WHERE stat_date = '{DAYS[1].isoformat()}' AND asn_number = 64497",
        f"DELETE FROM asn_daily_stats WHERE stat_date = '{deleted['stat_date']}' "
        "AND asn_number = 64498",
        f"DELETE FROM ip_inventory WHERE ip_address = '{UNMAPPED_IP}'",
    )

    proof = lineage.prove_counters(audited.inventory, 64496)
    assert proof["session_difference"] == 2 and proof["unique_ip_difference"] == 0
    assert proof["total_session_count"] - proof["sessions_total_session_count"] == 2
    v6 = lineage.prove_counters(audited.inventory, 64499)
    assert (v6["session_difference"], v6["addresses_with_wrong_counters"]) == (0, 1)
    assert v6["ip_inventory_total_session_count"] - v6["sessions_total_session_count"] == 1
    assert lineage.prove_counters(audited.inventory, 64497)["seen_differs"] == 1

    differences = lineage.counter_differences(audited.inventory)
    assert [r["asn_number"] for r in differences["asn_inventory"]] == [64496, 64497, 64499]
    assert all(r["queued"] == 0 for r in differences["asn_inventory"])
    addresses = {r["ip_address"]: r for r in differences["ip_inventory"]}
    assert set(addresses) == {"2a01:1000::5", UNMAPPED_IP}
    wrong = addresses["2a01:1000::5"]
    assert wrong["session_count"] - wrong["sessions_session_count"] == 1
    lost = addresses[UNMAPPED_IP]
    assert lost["session_count"] is None
    sessions = audited.pipeline.table("sessions")
    assert lost["sessions_session_count"] == (sessions["src_ip"] == UNMAPPED_IP).sum()
    daily = {(r["stat_date"], r["asn_number"]): r for r in differences["asn_daily_stats"]}
    assert set(daily) == {
        (DAYS[1], 64497),
        (dt.date.fromisoformat(deleted["stat_date"]), 64498),
    }
    changed = daily[(DAYS[1], 64497)]
    assert changed["new_ip_count"] - changed["sessions_new_ip_count"] == 1
    missing = daily[(dt.date.fromisoformat(deleted["stat_date"]), 64498)]
    assert missing["session_count"] is None
    assert missing["sessions_session_count"] == deleted["session_count"]


def documented_queries() -> dict[str, list[str]]:
    """Query name -> parameters, from the table under "## The queries" in docs/audit.md."""
    section = DOC.read_text().split("\n## The queries\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]*) \|", section, re.MULTILINE)
    return {name: re.findall(r"`(\w+)`", parameters) for name, parameters in rows}


def sql_blocks() -> list[str]:
    return re.findall(r"^-- name: (\w+)\s*$", LINEAGE_SQL.read_text(), re.MULTILINE)


def test_every_query_the_doc_names_exists_takes_its_parameters_and_answers(audited: Audited):
    documented = documented_queries()
    assert sorted(documented) == sorted(sql_blocks())
    with audited.inventory.read() as conn:
        for name, parameters in documented.items():
            statement = query("lineage", name, conn.dialect.name)
            assert sorted(statement.compile().params) == sorted(parameters), name
            rows = run(conn, "lineage", name, **{p: PARAMETERS[p] for p in parameters}).all()
            if name.endswith("_differences"):
                assert rows == [], name
            else:
                assert rows, name


def documented_tests() -> set[str]:
    section = DOC.read_text().split("\n## Tests\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(test_\w+)`", section))


def test_the_doc_lists_every_test_of_this_file():
    here = set(re.findall(r"^def (test_\w+)", Path(__file__).read_text(), re.MULTILINE))
    assert documented_tests() == here


def query_text(name: str) -> str:
    """The documented extraction of a named block (docs/audit.md, "Running the queries")."""
    script = f'$0 == "-- name: {name}" {{f=1; next}} /^-- name:/ {{f=0}} f'
    return subprocess.run(
        ["awk", script, str(LINEAGE_SQL)], capture_output=True, text=True, check=True
    ).stdout


def test_the_documented_command_lines_answer_like_the_python_functions(audited: Audited):
    pipeline = audited.pipeline
    text = query_text("why_address_in_asn")
    if pipeline.backend == "sqlite":
        tool = shutil.which("sqlite3")
        script = f".parameter set :ip_address \"'45.10.0.1'\"\n.mode line\n{text}"
        database = sa.engine.make_url(pipeline.db_url).database
        command = [tool, "-readonly", database]
    else:
        tool = shutil.which("psql")
        script = text
        url = sa.engine.make_url(pipeline.db_url).set(drivername="postgresql")
        command = [
            tool,
            url.render_as_string(hide_password=False),
            "-X",
            "-v",
            "ip_address='45.10.0.1'",
            "-x",
            "-v",
            "ON_ERROR_STOP=1",
        ]
    assert tool, "the documented command-line client is not installed"
    out = subprocess.run(command, input=script, capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"^\s*(\w+)\s*[=|] (.*?)\s*$", out, re.MULTILINE))
    why = lineage.why_address_in_asn(audited.inventory, "45.10.0.1")
    assert fields["enriched_by_run"] == why["enriched_by_run"]
    assert int(fields["build_epoch"]) == why["build_epoch"]
    assert int(fields["current_asn"]) == why["current_asn"]
