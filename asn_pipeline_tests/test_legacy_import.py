"""The job asn_inventory_backfill: a cowrieprocessor inventory (SQLite or PostgreSQL) imported into
a real inventory on either backend, and the repair of derived values, through Dagster runs."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from asn_pipeline.defs.automation.legacy import BACKFILL_JOB
from asn_pipeline.demo import write_asn_mmdb, write_city_mmdb
from asn_pipeline.store import Inventory, audit
from asn_pipeline_tests.conftest import (
    NETWORKS,
    UNMAPPED_IP,
    CowrieLogs,
    Pipeline,
    assert_exact,
    ts,
)
from asn_pipeline_tests.test_invariants import inject_failure

DAY = dt.date(2026, 11, 20)
DAY_ADDRESSES = ["45.10.0.1", "45.10.0.2", "45.11.0.1", "45.12.0.1", "2a01:1000::5", UNMAPPED_IP]
BOGON = "192.168.1.5"
STEP = "backfill_asn_inventory"


def maxmind(asn, org, country):
    return {"asn": asn, "asn_org": org, "country": country, "network": "x"}


def cymru(asn, org, country, registry):
    return {"asn": asn, "asn_org": org, "country": country, "registry": registry, "prefix": "x"}


GOOD = {"maxmind": maxmind(64496, "LEGACY HOSTING A", "NL")}
# (ip_address, current_asn, enrichment: a JSON-able value or raw text, first_seen, last_seen)
LEGACY_IPS = [
    (
        "45.10.0.1",
        64496,
        {**GOOD, "cymru": cymru(64496, "HOSTING-A", "NL", "ripencc")},
        "2025-03-01 08:00:00.000000",
        "2025-06-01 08:00:00.000000",
    ),
    # The same address IPv4-mapped: one mapping, its times widened.
    ("::ffff:45.10.0.1", 64496, GOOD, "2025-01-15T10:00:00+02:00", "2025-02-01 08:00:00"),
    ("45.10.0.2", 64496, json.dumps(json.dumps(GOOD)), "2025-03-02 08:00:00", "2025-03-03"),
    ("45.10.0.3", 64496, "[1, 2, 3]", "2025-03-02 08:00:00", "2025-03-03 08:00:00"),
    ("45.10.0.4", 64496, "42", "2025-03-02 08:00:00", "2025-03-03 08:00:00"),
    ("45.10.0.5", 64496, None, "2025-03-02 08:00:00", "2025-03-03 08:00:00"),
    (
        "45.10.0.6",
        64496,
        {"maxmind": maxmind(64497, "EXAMPLE TELECOM B", "SG")},
        "2025-03-02 08:00:00",
        "2025-03-03 08:00:00",
    ),
    ("45.10.0.7", 64496, GOOD, None, "2025-04-01 08:00:00"),
    ("45.10.0.8", 64496, GOOD, None, None),
    ("45.10.0.9", 64496, GOOD, "2025-05-01 08:00:00", "2025-04-01 08:00:00"),
    (
        "45.11.0.1",
        64497,
        {
            "maxmind": maxmind(64497, "EXAMPLE TELECOM B", "SG"),
            "cymru": cymru(64497, "TELECOM-B", "SG", "apnic"),
        },
        "2025-03-02 08:00:00",
        "2025-03-03 08:00:00",
    ),
    ("45.11.0.2", 64497, {"maxmind": "GOOGLE", "cymru": [64497]}, "2025-03-02", "2025-03-03"),
    (
        "45.11.0.3",
        64497,
        {
            "maxmind": {"asn": "AS64497", "asn_org": 12345, "country": 7},
            "cymru": {
                "asn": 64497.0,
                "asn_org": ["TELECOM-B"],
                "country": "sg",
                "registry": "APNIC",
            },
        },
        "2025-03-02 08:00:00",
        "2025-03-03 08:00:00",
    ),
    (
        "45.11.0.5",
        0,
        {"maxmind": maxmind(64497, "EXAMPLE TELECOM B", "SG")},
        "2025-03-02 08:00:00",
        "2025-03-03 08:00:00",
    ),
    (
        "45.12.0.8",
        None,
        {
            "maxmind": {"country": "BR"},
            "cymru": {"asn": 64498, "country": "PT", "registry": "lacnic"},
        },
        "2025-03-02 08:00:00",
        "2025-03-03 08:00:00",
    ),
    (
        "45.12.0.9",
        64498,
        {
            "maxmind": None,
            "cymru": {"asn": None, "asn_org": None, "country": None, "registry": None},
        },
        "2025-03-02 08:00:00",
        "2025-03-03 08:00:00",
    ),
    # An address this inventory maps to 64498 that the legacy one had in 64497.
    (
        "45.12.0.1",
        64497,
        {"maxmind": maxmind(64497, "EXAMPLE TELECOM B", "SG")},
        "2025-03-02 08:00:00",
        "2025-03-03 08:00:00",
    ),
    (
        "2A01:1000:0000::5",
        64499,
        {"cymru": cymru(64499, "EXAMPLE-V6-D", "DE", "ripencc")},
        "2025-03-02 08:00:00",
        "2025-03-03 08:00:00",
    ),
    (
        "8.8.8.8",
        15169,
        {"maxmind": maxmind(15169, "GOOGLE", "US"), "cymru": cymru(15169, "GOOGLE", "US", "arin")},
        "2024-12-31 23:00:00",
        "2025-01-02 08:00:00",
    ),
    ("8.8.4.4", 15169, '{"maxmind": {"asn": 15169, "asn_org": "GOO', "2025-01-01", "2025-01-02"),
    ("not-an-ip", 64496, GOOD, "2025-03-02 08:00:00", "2025-03-03 08:00:00"),
    (BOGON, 64496, GOOD, "2025-03-02 08:00:00", "2025-03-03 08:00:00"),
    ("", 64496, GOOD, "2025-03-02 08:00:00", "2025-03-03 08:00:00"),
    ("45.13.0.1", None, {"dshield": {"ip": {"asnum": 1}}}, "2025-03-02", "2025-03-03"),
]
# (asn_number, organization_name, organization_country, rir_registry)
LEGACY_ASNS = [
    (64496, "LEGACY-HOSTING-A", "NL", "ripencc"),
    (64497, "EXAMPLE-TELECOM-B", "SG", "apnic"),
    (64499, None, "", "7"),
    (13335, "CLOUDFLARENET", "US", "arin"),
]
EXPECTED_PROBLEMS = {
    "address: canonicalised": 2,
    "address: duplicate once canonical": 1,
    "address: missing (row skipped)": 1,
    "address: special-purpose, never mapped (row skipped)": 1,
    "address: unparseable (row skipped)": 1,
    "asn_inventory.organization_country: empty": 1,
    "asn_inventory.organization_name: null": 1,
    "asn_inventory.rir_registry: not a registry": 1,
    "current_asn: differs from maxmind.asn": 1,
    "current_asn: null": 2,
    "current_asn: out of range": 1,
    "cymru.asn: a float": 1,
    "cymru.asn: null": 1,
    "cymru.asn_org: missing": 1,
    "cymru.asn_org: null": 1,
    "cymru.asn_org: wrong type": 1,
    "cymru.country: null": 1,
    "cymru.registry: null": 1,
    "cymru: not an object": 1,
    "enrichment: JSON encoded twice": 1,
    "enrichment: malformed JSON": 1,
    "enrichment: no maxmind or cymru block": 1,
    "enrichment: not an object": 2,
    "enrichment: null": 1,
    "first_seen: null": 2,
    "last_seen: null": 1,
    "mapping: first_seen after last_seen (swapped)": 1,
    "mapping: no ASN": 1,
    "mapping: no usable time (not imported)": 1,
    "maxmind.asn: missing": 1,
    "maxmind.asn: text": 1,
    "maxmind.asn_org: missing": 1,
    "maxmind.asn_org: wrong type": 1,
    "maxmind.country: wrong type": 1,
    "maxmind: not an object": 1,
    "maxmind: null": 1,
}
# Every (address, ASN) the legacy rows map, canonical.
EXPECTED_MAPPINGS = {
    ("45.10.0.1", 64496),
    ("45.10.0.2", 64496),
    ("45.10.0.3", 64496),
    ("45.10.0.4", 64496),
    ("45.10.0.5", 64496),
    ("45.10.0.6", 64496),
    ("45.10.0.7", 64496),
    ("45.10.0.9", 64496),
    ("45.11.0.1", 64497),
    ("45.11.0.2", 64497),
    ("45.11.0.3", 64497),
    ("45.11.0.5", 64497),
    ("45.12.0.8", 64498),
    ("45.12.0.9", 64498),
    ("45.12.0.1", 64497),
    ("2a01:1000::5", 64499),
    ("8.8.8.8", 15169),
    ("8.8.4.4", 15169),
}
# (column, where the value came from) -> ASNs filled.
EXPECTED_FILLS = {
    ("organization_name", "asn_inventory"): 1,  # 64497, emptied by hand
    ("organization_name", "cymru"): 1,  # 64499, emptied by hand; its legacy row has no name
    ("organization_name", "maxmind"): 1,  # 15169, created for its mappings
    ("organization_country", "maxmind"): 2,  # 64498 (no City answer here), 15169
    ("rir_registry", "asn_inventory"): 2,  # 64496, 64497 (Team Cymru is off here)
    ("rir_registry", "cymru"): 3,  # 64498, 64499, 15169
}
SQLITE_DDL = [
    """CREATE TABLE asn_inventory (
        asn_number INTEGER PRIMARY KEY, organization_name TEXT, organization_country VARCHAR(2),
        rir_registry VARCHAR(10), asn_type TEXT, first_seen DATETIME, last_seen DATETIME,
        unique_ip_count INTEGER NOT NULL DEFAULT 0, total_session_count INTEGER NOT NULL DEFAULT 0,
        enrichment JSON NOT NULL DEFAULT '{}')""",
    """CREATE TABLE ip_inventory (
        ip_address VARCHAR(45) PRIMARY KEY, current_asn INTEGER, asn_last_verified DATETIME,
        first_seen DATETIME, last_seen DATETIME, session_count INTEGER NOT NULL DEFAULT 1,
        enrichment JSON, enrichment_updated_at DATETIME,
        enrichment_version VARCHAR(10) NOT NULL DEFAULT '2.2')""",
]
# A dump restored with its JSON column as text holds every shape, malformed JSON included.
POSTGRES_DDL = [
    """CREATE TABLE asn_inventory (
        asn_number integer PRIMARY KEY, organization_name text, organization_country varchar(2),
        rir_registry varchar(10), asn_type text, first_seen timestamptz, last_seen timestamptz,
        unique_ip_count integer NOT NULL DEFAULT 0, total_session_count integer NOT NULL DEFAULT 0,
        enrichment jsonb NOT NULL DEFAULT '{}')""",
    """CREATE TABLE ip_inventory (
        ip_address varchar(45) PRIMARY KEY, current_asn integer, asn_last_verified timestamptz,
        first_seen timestamptz, last_seen timestamptz, session_count integer NOT NULL DEFAULT 1,
        enrichment {enrichment_type}, enrichment_updated_at timestamptz,
        enrichment_version varchar(10) NOT NULL DEFAULT '2.2')""",
]


def postgres_ddl(enrichment_type: str) -> list[str]:
    return [s.replace("{enrichment_type}", enrichment_type) for s in POSTGRES_DDL]


@pytest.fixture
def mmdb_files(tmp_path: Path) -> dict[str, Path]:
    """The test networks; the City database has no answer for 45.12.0.0/16 (AS64498)."""
    paths = {"asn": tmp_path / "asn.mmdb", "city": tmp_path / "city.mmdb"}
    write_asn_mmdb(paths["asn"], NETWORKS)
    write_city_mmdb(paths["city"], [n for n in NETWORKS if n.asn_number != 64498])
    return paths


@pytest.fixture
def inventory(pipeline: Pipeline, logs: CowrieLogs) -> Pipeline:
    """An inventory holding one processed day, two of whose ASNs lost their names by hand."""
    for i, ip in enumerate([*DAY_ADDRESSES, BOGON]):
        logs.session("sensor-a", f"s{i}", ip, ts(DAY, 8 + i))
        logs.session("sensor-b", f"t{i}", ip, ts(DAY, 9 + i), events=2)
    logs.write()
    pipeline.run(DAY)
    pipeline.execute(
        "UPDATE asn_inventory SET organization_name = NULL, name_source = NULL "
        "WHERE asn_number IN (64497, 64499)"
    )
    return pipeline


def legacy_rows(rows=LEGACY_IPS) -> list[dict]:
    return [
        {
            "ip": ip,
            "asn": asn,
            "enrichment": e if e is None or isinstance(e, str) else json.dumps(e),
            "first": first,
            "last": last,
        }
        for ip, asn, e, first, last in rows
    ]


def fill_legacy(url: str, ddl: list[str], rows=LEGACY_IPS, asns=LEGACY_ASNS) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in ddl:
                conn.exec_driver_sql(statement)
            if asns:
                conn.execute(
                    sa.text(
                        "INSERT INTO asn_inventory (asn_number, organization_name, "
                        "organization_country, rir_registry) VALUES (:asn, :name, :country, :rir)"
                    ),
                    [dict(zip(("asn", "name", "country", "rir"), a, strict=True)) for a in asns],
                )
            conn.execute(
                sa.text(
                    "INSERT INTO ip_inventory (ip_address, current_asn, enrichment, first_seen, "
                    "last_seen) VALUES (:ip, :asn, :enrichment, :first, :last)"
                ),
                legacy_rows(rows),
            )
    finally:
        engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def legacy_url(request, tmp_path) -> str:
    """A cowrieprocessor inventory holding LEGACY_IPS and LEGACY_ASNS, on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        return fill_legacy(f"sqlite:///{tmp_path / 'cowrieprocessor.sqlite'}", SQLITE_DDL)
    url = request.getfixturevalue("postgres_schemas")()
    return fill_legacy(url, postgres_ddl("text"))


