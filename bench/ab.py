"""Two versions of the code on the same day, alternated: the in-process run and the CLI run.

    python -m bench.ab BEFORE_TREE AFTER_TREE [--backend sqlite] [--rounds 3] [--out FILE]

Each tree is a checkout of the project (``git worktree add``) whose code runs through
``PYTHONPATH``, with this checkout's virtual environment. Every measurement is ``bench.measure
dagster`` or ``bench.measure cli`` in a fresh process on a fresh copy of the 1M-address history;
rounds alternate which version goes first, so that a machine whose speed drifts during the session
weighs on both alike. Prints one line per measurement and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from bench.history import postgres_database, sqlite_database
from bench.run import DEFAULT_PG_URL, measure
from bench.workload import Shape, prepare

MEASURES = ("dagster", "cli")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument(
        "--pg-url", default=os.environ.get("ASN_PIPELINE_BENCH_PG_URL", DEFAULT_PG_URL)
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    workload = prepare(Shape())
    if args.backend == "sqlite":
        db = sqlite_database(workload, args.history)
    else:
        db = postgres_database(workload, args.history, args.pg_url)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    found = []
    for round_ in range(args.rounds):
        order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
        for what in MEASURES:
            for version in order:
                db.reset()
                seconds = _measure(trees[version], what, workload.root, db.url)
                found.append({"round": round_, "what": what, "version": version, **seconds})
                print(json.dumps(found[-1]), flush=True)
    medians = {
        f"{what} {version}": statistics.median(
            r["seconds"] for r in found if r["what"] == what and r["version"] == version
        )
        for what in MEASURES
        for version in trees
    }
    for version in trees:
        cli, in_process = medians[f"cli {version}"], medians[f"dagster {version}"]
        over = cli / in_process - 1
        print(f"{version}: in process {in_process:.2f} s, CLI {cli:.2f} s ({over:+.0%})")
    if args.out:
        args.out.write_text(json.dumps({"runs": found, "medians": medians}, indent=2))
    return 0


def _measure(tree: Path, what: str, workload: Path, url: str) -> dict:
    result = measure(what, workload, url, tree=tree)
    seconds = result["seconds"]
    return {
        "seconds": seconds.get("materialise", seconds.get("cli")),
        "write_lock": result.get("write_lock"),
    }


if __name__ == "__main__":
    sys.exit(main())
