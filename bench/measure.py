"""One measurement, in a process of its own so that its peak RSS is its own.

    python -m bench.measure {stages,dagster,references,baseline} WORKLOAD_DIR DB_URL

Prints one JSON object (seconds per part, peak RSS in MiB) as its last line. The run database
must already hold the history (``bench.history``); ``bench.run`` resets it between runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import time
from pathlib import Path

from bench.workload import Shape, Workload


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=sorted(MEASURES))
    parser.add_argument("workload", type=Path)
    parser.add_argument("db_url")
    parser.add_argument("--baseline-addresses", type=int, default=None)
    args = parser.parse_args()
    shape = Shape(**json.loads((args.workload / "complete").read_text()))
    workload = Workload(shape, args.workload)
    result = MEASURES[args.what](workload, args.db_url, args)
    result["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(result), flush=True)
    return 0


def _peak_rss_mib() -> float:
    """This process's own peak RSS (``VmHWM``). ``ru_maxrss`` carries the parent's peak over
    fork and exec: after ``make bench`` loaded a history template in its own process, every
    measurement reported that process's 1.7 GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_stages(workload: Workload, db_url: str, _args: argparse.Namespace) -> dict:
    """The pipeline's domain code, step by step, as the assets call it, without Dagster."""
    from asn_pipeline.cowrie import files_for_day, parse_day
    from asn_pipeline.lookup.enrich import look_up
    from asn_pipeline.lookup.maxmind import MaxMindLookup
    from asn_pipeline.store import Inventory, audit, derived, step_outputs
    from asn_pipeline.store import inventory as store
    from asn_pipeline.store.schema import ensure_schema
    from asn_pipeline.store.sessions import DayWrite

    inventory = Inventory(db_url)
    ensure_schema(inventory)
    day, run_id = workload.day, "bench"
    timer = _Timer()
    with timer("parse"):
        parsed = parse_day(files_for_day(workload.landing, day).files)
        write = DayWrite.of(day, parsed, run_id, in_memory=True)
    with timer("hand_on"):  # cowrie_sessions stages the day, the inventory step reads it back
        step_outputs.stage_day(inventory, day, run_id, write, write.addresses)
        addresses = step_outputs.fetch(
            inventory, step_outputs.staged(run_id, day, step_outputs.STAGED_ADDRESSES)
        )
        write = step_outputs.fetch(inventory, step_outputs.staged(run_id, day))
    with timer("lookup"):
        maxmind = MaxMindLookup(workload.asn_db)
        lookups = look_up(addresses, maxmind)
        maxmind.close()
    with timer("write_day"):  # sessions with their ASN, addresses and counters: one transaction
        store.upsert_lookups(
            inventory, lookups.addresses, run_id, dt.datetime.now(dt.UTC), day=write
        )
    with timer("statistics"):
        derived.refresh_statistics(inventory)
        derived.day_statistics(inventory, day)
    with timer("checks"):  # what the asset checks' three steps query (docs/checks.md)
        ingested = audit.sessions_audit(inventory, day, day)
        addressed, asns = audit.inventory_audit(inventory, day, day)
        statistics = audit.statistics_audit(inventory, day, day)
    found = {
        "split_sessions": ingested.split_sessions,
        "ip_counter": addressed.counter_mismatches,
        "misclassified_addresses": addressed.misclassified,
        "dangling_asn_references": addressed.dangling_current_asn + addressed.session_asns_missing,
        "asn_counter": len(asns.counter_mismatches),
        "day_statistics": statistics.mismatches,
        "dangling_asn_references_anywhere": audit.dangling_asn_references(inventory),
    }
    inventory.dispose()
    parsed.close()
    return {
        "seconds": timer.seconds,
        "audit": found,
        "events": parsed.events_read,
        "sessions": len(parsed.fragments),
        "addresses": len(addresses),
        "rejected": len(parsed.rejected),
    }


def _pipeline_environ(workload: Workload, db_url: str) -> dict[str, str]:
    """This process's environment with the workload's inventory, logs and ASN database, and no
    City database: the configuration of both Dagster measurements."""
    env = {k: v for k, v in os.environ.items() if k != "ASN_PIPELINE_MAXMIND_CITY_DB"}
    env.update(
        ASN_PIPELINE_DB_URL=db_url,
        ASN_PIPELINE_LANDING_DIR=str(workload.landing),
        ASN_PIPELINE_MAXMIND_ASN_DB=str(workload.asn_db),
    )
    return env


