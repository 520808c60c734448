"""Throughput of concurrent partitions on PostgreSQL: 4 days materialised 1, 2 or 4 at a time,
then one at a time again.

    python -m bench.scaling [--lines 500000] [--pg-url URL]

The days are variants of the benchmark day: the first ``--lines`` lines of each sensor's file,
moved to another date with the session ids made unique to that date, so the days share their
addresses and ASNs (as real days do) but not their sessions. Each day is one Dagster run in a
process of its own (``bench.measure dagster``) against one copy of the 1,000,000-address history.

The first pass runs on caches that no earlier pass has warmed, and it has measured slower than
the same code one at a time later (docs/performance.md). So the days are materialised one at a
time at the start and again at the end, and the concurrent passes are compared with the faster.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import time

from bench.history import postgres_database
from bench.run import DEFAULT_PG_URL, RESULTS
from bench.workload import BENCH_ROOT, Shape, Workload, prepare

DAYS = 4
PASSES = (1, 2, 4, 1)  # runs at a time


def variant(workload: Workload, offset: int, lines: int) -> Workload:
    """The benchmark day moved ``offset`` days back, cut to ``lines`` lines per sensor file."""
    day = workload.day - dt.timedelta(days=offset)
    root = workload.root / "variants" / f"{day.isoformat()}-{lines}"
    shape = dataclasses.replace(workload.shape, day=day.isoformat())
    moved = Workload(shape, root)
    if (root / "complete").exists():
        return moved
    old_stamp, new_stamp = f'"{workload.day.isoformat()}T'.encode(), f'"{day}T'.encode()
    marker = f'"session":"d{offset}'.encode()
    for source in workload.log_files():
        target = root / "landing" / source.parent.name / f"cowrie.json.{day.isoformat()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with source.open("rb") as read, target.open("wb") as write:
            for number, line in enumerate(read):
                if number == lines:
                    break
                line = line.replace(old_stamp, new_stamp).replace(b'"session":"', marker)
                write.write(line)
    for name in ("asn.mmdb", "day_addresses.pkl"):
        (root / name).unlink(missing_ok=True)
        (root / name).symlink_to(workload.root / name)
    (root / "complete").write_text(json.dumps(dataclasses.asdict(shape)))
    return moved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument(
        "--pg-url", default=os.environ.get("ASN_PIPELINE_BENCH_PG_URL", DEFAULT_PG_URL)
    )
    args = parser.parse_args()
    workload = prepare(Shape())
    days = [variant(workload, offset, args.lines) for offset in range(1, DAYS + 1)]
    db = postgres_database(workload, 1_000_000, args.pg_url)
    rows = []
    for concurrency in PASSES:
        db.reset()
        cpu_before = _cpu_times()
        started = time.perf_counter()
        pending = list(days)
        running: list[subprocess.Popen] = []
        locks: list[dict] = []
        while pending or running:
            while pending and len(running) < concurrency:
                day = pending.pop(0)
                command = [sys.executable, "-m", "bench.measure", "dagster", str(day.root), db.url]
                running.append(
                    subprocess.Popen(command, cwd=BENCH_ROOT.parent, stdout=subprocess.PIPE)
                )
            for process in list(running):
                if process.poll() is not None:
                    if process.returncode != 0:
                        raise SystemExit(f"a run failed with status {process.returncode}")
                    output = process.communicate()[0].decode().strip().splitlines()[-1]
                    locks.append(json.loads(output)["write_lock"])
                    running.remove(process)
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        cores = _cores_busy(cpu_before, _cpu_times())
        events = DAYS * 2 * args.lines  # two sensor files per day (malformed lines included)
        held = sum(lock["held"] for lock in locks)
        waited = sum(lock["waited"] for lock in locks)
        rows.append((concurrency, seconds, events / seconds, held, waited, cores))
        print(
            f"{concurrency} at a time: {seconds:.1f} s, {events / seconds:,.0f} lines/s, "
            f"write lock held {held:.1f} s, waited for {waited:.1f} s, {cores:.2f} cores busy"
        )
    db.drop()
    table = [
        f"{DAYS} partitions of {2 * args.lines:,} lines each, 1,000,000-address history, "
        "PostgreSQL; each partition one in-process Dagster run in its own process.",
        "",
        "The write lock: the time all runs' inventory writes held it (share of the wall time) "
        "and waited for it, summed over the runs (``asn_pipeline.store.database.WRITE_LOCK``). "
        "Cores busy: the machine's CPU time over the wall time (/proc/stat, all processes, the "
        f"PostgreSQL server's included), of {os.cpu_count()}. One at a time twice, first and "
        "last; the ratios are against the faster of the two.",
        "",
        "| runs at a time | wall (s) | lines/s | vs one at a time | lock held (s) | lock held, "
        "share of wall | waited for the lock (s) | cores busy |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    one = max(r for k, _, r, *_ in rows if k == 1)  # the faster pass one at a time
    table += [
        f"| {k}{' (again)' if i == len(rows) - 1 else ''} | {s:.1f} | {r:,.0f} | {r / one:.2f}× "
        f"| {h:.1f} | {h / s:.0%} | {w:.1f} | {c:.2f} |"
        for i, (k, s, r, h, w, c) in enumerate(rows)
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scaling.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0


def _cpu_times() -> tuple[int, int]:
    """The machine's busy and total CPU time so far, in clock ticks (/proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def _cores_busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How many cores were busy on average between two ``_cpu_times``."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / total * (os.cpu_count() or 1) if total else 0.0


if __name__ == "__main__":
    sys.exit(main())
