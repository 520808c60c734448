"""The graph loads before any data exists; the inputs are observable sources with data versions;
every asset describes its table, its columns' lineage and figures Dagster can plot."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from asn_pipeline.defs.sources.assets import DATA_VERSION_TAG
from asn_pipeline.settings import PROJECT_ROOT, ConfigurationError
from asn_pipeline.store import Inventory
from asn_pipeline.store.schema import ensure_schema
from asn_pipeline.tables import COLUMNS
from asn_pipeline_tests.conftest import NETWORKS, ts
from asn_pipeline_tests.test_refresh import write_build

D = dt.date(2026, 11, 20)
SOURCES = ("cowrie_landing", "maxmind_asn_db", "maxmind_city_db")
ASSETS = ("cowrie_sessions", "ip_inventory", "asn_inventory", "asn_statistics")
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
POSTGRES_TYPES = {
    "bigint": "BIGINT",
    "integer": "INTEGER",
    "smallint": "SMALLINT",
    "text": "TEXT",
    "date": "DATE",
    "timestamptz": "TIMESTAMP",
    "jsonb": "JSONB",
}


@pytest.fixture
def nothing_yet(monkeypatch, tmp_path):
    """A server where nothing has arrived: no landing directory, no MaxMind files, no inventory."""
    env = {
        "ASN_PIPELINE_DB_URL": f"sqlite:///{tmp_path / 'data' / 'inventory.sqlite'}",
        "ASN_PIPELINE_LANDING_DIR": str(tmp_path / "landing"),
        "ASN_PIPELINE_MAXMIND_ASN_DB": str(tmp_path / "GeoLite2-ASN.mmdb"),
        "ASN_PIPELINE_MAXMIND_CITY_DB": str(tmp_path / "GeoLite2-City.mmdb"),
    }
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    return env


def definitions() -> dg.Definitions:
    from asn_pipeline.definitions import defs

    return defs()


def observe(
    instance: dg.DagsterInstance, *keys: str, partition_key: str | None = None
) -> list[dg.AssetObservation]:
    """Observe the sources as the UI's "Observe sources" does (no partition) or for a day."""
    job = definitions().resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey(key) for key in keys],
        partition_key=partition_key,
        run_config=QUIET,
    )
    return [
        event.event_specific_data.asset_observation
        for event in result.all_events
        if event.event_type_value == "ASSET_OBSERVATION"
    ]


def version(observation: dg.AssetObservation) -> str | None:
    return observation.tags.get(DATA_VERSION_TAG)


def test_the_location_loads_before_any_data_exists(nothing_yet):
    loaded = definitions()
    dg.Definitions.validate_loadable(loaded)

    keys = {key.to_user_string() for key in loaded.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {*ASSETS, *SOURCES}
    assert loaded.resolve_job_def("daily_asn_inventory")
    assert {s.name for s in loaded.sensors} >= {"cowrie_landing_sensor", "maxmind_update_sensor"}


def test_the_cli_validates_the_definitions_before_any_data_exists(nothing_yet, tmp_path):
    result = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "dagster"),
            "definitions",
            "validate",
            "-m",
            "asn_pipeline.definitions",
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


def test_missing_inputs_are_observed_as_missing(nothing_yet):
    with dg.DagsterInstance.ephemeral() as instance:
        observations = {o.asset_key.to_user_string(): o for o in observe(instance, *SOURCES)}

    assert set(observations) == set(SOURCES)
    for key, variable in [
        ("cowrie_landing", "ASN_PIPELINE_LANDING_DIR"),
        ("maxmind_asn_db", "ASN_PIPELINE_MAXMIND_ASN_DB"),
        ("maxmind_city_db", "ASN_PIPELINE_MAXMIND_CITY_DB"),
    ]:
        observation = observations[key]
        assert observation.metadata["status"].value == "missing"
        assert observation.metadata["problem"].value.startswith(f"{variable}='")
        assert version(observation) is None


def test_the_maxmind_sensor_fails_its_tick_not_the_location(nothing_yet):
    loaded = definitions()
    sensor = loaded.resolve_sensor_def("maxmind_update_sensor")
    with (
        dg.DagsterInstance.ephemeral() as instance,
        dg.build_sensor_context(instance=instance, resources=loaded.resources) as context,
        pytest.raises(ConfigurationError, match="ASN_PIPELINE_MAXMIND_ASN_DB=.*no such file"),
    ):
        sensor.evaluate_tick(context)