def backfill(
    pipeline: Pipeline, source: object = None, raise_on_error: bool = True
) -> dg.ExecuteInProcessResult:
    job = pipeline.definitions().resolve_job_def(BACKFILL_JOB)
    config = {} if source is None else {"source_db_url": source}
    return job.execute_in_process(
        run_config={
            "ops": {STEP: {"config": config}},
            "loggers": {"console": {"config": {"log_level": "ERROR"}}},
        },
        instance=pipeline.instance,
        raise_on_error=raise_on_error,
    )


def output_metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    [output] = [e for e in result.events_for_node(STEP) if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in output.event_specific_data.metadata.items()}


def full_tables(pipeline: Pipeline) -> dict[str, list[tuple]]:
    """Every table the job may write, provenance columns included."""
    state = {}
    for name in ("sessions", "ip_inventory", "asn_inventory", "asn_daily_stats", "ip_asn_history"):
        frame = pipeline.table(name).drop(columns=["enrichment"], errors="ignore")
        rows = frame.astype(object).where(frame.notna(), None).itertuples(index=False)
        state[name] = sorted((tuple(r) for r in rows), key=repr)
    return state


def test_import_records_legacy_mappings_and_fills_only_what_is_missing(
    inventory: Pipeline, legacy_url: str
):
    facts_before = {t: rows for t, rows in full_tables(inventory).items() if t != "asn_inventory"}
    asns_before = inventory.table("asn_inventory").set_index("asn_number")

    result = backfill(inventory, legacy_url)

    metadata = output_metadata(result)
    assert metadata["problem_counts"] == EXPECTED_PROBLEMS
    assert metadata["problems"] == sum(EXPECTED_PROBLEMS.values())
    assert metadata["legacy_ip_rows"] == len(LEGACY_IPS)
    assert metadata["legacy_asn_rows"] == len(LEGACY_ASNS)
    assert metadata["mappings"] == metadata["addresses_imported"] == len(EXPECTED_MAPPINGS)
    assert metadata["history_rows_new"] == len(EXPECTED_MAPPINGS)
    assert metadata["asns_created"] == 1  # 15169; 13335 maps nothing and is only counted
    assert metadata["legacy_asns_skipped"] == 1
    assert metadata["addresses_in_inventory"] == 5
    assert metadata["addresses_with_other_current_asn"] == 1  # 45.12.0.1
    assert (metadata["names_filled"], metadata["countries_filled"]) == (3, 2)
    assert metadata["registries_filled"] == 5
    assert "| organization_name | cymru | 1 |" in metadata["values_filled"]

    history = inventory.table("ip_asn_history")
    imported = history[history["source"] == "legacy"]
    assert set(zip(imported["ip_address"], imported["asn_number"], strict=True)) == (
        EXPECTED_MAPPINGS
    )
    assert imported["build_epoch"].isna().all()
    times = imported.set_index("ip_address")
    assert times.loc["45.10.0.1", "first_observed"] == pd.Timestamp("2025-01-15 08:00", tz="UTC")
    assert times.loc["45.10.0.1", "last_observed"] == pd.Timestamp("2025-06-01 08:00", tz="UTC")
    assert times.loc["45.10.0.7", "first_observed"] == times.loc["45.10.0.7", "last_observed"]
    assert times.loc["45.10.0.9", "first_observed"] == pd.Timestamp("2025-04-01 08:00", tz="UTC")

    asns = inventory.table("asn_inventory").set_index("asn_number")
    columns = ["organization_name", "name_source", "organization_country", "rir_registry"]
    assert asns.loc[64496, columns].tolist() == ["Example Hosting A", "maxmind", "NL", "ripencc"]
    assert asns.loc[64497, columns].tolist() == ["EXAMPLE-TELECOM-B", "legacy", "SG", "apnic"]
    assert asns.loc[64498, columns].tolist() == ["Example Mobile C", "maxmind", "BR", "lacnic"]
    assert asns.loc[64499, columns].tolist() == ["EXAMPLE-V6-D", "legacy", "DE", "ripencc"]
    assert asns.loc[15169, columns].tolist() == ["GOOGLE", "legacy", "US", "arin"]
    assert 13335 not in asns.index
    counters = ["unique_ip_count", "total_session_count", "first_seen", "last_seen"]
    pd.testing.assert_frame_equal(asns.loc[asns_before.index, counters], asns_before[counters])
    assert asns.loc[15169, ["unique_ip_count", "total_session_count"]].tolist() == [0, 0]

    after = full_tables(inventory)
    history_before = set(facts_before.pop("ip_asn_history"))
    assert history_before <= set(after.pop("ip_asn_history"))
    assert {t: rows for t, rows in after.items() if t != "asn_inventory"} == facts_before
    assert_exact(inventory)


