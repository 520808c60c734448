"""`make demo`: its data has the shapes real honeypots produce, and the whole demo runs."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections import Counter

import dagster as dg
import maxminddb
import orjson

from asn_pipeline import demo
from asn_pipeline.lookup.special_purpose import canonical_ip, is_bogon
from asn_pipeline.settings import PROJECT_ROOT


def read_events(path):
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    events, malformed = [], 0
    for line in data.splitlines():
        try:
            event = orjson.loads(line)
            canonical_ip(event["src_ip"])
            events.append(event)
        except (orjson.JSONDecodeError, KeyError, ValueError):
            malformed += 1
    return events, malformed


def test_demo_data_has_the_shapes_of_real_honeypot_logs(tmp_path):
    paths = demo.generate(tmp_path)
    files = sorted(paths["landing"].glob("*/cowrie.json.*"))

    assert {f.parent.name for f in files} == set(demo.SENSORS)
    assert len({f.name.removesuffix(".gz") for f in files}) == len(demo.DEMO_DAYS) >= 7
    assert {f.name for f in files if f.suffix == ".gz"} == {f"cowrie.json.{demo.GZIPPED_DAY}.gz"}
    events, malformed = [], 0
    for path in files:
        file_events, file_malformed = read_events(path)
        events += file_events
        malformed += file_malformed
    assert malformed > 0
    sessions_per_ip = Counter()
    days_per_session = {}
    for event in events:
        days_per_session.setdefault(event["session"], set()).add(event["timestamp"][:10])
        if event["eventid"] == "cowrie.session.connect":
            sessions_per_ip[canonical_ip(event["src_ip"])] += 1
    assert {e["eventid"] for e in events} >= {
        "cowrie.session.connect",
        "cowrie.login.failed",
        "cowrie.command.input",
        "cowrie.session.closed",
    }
    assert max(sessions_per_ip.values()) >= 20
    assert any(":" in ip for ip in sessions_per_ip)
    assert any(e["src_ip"].startswith("::ffff:") for e in events)
    assert sum(is_bogon(ip) for ip in sessions_per_ip) >= 3
    assert any(len(days) == 2 for days in days_per_session.values())

    with maxminddb.open_database(str(paths["asn_db"])) as reader:
        assert reader.metadata().database_type == "GeoLite2-ASN"
        networks = [str(network) for network, _ in reader]
    assert len(networks) >= 32
    assert not any(is_bogon(n.split("/")[0]) for n in networks)


def test_the_demo_materialises_every_partition_and_prints_a_summary(tmp_path):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "ASN_PIPELINE_DB_URL": f"sqlite:///{tmp_path / 'demo.sqlite'}",
    }
    for variable in ("ASN_PIPELINE_LANDING_DIR", "ASN_PIPELINE_MAXMIND_ASN_DB"):
        env.pop(variable, None)

    result = subprocess.run(
        [sys.executable, "scripts/run_demo.py"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok  checks 11/11") == len(demo.DEMO_DAYS)
    assert "Top ASNs by sessions" in result.stdout
    assert "Rejected lines: 28" in result.stdout
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == len(demo.DEMO_DAYS)
        assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