def test_a_maxmind_database_is_versioned_by_its_build_epoch(pipeline, mmdb_files):
    write_build(mmdb_files["asn"], NETWORKS, 1_790_000_000)
    [first] = observe(pipeline.instance, "maxmind_asn_db")
    write_build(mmdb_files["asn"], NETWORKS, 1_795_000_000)
    [second] = observe(pipeline.instance, "maxmind_asn_db")

    assert (version(first), version(second)) == ("1790000000", "1795000000")
    assert second.metadata["build_epoch"].value == 1_795_000_000
    assert second.metadata["database_type"].value == "GeoLite2-ASN"
    assert second.metadata["path"].value == str(mmdb_files["asn"])
    assert second.metadata["size_bytes"].value == mmdb_files["asn"].stat().st_size
    assert second.metadata["status"].value == "ok"
    recorded = pipeline.instance.get_latest_data_version_record(dg.AssetKey("maxmind_asn_db"))
    assert recorded.asset_observation.tags[DATA_VERSION_TAG] == "1795000000"


def test_a_day_of_the_landing_directory_changes_version_when_its_files_change(pipeline, logs):
    logs.session("sensor-a", "s1", "45.10.0.1", ts(D, 9))
    logs.session("sensor-a", "s2", "45.10.0.2", ts(D - dt.timedelta(days=1), 9))
    logs.write()

    [before] = observe(pipeline.instance, "cowrie_landing", partition_key=D.isoformat())
    with open(logs.root / "sensor-a" / f"cowrie.json.{D}", "ab") as log:
        log.write(b'{"eventid": "cowrie.session.closed"}\n')
    [after] = observe(pipeline.instance, "cowrie_landing", partition_key=D.isoformat())
    every_day = observe(pipeline.instance, "cowrie_landing")

    assert before.partition == after.partition == D.isoformat()
    assert version(before) != version(after)
    assert after.metadata["files"].value == 1
    assert (
        after.metadata["bytes"].value
        == (logs.root / "sensor-a" / f"cowrie.json.{D}").stat().st_size
    )
    days = {o.partition: version(o) for o in every_day}
    assert set(days) == {D.isoformat(), (D - dt.timedelta(days=1)).isoformat()}
    assert days[D.isoformat()] == version(after)


def test_the_landing_version_of_a_day_is_the_one_its_sensor_run_is_keyed_by(pipeline, logs):
    logs.session("sensor-a", "s1", "45.10.0.1", ts(D, 9))
    logs.session("sensor-b", "s2", "45.11.0.1", ts(D, 10))
    logs.write()
    loaded = definitions()
    sensor = loaded.resolve_sensor_def("cowrie_landing_sensor")
    with dg.build_sensor_context(
        instance=pipeline.instance,
        resources=loaded.resources,
        repository_def=loaded.get_repository_def(),
    ) as context:
        [request] = sensor.evaluate_tick(context).run_requests

    [observation] = observe(pipeline.instance, "cowrie_landing", partition_key=D.isoformat())
    assert request.run_key == f"{D}:{version(observation)}"


def test_a_changed_input_shows_the_partitions_it_feeds_as_stale(pipeline, logs, mmdb_files):
    other = D + dt.timedelta(days=1)
    logs.session("sensor-a", "s1", "45.10.0.1", ts(D, 9))
    logs.session("sensor-a", "s2", "45.11.0.1", ts(other, 9))
    logs.write()
    write_build(mmdb_files["asn"], NETWORKS, 1_790_000_000)
    observe(pipeline.instance, *SOURCES)
    pipeline.run(D, other)

    def statuses() -> dict[tuple[str, dt.date], StaleStatus]:
        assets = list(definitions().resolve_asset_graph().assets_defs)
        resolver = get_stale_status_resolver(pipeline.instance, assets)
        return {
            (key, day): resolver.get_status(dg.AssetKey(key), day.isoformat())
            for key in ("cowrie_sessions", "ip_inventory")
            for day in (D, other)
        }

    assert set(statuses().values()) == {StaleStatus.FRESH}
    observe(pipeline.instance, *SOURCES)
    assert set(statuses().values()) == {StaleStatus.FRESH}  # the same versions again

    with open(logs.root / "sensor-a" / f"cowrie.json.{D}", "ab") as log:
        log.write(b"\n")
    observe(pipeline.instance, "cowrie_landing", partition_key=D.isoformat())
    assert statuses()[("cowrie_sessions", D)] == StaleStatus.STALE
    assert statuses()[("cowrie_sessions", other)] == StaleStatus.FRESH

    write_build(mmdb_files["asn"], NETWORKS, 1_795_000_000)
    observe(pipeline.instance, "maxmind_asn_db")
    assert (
        statuses()[("ip_inventory", D)] == statuses()[("ip_inventory", other)] == StaleStatus.STALE
    )