def test_importing_twice_changes_nothing(inventory: Pipeline, tmp_path: Path):
    url = fill_legacy(f"sqlite:///{tmp_path / 'legacy.sqlite'}", SQLITE_DDL)
    backfill(inventory, url)
    once = full_tables(inventory)

    metadata = output_metadata(backfill(inventory, url))

    assert full_tables(inventory) == once
    assert metadata["history_rows_new"] == metadata["history_rows_widened"] == 0
    assert metadata["asns_created"] == 0 and metadata["values_filled"] == "_none_"
    assert metadata["problem_counts"] == EXPECTED_PROBLEMS


def test_a_wider_legacy_time_widens_the_history_row(inventory: Pipeline, tmp_path: Path):
    backfill(inventory, fill_legacy(f"sqlite:///{tmp_path / 'a.sqlite'}", SQLITE_DDL))
    later = [("45.10.0.1", 64496, GOOD, "2025-02-01 00:00:00", "2026-01-01 00:00:00")]
    url = fill_legacy(f"sqlite:///{tmp_path / 'b.sqlite'}", SQLITE_DDL, later, [])

    metadata = output_metadata(backfill(inventory, url))

    assert metadata["history_rows_widened"] == 1 and metadata["history_rows_new"] == 0
    history = inventory.table("ip_asn_history").set_index(["ip_address", "source"])
    row = history.loc[("45.10.0.1", "legacy")]
    assert row["first_observed"] == pd.Timestamp("2025-01-15 08:00", tz="UTC")
    assert row["last_observed"] == pd.Timestamp("2026-01-01", tz="UTC")