def measure_dagster(workload: Workload, db_url: str, _args: argparse.Namespace) -> dict:
    """The four assets materialised in process by Dagster, as a user's run would."""
    environ = _pipeline_environ(workload, db_url)
    os.environ.clear()
    os.environ.update(environ)
    import dagster as dg

    from asn_pipeline.definitions import defs
    from asn_pipeline.defs.automation.jobs import DAILY_JOB

    timer = _Timer()
    with timer("load_definitions"):
        job = defs().resolve_job_def(DAILY_JOB)
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    with dg.DagsterInstance.ephemeral() as instance, timer("materialise"):
        result = job.execute_in_process(
            partition_key=workload.day.isoformat(), instance=instance, run_config=quiet
        )
    assert result.success
    from asn_pipeline.store.database import WRITE_LOCK

    steps = {
        event.step_key: event.event_specific_data.duration_ms / 1000
        for event in result.all_events
        if event.is_step_success
    }
    lock = {"waited": WRITE_LOCK.waited, "held": WRITE_LOCK.held, "writes": WRITE_LOCK.writes}
    return {"seconds": timer.seconds, "steps": steps, "write_lock": lock}


def measure_cli(workload: Workload, db_url: str, _args: argparse.Namespace) -> dict:
    """The same day as ``measure_dagster``, as a user starts it: ``dagster asset materialize``
    in a process of its own, with the project's default executor and a copy of the project's
    default instance (``dagster_home/dagster.yaml``) in a scratch ``DAGSTER_HOME`` whose storage
    exists before the timed command, as a user's does."""
    import shutil
    import subprocess
    import tempfile

    from asn_pipeline.settings import PROJECT_ROOT

    env = {
        key: value
        for key, value in _pipeline_environ(workload, db_url).items()
        if not key.startswith("DAGSTER_")
    }
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "asset", "materialize", "-m", "asn_pipeline.definitions"]
    command += ["--select", ",".join(ASSETS), "--partition", workload.day.isoformat()]
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as home:
        shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home)
        env["DAGSTER_HOME"] = home
        # A user's instance exists before the run: its storage is created here, not timed.
        subprocess.run([str(dagster), "instance", "migrate"], env=env, capture_output=True)
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"dagster asset materialize failed:\n{done.stderr[-4000:]}")
    return {"seconds": {"cli": seconds}}


def measure_references(workload: Workload, db_url: str, _args: argparse.Namespace) -> dict:
    """What the machine does with the same data and no pipeline: parse, look up, bulk write."""
    from asn_pipeline.cowrie import files_for_day, parse_day
    from asn_pipeline.lookup.enrich import LOOKUP_COLUMNS, look_up
    from asn_pipeline.lookup.maxmind import MaxMindLookup
    from bench import references

    files = files_for_day(workload.landing, workload.day).files
    addresses = workload.addresses()
    parse = references.orjson_parse([f.path for f in files])
    lookups = references.maxminddb_lookups(str(workload.asn_db), addresses)
    parsed = parse_day(files)
    maxmind = MaxMindLookup(workload.asn_db)
    looked_up = look_up(addresses, maxmind).addresses
    maxmind.close()
    fragments = parsed.fragments.copy()
    tables = {
        "sessions": fragments,
        "ip_inventory": looked_up[LOOKUP_COLUMNS],
        "asn_inventory": looked_up.dropna(subset=["asn_number"])
        .groupby("asn_number", as_index=False)["organization_name"]
        .max(),
    }
    keys = {
        "sessions": ["sensor", "session_id"],
        "ip_inventory": ["ip_address"],
        "asn_inventory": ["asn_number"],
    }
    write = references.copy_upsert(db_url, tables, keys)
    statistics = references.group_by_day(db_url, workload.day)
    return {
        "seconds": {
            "parse": parse["seconds"],
            "lookup": lookups["seconds"],
            "upserts": write["seconds"],
            "statistics": statistics["seconds"],
        },
        "rows_written": write["rows"],
    }


def measure_baseline(workload: Workload, db_url: str, args: argparse.Namespace) -> dict:
    """The predecessor's per-address ORM cascade on the day's addresses."""
    from bench.baseline import run_baseline

    addresses = workload.addresses()
    if args.baseline_addresses:
        addresses = addresses[: args.baseline_addresses]
    return run_baseline(db_url, addresses, str(workload.asn_db))


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> _Timer:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds[self._name] = time.perf_counter() - self._start


ASSETS = ("cowrie_sessions", "ip_inventory", "asn_inventory", "asn_statistics")

MEASURES = {
    "stages": measure_stages,
    "dagster": measure_dagster,
    "cli": measure_cli,
    "references": measure_references,
    "baseline": measure_baseline,
}

if __name__ == "__main__":
    sys.exit(main())
