"""The Definitions load, validate and show the contract's assets, lineage and steps."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from asn_pipeline.defs.automation.jobs import DAILY_JOB
from asn_pipeline.settings import PROJECT_ROOT
from asn_pipeline_tests.conftest import ts

ASSETS = ("cowrie_sessions", "ip_inventory", "asn_inventory", "asn_statistics")
SOURCES = ("cowrie_landing", "maxmind_asn_db", "maxmind_city_db")
VENV_BIN = Path(sys.executable).parent


def test_definitions_are_loadable_and_carry_the_contract_assets(pipeline):
    definitions = pipeline.definitions()
    dg.Definitions.validate_loadable(definitions)
    graph = definitions.resolve_asset_graph()

    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {*ASSETS, *SOURCES}
    parents = {
        key: {p.to_user_string() for p in graph.get(dg.AssetKey(key)).parent_keys}
        for key in (*ASSETS, *SOURCES)
    }
    assert parents == {
        "cowrie_landing": set(),
        "maxmind_asn_db": set(),
        "maxmind_city_db": set(),
        "cowrie_sessions": {"cowrie_landing"},
        "ip_inventory": {"cowrie_sessions", "maxmind_asn_db", "maxmind_city_db"},
        "asn_inventory": {"cowrie_sessions", "maxmind_asn_db", "maxmind_city_db"},
        "asn_statistics": {"ip_inventory", "asn_inventory"},
    }
    partitions = {graph.get(dg.AssetKey(key)).partitions_def for key in (*ASSETS, "cowrie_landing")}
    assert len(partitions) == 1
    [daily] = partitions
    assert isinstance(daily, dg.DailyPartitionsDefinition)
    assert daily.start.date().isoformat() == "2020-01-01"
    for key in ASSETS:
        node = graph.get(dg.AssetKey(key))
        assert node.group_name == "honeypot" and node.is_materializable
    for key in SOURCES:
        node = graph.get(dg.AssetKey(key))
        assert node.group_name == "sources" and node.is_observable and not node.is_materializable


def test_every_asset_has_owners_kinds_a_description_and_a_code_version(pipeline):
    graph = pipeline.definitions().resolve_asset_graph()
    for key in (*ASSETS, *SOURCES):
        node = graph.get(dg.AssetKey(key))
        assert node.owners == ["team:honeypot-data"], key
        assert node.kinds and node.description and node.code_version, key
        assert isinstance(node.metadata["dagster/column_schema"], dg.TableSchema), key


def test_lookup_cymru_upsert_and_backfill_are_separate_steps(pipeline):
    job = pipeline.definitions().resolve_job_def(DAILY_JOB)
    steps = {node.name for node in job.graph.node_dict["inventory"].definition.node_dict.values()}
    assert steps == {
        "lookup_addresses",
        "lookup_cymru",
        "upsert_inventory",
        "backfill_session_asns",
    }


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        args,
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_dg_check_defs_accepts_the_project(pipeline):
    result = run_cli(str(VENV_BIN / "dg"), "check", "defs", env={})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def materialize_cli(day: str, dagster_home: Path, env: dict[str, str]):
    dagster_home.mkdir(exist_ok=True)
    return run_cli(
        str(VENV_BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        "asn_pipeline.definitions",
        "--select",
        ",".join(ASSETS),
        "--partition",
        day,
        env={"DAGSTER_HOME": str(dagster_home), **env},
    )


def test_the_documented_cli_command_materialises_a_partition(pipeline, logs, tmp_path):
    logs.session("sensor-a", "s1", "45.10.0.1", ts(dt.date(2026, 11, 20), 9))
    logs.write()

    result = materialize_cli("2026-11-20", tmp_path / "dagster_home", env={})

    assert result.returncode == 0, result.stderr[-3000:]
    assert pipeline.table("sessions")["src_ip"].tolist() == ["45.10.0.1"]
    assert pipeline.table("asn_daily_stats")["session_count"].tolist() == [1]
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == "2026-11-20"


def test_the_cli_refuses_bad_configuration_before_writing(pipeline, tmp_path):
    result = materialize_cli(
        "2026-11-20", tmp_path / "dagster_home", env={"ASN_PIPELINE_START_DATE": "2026-02-30"}
    )

    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.endswith("ASN_PIPELINE_START_DATE='2026-02-30': expected a date as YYYY-MM-DD")
    assert not Path(pipeline.db_url.removeprefix("sqlite:///")).exists()