def test_the_column_schemas_match_the_migrated_tables(pipeline):
    inventory = Inventory(pipeline.db_url)
    try:
        ensure_schema(inventory)
        inspector = sa.inspect(inventory.engine)
        for table, columns in COLUMNS.items():
            actual = {column["name"]: column for column in inspector.get_columns(table)}
            assert [name for name, *_ in columns] == list(actual), table
            if pipeline.backend != "postgres":
                continue  # SQLite's types are the dialect's TEXT/INTEGER forms
            for name, kind, nullable, _ in columns:
                assert str(actual[name]["type"]) == POSTGRES_TYPES[kind], (table, name)
                assert actual[name]["nullable"] == nullable, (table, name)
    finally:
        inventory.dispose()


def test_a_run_records_column_lineage_figures_to_plot_and_the_change_of_top_asns(pipeline, logs):
    before = D - dt.timedelta(days=1)
    logs.session("sensor-a", "p1", "45.10.0.1", ts(before, 1))
    logs.session("sensor-a", "p2", "45.10.0.2", ts(before, 2))
    logs.session("sensor-a", "p3", "45.11.0.1", ts(before, 3))
    for n, ip in enumerate(["45.10.0.1", "45.10.0.3", "45.10.0.3", "45.12.0.1", "10.0.0.1"]):
        logs.session("sensor-a", f"d{n}", ip, ts(D, 1 + n))
    logs.raw("sensor-a", D, b"not json")
    logs.write()

    pipeline.run(before, D)

    ips = pipeline.latest_metadata("ip_inventory", D)
    lineage = ips["dagster/column_lineage"].value
    assert lineage.deps_by_column["current_asn"] == [
        dg.TableColumnDep(dg.AssetKey("maxmind_asn_db"), "autonomous_system_number")
    ]
    assert lineage.deps_by_column["session_count"] == [
        dg.TableColumnDep(dg.AssetKey("cowrie_sessions"), "session_id")
    ]
    assert (ips["addresses"].value, ips["new_addresses"].value) == (4, 3)
    assert ips["coverage"].value == 1.0
    for key in ("step_seconds", "upsert_seconds", "lookup_seconds", "cymru_step_seconds"):
        assert isinstance(ips[key], dg.FloatMetadataValue) and ips[key].value >= 0, key

    ingest = pipeline.latest_metadata("cowrie_sessions", D)
    assert (ingest["sessions_owned_by_day"].value, ingest["rejected_lines"].value) == (5, 1)
    assert "sensor" in ingest["dagster/column_lineage"].value.deps_by_column
    asns = pipeline.latest_metadata("asn_inventory", D)
    assert "unique_ip_count" in asns["dagster/column_lineage"].value.deps_by_column

    stats = pipeline.latest_metadata("asn_statistics", D)
    assert stats["sessions"].value == 5 and stats["sessions_without_asn"].value == 1
    assert (stats["unique_addresses"].value, stats["new_addresses"].value) == (4, 2)
    for metadata in (ingest, asns, stats):
        assert isinstance(metadata["step_seconds"], dg.FloatMetadataValue)
    top = stats["top_asns"].value.splitlines()
    assert top[0] == "| asn | organization | sessions | change | addresses | new addresses |"
    assert top[2:] == [
        "| AS64496 | Example Hosting A | 3 | +1 | 2 | 1 |",
        "| AS64498 | Example Mobile C | 1 | new | 1 | 1 |",
    ]
    first = pipeline.latest_metadata("asn_statistics", before).get("top_asns").value
    assert "| AS64496 | Example Hosting A | 2 | new | 2 | 2 |" in first.splitlines()


def test_a_range_run_keeps_its_column_lineage(pipeline, logs):
    logs.session("sensor-a", "s1", "45.10.0.1", ts(D, 9))
    logs.write()

    pipeline.run_range(D - dt.timedelta(days=1), D)

    metadata = pipeline.latest_metadata("ip_inventory", D)
    assert "dagster/column_lineage" in metadata
    assert isinstance(metadata["range_step_seconds"], dg.FloatMetadataValue)
    assert "step_seconds" not in metadata
