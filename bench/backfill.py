"""`make bench-backfill`: a year of demo-sized days backfilled as one run and as a run per day.

    python -m bench.backfill [--days 365] [--modes single,multi] [--keep]

Generates N demo-sized days (about 270 sessions each, ending 2026-11-20) with the demo's MaxMind
databases, then, each into its own SQLite inventory and its own Dagster instance (a copy of
dagster_home/dagster.yaml):

- ``single``: `dagster asset materialize --partition-range FIRST...LAST`, one run over the
  range (the assets' single-run backfill policy);
- ``multi``: `dagster job backfill -j daily_asn_inventory --from FIRST --to LAST`, one run per
  day, queued and launched by a real `dagster-daemon` (each run is its own process, as in
  production);

and prints the wall times, each run's cost beyond its own work (its steps), and each table's
checksum in both inventories. Exit status 1 if a run fails or the inventories differ. Results go
to ``bench/results/backfill.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.workload import BENCH_ROOT

ASSETS = "cowrie_sessions,ip_inventory,asn_inventory,asn_statistics"
LAST_DAY = dt.date(2026, 11, 20)
RESULTS = BENCH_ROOT / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--modes", default="single,multi")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from asn_pipeline import demo
    from asn_pipeline.settings import PROJECT_ROOT

    days = tuple(LAST_DAY - dt.timedelta(days=n) for n in reversed(range(args.days)))
    work = Path(tempfile.mkdtemp(prefix="asn-backfill-bench-"))
    started = time.monotonic()
    paths = demo.generate(work / "demo", days=days)
    print(f"{len(days)} demo days {days[0]}..{days[-1]} generated in {_since(started):.1f} s")
    base_env = {
        **os.environ,
        "ASN_PIPELINE_LANDING_DIR": str(paths["landing"]),
        "ASN_PIPELINE_MAXMIND_ASN_DB": str(paths["asn_db"]),
        "ASN_PIPELINE_MAXMIND_CITY_DB": str(paths["city_db"]),
    }
    results: dict = {"days": len(days), "first": str(days[0]), "last": str(days[-1])}
    for mode in args.modes.split(","):
        home = work / mode / "dagster_home"
        home.mkdir(parents=True)
        shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home)
        env = {
            **base_env,
            "DAGSTER_HOME": str(home),
            "ASN_PIPELINE_DB_URL": f"sqlite:///{work / mode / 'inventory.sqlite'}",
        }
        with _instance(env):
            pass  # its storage is created here, not by the daemon and the CLI at once
        measure = {"single": single_run, "multi": run_per_day}[mode]
        results[mode] = measure(days, env, PROJECT_ROOT)
        if results[mode]["exit_code"] == 0:
            results[mode]["checksums"] = checksums(env["ASN_PIPELINE_DB_URL"])
        print(json.dumps({k: v for k, v in results[mode].items() if k != "checksums"}), flush=True)

    ok = report(results, args.out)
    if args.keep:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def single_run(days: tuple[dt.date, ...], env: dict[str, str], cwd: Path) -> dict:
    """One `dagster asset materialize` process over the whole range."""
    command = [_tool("dagster"), "asset", "materialize", "-m", "asn_pipeline.definitions"]
    command += ["--select", ASSETS, "--partition-range", f"{days[0]}...{days[-1]}"]
    started = time.monotonic()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = _since(started)
    if result.returncode:
        print(result.stdout[-3000:], result.stderr[-3000:], file=sys.stderr)
    runs = run_costs(env)
    return {
        "wall_seconds": round(wall, 1),
        "exit_code": result.returncode,
        "runs": len(runs),
        "succeeded": sum(r["status"] == "SUCCESS" for r in runs),
        "step_seconds": round(sum(r["work"] for r in runs), 1),
        "materialised_partitions": materialised_partitions(env),
    }


def run_per_day(days: tuple[dt.date, ...], env: dict[str, str], cwd: Path) -> dict:
    """A job backfill of one run per day, launched by a real daemon."""
    daemon = subprocess.Popen(
        [_tool("dagster-daemon"), "run", "-m", "asn_pipeline.definitions"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = time.monotonic()
        command = [_tool("dagster"), "job", "backfill", "-m", "asn_pipeline.definitions"]
        command += ["-j", "daily_asn_inventory", "--noprompt"]
        command += ["--from", str(days[0]), "--to", str(days[-1])]
        submitted = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        if submitted.returncode:
            print(submitted.stdout[-3000:], submitted.stderr[-3000:], file=sys.stderr)
            return {"exit_code": submitted.returncode}
        submit_seconds = _since(started)
        while not finished(env, len(days)):
            time.sleep(2)
        wall = _since(started)
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    runs = run_costs(env)
    overheads = sorted(r["overhead"] for r in runs)
    walls = sorted(r["wall"] for r in runs)
    return {
        "wall_seconds": round(wall, 1),
        "submit_seconds": round(submit_seconds, 1),
        "exit_code": 0,
        "runs": len(runs),
        "succeeded": sum(r["status"] == "SUCCESS" for r in runs),
        "run_wall_median": round(statistics.median(walls), 2),
        "run_wall_p90": round(walls[int(0.9 * (len(walls) - 1))], 2),
        "run_work_median": round(statistics.median(r["work"] for r in runs), 2),
        "run_overhead_median": round(statistics.median(overheads), 2),
        "run_overhead_p90": round(overheads[int(0.9 * (len(overheads) - 1))], 2),
        "run_overhead_max": round(overheads[-1], 2),
        "runs_per_minute": round(len(runs) / wall * 60, 1),
        "materialised_partitions": materialised_partitions(env),
    }


def finished(env: dict[str, str], expected: int) -> bool:

    with _instance(env) as instance:
        runs = instance.get_runs()
        done = [r for r in runs if r.is_finished]
        return len(runs) >= expected and len(done) == len(runs)


def run_costs(env: dict[str, str]) -> list[dict]:
    """Per run: its wall time from the launcher's RUN_STARTING to its end, the sum of its steps'
    times (its own work) and the difference (what the run costs beyond its work)."""
    import dagster as dg

    costs = []
    with _instance(env) as instance:
        for record in instance.get_run_records():
            events = instance.all_logs(record.dagster_run.run_id)
            times = {}
            work = 0.0
            step_started: dict[str, float] = {}
            for event in events:
                kind = event.dagster_event_type
                if kind is None:
                    continue
                if kind in (dg.DagsterEventType.RUN_STARTING, dg.DagsterEventType.RUN_START):
                    times.setdefault(kind, event.timestamp)
                elif kind == dg.DagsterEventType.STEP_START:
                    step_started[event.step_key] = event.timestamp
                elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
                    work += event.timestamp - step_started.pop(event.step_key, event.timestamp)
                elif kind in (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE):
                    times["end"] = event.timestamp
            begin = times.get(dg.DagsterEventType.RUN_STARTING) or times.get(
                dg.DagsterEventType.RUN_START
            )
            wall = times.get("end", begin) - begin
            costs.append(
                {
                    "status": record.dagster_run.status.value,
                    "wall": wall,
                    "work": work,
                    "overhead": wall - work,
                }
            )
    return costs


def materialised_partitions(env: dict[str, str]) -> dict[str, int]:
    import dagster as dg

    with _instance(env) as instance:
        return {
            asset: len(instance.get_materialized_partitions(dg.AssetKey(asset)))
            for asset in ASSETS.split(",")
        }


def checksums(db_url: str) -> dict[str, list]:
    from asn_pipeline.store import Inventory
    from asn_pipeline.store.report import table_checksums

    inventory = Inventory(db_url)
    try:
        return {table: list(value) for table, value in table_checksums(inventory).items()}
    finally:
        inventory.dispose()


def report(results: dict, out: Path) -> bool:
    lines = [
        f"# Backfill of {results['days']} demo-sized days ({results['first']}..{results['last']})",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, "
        "SQLite inventory, Dagster's SQLite instance.",
        "",
        "| mode | runs | succeeded | wall (s) | per run: wall median | work median "
        "| beyond work: median | p90 | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ok = True
    for mode in ("single", "multi"):
        figures = results.get(mode)
        if not figures:
            continue
        ok &= figures.get("exit_code") == 0 and figures.get("succeeded") == figures.get("runs")
        lines.append(
            f"| {mode} | {figures.get('runs')} | {figures.get('succeeded')} "
            f"| {figures.get('wall_seconds')} | {figures.get('run_wall_median', '')} "
            f"| {figures.get('run_work_median', figures.get('step_seconds', ''))} "
            f"| {figures.get('run_overhead_median', '')} | {figures.get('run_overhead_p90', '')} "
            f"| {figures.get('run_overhead_max', '')} |"
        )
    if all("checksums" in results.get(mode, {}) for mode in ("single", "multi")):
        lines += [
            "",
            "| table | rows | single run | run per day | equal |",
            "|---|---:|---|---|---|",
        ]
        for table, (rows, digest) in results["single"]["checksums"].items():
            other_rows, other = results["multi"]["checksums"][table]
            equal = (rows, digest) == (other_rows, other)
            ok &= equal
            lines.append(f"| {table} | {rows} | {digest} | {other} | {'yes' if equal else 'NO'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "backfill.md").write_text(text)
    (out / "backfill.json").write_text(json.dumps(results, indent=2) + "\n")
    return ok


def _instance(env: dict[str, str]):
    import dagster as dg

    return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _since(started: float) -> float:
    return time.monotonic() - started


if __name__ == "__main__":
    sys.exit(main())
