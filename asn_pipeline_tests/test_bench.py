"""The benchmark's smoke run: every figure of `make bench` on a tiny workload, so it cannot rot.

No timing is asserted; what is asserted is that each measurement ran on the data it claims and
that the pipeline left an inventory that passes the audits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from asn_pipeline.settings import PROJECT_ROOT
from bench.workload import SMOKE


def test_the_benchmark_smoke_run_measures_every_figure(postgres_server, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "ASN_PIPELINE_BENCH_PG_URL": postgres_server},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "smoke.json").read_text())
    assert (tmp_path / "smoke.md").read_text().startswith("Workload:")
    assert set(results["backends"]) == {"sqlite", "postgres"}
    for backend, found in results["backends"].items():
        for size, measured in found["histories"].items():
            for stages in measured["stages"]:
                assert stages["events"] == SMOKE.events - SMOKE.malformed_lines
                assert stages["sessions"] == SMOKE.sessions
                assert stages["addresses"] == SMOKE.addresses
                assert not any(stages["audit"].values()), (backend, size, stages["audit"])
        assert found["baseline"]["ips"] == SMOKE.addresses
        summary = results["summary"][backend]
        assert summary["end_to_end_seconds"] > 0
        assert summary["cli_seconds"] > summary["end_to_end_seconds"]  # the same run, and more
        assert set(summary["stage_share"]) == {"parse", "lookup", "upserts", "statistics"}
        assert summary["history_growth"]["history_large"] == 5_000
