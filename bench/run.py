"""`make bench`: the pipeline against the per-address baseline and the machine's own references.

    python -m bench.run [--smoke] [--runs 3] [--backends sqlite,postgres] [--pg-url URL]

Generates (once) a reproducible workload, loads the inventory history into template databases,
then measures each figure in a fresh process on a fresh copy of the history, several times, and
prints the medians. Results go to ``bench/results/`` as JSON and markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.history import Database, postgres_database, sqlite_database
from bench.workload import BENCH_ROOT, SMOKE, Shape, Workload, prepare

RESULTS = BENCH_ROOT / "results"
DEFAULT_PG_URL = f"postgresql+psycopg2://{getpass.getuser()}@127.0.0.1:5432/postgres"
# The write path since round two: the day handed from cowrie_sessions to the inventory step
# (staged and read back), then one transaction that writes its sessions with their ASN, its
# addresses and counters (before: write_sessions, upsert_inventory, snapshot_sessions).
UPSERT_STEPS = ("hand_on", "write_day")
TARGETS = {
    "sqlite_events_per_second": 200_000,
    "postgres_events_per_second": 130_000,
    "baseline_ratio": 100,
    "stage_share": 0.5,
    "history_growth": 1.5,
    "peak_rss_mib": 1536,
    "cli_over_in_process": 0.15,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny workload, one run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--histories", default="1000000,5000000")
    parser.add_argument("--baseline-addresses", type=int, default=10_000)
    parser.add_argument(
        "--pg-url", default=os.environ.get("ASN_PIPELINE_BENCH_PG_URL", DEFAULT_PG_URL)
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    shape = SMOKE if args.smoke else Shape()
    histories = [1_000, 5_000] if args.smoke else [int(h) for h in args.histories.split(",")]
    runs = 1 if args.smoke else args.runs

    started = time.perf_counter()
    _say(f"workload {shape.key}: {shape.events:,} events, {shape.addresses:,} addresses")
    workload = prepare(shape)
    results: dict = {
        "shape": shape.__dict__,
        "runs": runs,
        "histories": histories,
        "machine": _machine(),
        "backends": {},
    }
    for backend in args.backends.split(","):
        results["backends"][backend] = _measure_backend(backend, workload, histories, runs, args)
    results["summary"] = summarise(results)
    results["wall_seconds"] = time.perf_counter() - started
    markdown = render(results)
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = "smoke" if args.smoke else "latest"
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / f"{name}.md").write_text(markdown)
    if not args.smoke:
        (args.out / f"{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


def _measure_backend(
    backend: str, workload: Workload, histories: list[int], runs: int, args
) -> dict:
    found: dict = {"histories": {}}
    for size in histories:
        _say(f"{backend}: history of {size:,} addresses")
        db = _database(backend, workload, size, args.pg_url)
        stages, dagster, cli, references = [], [], [], []
        for run in range(runs):
            db.reset()
            stages.append(_measure("stages", workload, db))
            if size == histories[0]:  # the larger history is for the statistics' growth
                references.append(_measure("references", workload, db))
                db.reset()
                dagster.append(_measure("dagster", workload, db))
                db.reset()
                cli.append(_measure("cli", workload, db))
            _say(f"  run {run + 1}/{runs} done")
        found["histories"][size] = {
            "stages": stages,
            "references": references,
            "dagster": dagster,
            "cli": cli,
        }
        if size == histories[0]:
            db.reset()
            found["baseline"] = _measure(
                "baseline",
                workload,
                db,
                "--baseline-addresses",
                str(args.baseline_addresses),
            )
        db.drop()
    return found


def _database(backend: str, workload: Workload, size: int, pg_url: str) -> Database:
    if backend == "sqlite":
        return sqlite_database(workload, size)
    return postgres_database(workload, size, pg_url)


def _measure(what: str, workload: Workload, db: Database, *extra: str) -> dict:
    return measure(what, workload.root, db.url, *extra)


def measure(what: str, workload: Path, url: str, *extra: str, tree: Path | None = None) -> dict:
    """One ``bench.measure`` in a fresh process; with ``tree``, of that checkout's code (run
    through ``PYTHONPATH`` with this virtual environment)."""
    command = [sys.executable, "-m", "bench.measure", what, str(workload), url, *extra]
    environ = None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        command,
        cwd=tree or BENCH_ROOT.parent,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        where = f" in {tree}" if tree else ""
        raise SystemExit(f"{' '.join(command[2:4])}{where} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(results: dict) -> dict:
    """Medians per backend and the ratios the targets are stated in."""
    shape = results["shape"]
    summary = {}
    for backend, found in results["backends"].items():
        sizes = sorted(found["histories"], key=int)
        first = found["histories"][sizes[0]]
        stage = _median_seconds([r["seconds"] for r in first["stages"]])
        stage["upserts"] = sum(stage[s] for s in UPSERT_STEPS)
        reference = _median_seconds([r["seconds"] for r in first["references"]])
        dagster = _median_seconds([r["seconds"] for r in first["dagster"]])
        stages_total = sum(stage[s] for s in ("parse", "lookup", "upserts", "statistics"))
        e2e = dagster["materialise"]
        cli = statistics.median(r["seconds"]["cli"] for r in first["cli"])
        # Dagster's own time, within each run: the run's wall time minus the time its steps
        # report (the stages are timed in other processes, so subtracting them adds their noise).
        overhead = statistics.median(
            r["seconds"]["materialise"] - sum(r["steps"].values()) for r in first["dagster"]
        )
        addresses = first["stages"][0]["addresses"]
        pipeline_ips = addresses / (stage["lookup"] + stage["write_day"])
        baseline = found.get("baseline", {})
        growth = None
        if len(sizes) > 1:
            last = found["histories"][sizes[-1]]
            big = _median_seconds([r["seconds"] for r in last["stages"]])
            growth = {
                "history_small": int(sizes[0]),
                "history_large": int(sizes[-1]),
                "statistics_small": stage["statistics"],
                "statistics_large": big["statistics"],
                "ratio": big["statistics"] / stage["statistics"],
            }
        summary[backend] = {
            "events": shape["events"],
            "end_to_end_seconds": e2e,
            "end_to_end_events_per_second": shape["events"] / e2e,
            "stages_seconds": stage,
            "stages_total_seconds": stages_total,
            "checks_seconds": stage["checks"],
            "dagster_overhead_seconds": overhead,
            "load_definitions_seconds": dagster["load_definitions"],
            # The CLI path: the whole command (Python, imports, definitions, instance, run)
            # against the in-process run of the same day.
            "cli_seconds": cli,
            "cli_over_in_process": cli / e2e - 1,
            "reference_seconds": reference,
            "stage_share": {k: reference[k] / stage[k] for k in reference},
            "peak_rss_mib": max(r["peak_rss_mib"] for r in [*first["stages"], *first["dagster"]]),
            "pipeline_addresses_per_second": pipeline_ips,
            "baseline_addresses": baseline.get("ips"),
            "baseline_addresses_per_second": baseline.get("ips_per_second"),
            "baseline_ratio": pipeline_ips / baseline["ips_per_second"] if baseline else None,
            "history_growth": growth,
        }
    return summary


def _median_seconds(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


STAGES = (
    ("parse", "parse", "orjson.loads of every line"),
    ("lookup", "classify + lookup", "maxminddb get() of every address"),
    ("upserts", "upserts", "bulk load + INSERT ... ON CONFLICT of the same rows"),
    ("statistics", "statistics", "one GROUP BY of the day's sessions"),
)


def render(results: dict) -> str:
    """The markdown summary: headline figures against the targets, then stages by backend."""
    summary, shape = results["summary"], results["shape"]
    backends = list(summary)
    names = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
    lines = [
        f"Workload: {shape['events']:,} events, {shape['sessions']:,} sessions, "
        f"{shape['addresses']:,} addresses ({shape['ipv6_share']:.0%} IPv6, "
        f"{shape['bogon_share']:.0%} bogons), {shape['asns']:,} ASNs, "
        f"{shape['networks']:,} networks; history {results['histories'][0]:,} addresses "
        f"(and {results['histories'][-1]:,}). Median of {results['runs']} run(s). "
        f"{results['machine']}",
        "",
        "| figure | " + " | ".join(names.get(b, b) for b in backends) + " | target |",
        "|---|" + "---:|" * len(backends) + "---|",
    ]

    def row(label: str, values: list[str], target: str = "") -> None:
        lines.append(f"| {label} | " + " | ".join(values) + f" | {target} |")

    s = [summary[b] for b in backends]
    targets = {
        "sqlite": f"≥ {TARGETS['sqlite_events_per_second']:,}",
        "postgres": f"≥ {TARGETS['postgres_events_per_second']:,}",
    }
    row(
        "end to end, Dagster in process (events/s)",
        [f"{x['end_to_end_events_per_second']:,.0f}" for x in s],
        " / ".join(f"{names.get(b, b)} {targets.get(b, '')}" for b in backends),
    )
    row("end to end (s)", [f"{x['end_to_end_seconds']:.2f}" for x in s])
    row("sum of the stages (s)", [f"{x['stages_total_seconds']:.2f}" for x in s])
    row("the asset checks (s)", [f"{x['checks_seconds']:.2f}" for x in s])
    row(
        "Dagster's own overhead (s; run time minus its steps' time)",
        [f"{x['dagster_overhead_seconds']:.2f}" for x in s],
    )
    row(
        "loading the definitions (s, not in the above)",
        [f"{x['load_definitions_seconds']:.2f}" for x in s],
    )
    row(
        "`dagster asset materialize`, default executor and instance (s)",
        [f"{x['cli_seconds']:.2f}" for x in s],
    )
    row(
        "the same, over the in-process run",
        [f"{x['cli_over_in_process']:+.0%}" for x in s],
        f"≤ +{TARGETS['cli_over_in_process']:.0%}",
    )
    row(
        "peak RSS (MiB)",
        [f"{x['peak_rss_mib']:,.0f}" for x in s],
        f"≤ {TARGETS['peak_rss_mib']:,}",
    )
    row(
        "pipeline addresses/s (lookup + the day's write)",
        [f"{x['pipeline_addresses_per_second']:,.0f}" for x in s],
    )
    row(
        "baseline addresses/s (per-address ORM cascade)",
        [
            f"{x['baseline_addresses_per_second']:,.0f} ({x['baseline_addresses']:,} addresses)"
            if x["baseline_addresses_per_second"]
            else "-"
            for x in s
        ],
    )
    row(
        "pipeline ÷ baseline",
        [f"{x['baseline_ratio']:,.0f}×" if x["baseline_ratio"] else "-" for x in s],
        f"≥ {TARGETS['baseline_ratio']}× on PostgreSQL",
    )
    growth = [x["history_growth"] for x in s]
    if all(growth):
        row(
            "statistics, small history (s)",
            [f"{g['statistics_small']:.2f}" for g in growth],
        )
        row(
            "statistics, large history (s)",
            [f"{g['statistics_large']:.2f}" for g in growth],
        )
        row(
            "large ÷ small history",
            [f"{g['ratio']:.2f}×" for g in growth],
            f"≤ {TARGETS['history_growth']}×",
        )
    lines += [
        "",
        "| stage | reference | "
        + " | ".join(f"{names.get(b, b)} s | ref s | % of ref" for b in backends)
        + " |",
        "|---|---|" + "---:|---:|---:|" * len(backends),
    ]
    for key, label, reference in STAGES:
        cells = []
        for x in s:
            cells += [
                f"{x['stages_seconds'][key]:.2f}",
                f"{x['reference_seconds'][key]:.2f}",
                f"{x['stage_share'][key]:.0%}",
            ]
        lines.append(f"| {label} | {reference} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Upserts = "
        + " + ".join(UPSERT_STEPS)
        + ": "
        + "; ".join(
            f"{names.get(b, b)} " + ", ".join(f"{x['stages_seconds'][k]:.2f}" for k in UPSERT_STEPS)
            for b, x in zip(backends, s, strict=True)
        )
        + " s. Targets: each stage ≥ 50% of its reference's speed.",
    ]
    return "\n".join(lines) + "\n"


def _machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " + (
        f"Python {platform.python_version()}"
    )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