def test_a_database_error_mid_import_leaves_the_previous_state(inventory: Pipeline, tmp_path: Path):
    url = fill_legacy(f"sqlite:///{tmp_path / 'legacy.sqlite'}", SQLITE_DDL)
    before = full_tables(inventory)
    inject_failure(inventory, "ip_asn_history")  # the import's last write

    result = backfill(inventory, url, raise_on_error=False)

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "injected failure" in str(failure.event_specific_data.error)
    assert full_tables(inventory) == before  # no ASN created, no name filled


def test_a_database_error_mid_repair_leaves_the_previous_state(inventory: Pipeline):
    inventory.execute("UPDATE ip_inventory SET session_count = 99 WHERE ip_address = '45.10.0.1'")
    before = full_tables(inventory)
    inject_failure(inventory, "asn_daily_stats")  # written by the drain, after the counters

    result = backfill(inventory, raise_on_error=False)

    assert not result.success
    assert full_tables(inventory) == before  # the corrupted counter included
    for queue in ("stale_ips", "stale_asn_deltas", "stale_days"):
        assert inventory.table(queue).empty, queue


def test_repair_restores_exact_counters_missing_asn_rows_and_names(inventory: Pipeline):
    intact = full_tables(inventory)
    cymru_name = {
        "asn": 64498,
        "answer": '["64498 | BR | lacnic | 2001-01-01 | MOBILE-C, BR"]',
        "now": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    engine = sa.create_engine(inventory.db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO cymru_asn_names (asn_number, outcome, organization_name, "
                    "organization_country, rir_registry, allocated, query_name, raw_answer, "
                    "fetched_at, expires_at) VALUES (:asn, 'found', 'MOBILE-C, BR', 'BR', "
                    "'lacnic', '2001-01-01', 'AS64498.asn.cymru.com', :answer, :now, :now)"
                ),
                cymru_name,
            )
    finally:
        engine.dispose()
    # A hand edit: counters and statistics changed, and an ASN row deleted with the foreign
    # keys off (SQLite's default outside the pipeline; a replica role on PostgreSQL).
    corrupt = [
        "UPDATE ip_inventory SET session_count = 99 WHERE ip_address = '45.10.0.1'",
        "UPDATE asn_inventory SET unique_ip_count = 7, total_session_count = 0 "
        "WHERE asn_number = 64496",
        "DELETE FROM asn_daily_stats WHERE asn_number = 64497",
        "DELETE FROM asn_inventory WHERE asn_number = 64498",
    ]
    if inventory.backend == "sqlite":
        conn = sqlite3.connect(inventory.db_url.removeprefix("sqlite:///"))
        try:
            with conn:
                for statement in corrupt:
                    conn.execute(statement)
        finally:
            conn.close()
    else:
        inventory.execute("SET session_replication_role = replica", *corrupt)
    store = Inventory(inventory.db_url)
    try:
        assert audit.dangling_asn_references(store) > 0
    finally:
        store.dispose()

    metadata = output_metadata(backfill(inventory))

    assert {k: metadata[k] for k in ("asn_rows_restored", "names_filled", "registries_filled")} == (
        {"asn_rows_restored": 1, "names_filled": 1, "registries_filled": 1}
    )
    assert metadata["ip_counters_corrected"] == 1
    assert metadata["asn_counters_corrected"] == 1
    assert metadata["daily_statistics_added"] == 1
    assert metadata["addresses_dropped"] == metadata["daily_statistics_removed"] == 0
    assert_exact(inventory)
    repaired = full_tables(inventory)
    for table in ("sessions", "ip_inventory", "asn_daily_stats", "ip_asn_history"):
        assert repaired[table] == intact[table], table
    others = [r for r in repaired["asn_inventory"] if r[0] != 64498]
    assert others == [r for r in intact["asn_inventory"] if r[0] != 64498]
    asns = inventory.table("asn_inventory").set_index("asn_number")
    restored = asns.loc[64498]
    assert restored["organization_name"] == "MOBILE-C, BR"
    assert restored["name_source"] == "cymru"
    assert (restored["rir_registry"], restored["organization_country"]) == ("lacnic", "BR")
    assert (restored["unique_ip_count"], restored["total_session_count"]) == (1, 2)

    again = output_metadata(backfill(inventory))
    assert full_tables(inventory) == repaired
    assert sum(v for v in again.values() if isinstance(v, int)) == 0


def test_repair_of_an_intact_inventory_changes_nothing(inventory: Pipeline):
    before = full_tables(inventory)

    result = backfill(inventory)

    assert full_tables(inventory) == before
    assert sum(v for v in output_metadata(result).values() if isinstance(v, int)) == 0
    observed = {
        e.event_specific_data.asset_observation.asset_key.to_user_string()
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    }
    assert observed == {"ip_inventory", "asn_inventory", "asn_statistics"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("postgresql://importer:s3cret@127.0.0.1:notaport/legacy", "not a SQLAlchemy URL"),
        ("mysql://importer:s3cret@127.0.0.1/legacy", "unsupported driver"),
        ("postgresql://importer:s3c@ret@127.0.0.1/legacy", "unescaped '@'"),
        ("sqlite:////nonexistent/cowrieprocessor.sqlite", "no such SQLite file"),
        ("postgresql://importer:s3cret@127.0.0.1:1/legacy", "OperationalError"),
    ],
)
def test_a_bad_source_url_fails_naming_it_without_its_password(
    inventory: Pipeline, source: str, problem: str
):
    before = full_tables(inventory)

    result = backfill(inventory, source, raise_on_error=False)

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data.error)
    assert "source_db_url=" in message and problem in message
    assert not any(word in str(e) for e in result.all_events for word in ("s3cret", "ret@"))
    assert full_tables(inventory) == before


def test_a_password_in_the_source_url_reaches_no_log_or_metadata(
    inventory: Pipeline, postgres_schemas, monkeypatch
):
    schema_url = sa.engine.make_url(postgres_schemas())
    url = schema_url.set(password="s3cret").render_as_string(hide_password=False)
    fill_legacy(url, postgres_ddl("text"))
    monkeypatch.setenv("LEGACY_DB_URL", url)  # trust authentication ignores the password

    result = backfill(inventory, {"env": "LEGACY_DB_URL"})

    metadata = output_metadata(result)
    assert metadata["mappings"] == len(EXPECTED_MAPPINGS)
    assert "***" in metadata["source"]
    records = inventory.instance.all_logs(result.run_id)
    assert records and not any("s3cret" in str(r) for r in records)
    assert "s3cret" not in str(inventory.instance.get_run_by_id(result.run_id).run_config)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_jsonb_enrichment_column_is_read_like_text(inventory: Pipeline, postgres_schemas):
    rows = [r for r in LEGACY_IPS if r[0] in ("45.10.0.1", "45.10.0.2", "45.10.0.3", "45.11.0.3")]
    url = fill_legacy(postgres_schemas(), postgres_ddl("jsonb"), rows)

    metadata = output_metadata(backfill(inventory, url))

    assert metadata["mappings"] == 4
    assert metadata["problem_counts"] == {
        "asn_inventory.organization_country: empty": 1,
        "asn_inventory.organization_name: null": 1,
        "asn_inventory.rir_registry: not a registry": 1,
        "cymru.asn: a float": 1,
        "cymru.asn_org: wrong type": 1,
        "enrichment: JSON encoded twice": 1,
        "enrichment: not an object": 1,
        "maxmind.asn: text": 1,
        "maxmind.asn_org: wrong type": 1,
        "maxmind.country: wrong type": 1,
    }


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_asn_pipeline_inventory_is_refused_as_a_source(inventory: Pipeline):
    before = full_tables(inventory)

    result = backfill(inventory, inventory.db_url, raise_on_error=False)

    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "not a cowrieprocessor one" in str(failure.event_specific_data.error)
    assert full_tables(inventory) == before
