"""Backfill N days with K concurrent Dagster runs on PostgreSQL; compare with a serial pass.

    .venv/bin/python scripts/concurrent_backfill.py --days 30 --concurrency 4

Generates N days of demo-shaped logs (every day shares addresses and ASNs), then
1. materialises them one after another, in date order, into one PostgreSQL schema;
2. materialises them again into another schema as N `dagster asset materialize` runs, K at a time,
   recorded by a Dagster instance on PostgreSQL (dagster_home/postgres/dagster.yaml);
and prints each table's row count and checksum for both. Exit status 1 when they differ.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

ASSETS = "cowrie_sessions,ip_inventory,asn_inventory,asn_statistics"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "ASN_PIPELINE_TEST_PG_URL", f"postgresql+psycopg2://{getpass.getuser()}@127.0.0.1/test"
        ),
        help="server and database to create the work schemas in",
    )
    args = parser.parse_args()

    from asn_pipeline import demo
    from asn_pipeline.settings import PROJECT_ROOT

    last = dt.date(2026, 11, 20)
    days = tuple(last - dt.timedelta(days=n) for n in reversed(range(args.days)))
    work = Path(tempfile.mkdtemp(prefix="asn-backfill-"))
    paths = demo.generate(work, days=days)
    schemas = {name: schema_url(args.pg_url, f"backfill_{name}") for name in ("serial", "dagster")}
    schemas["parallel"] = schema_url(args.pg_url, "backfill_parallel")
    os.environ.update(
        ASN_PIPELINE_LANDING_DIR=str(paths["landing"]),
        ASN_PIPELINE_MAXMIND_ASN_DB=str(paths["asn_db"]),
        ASN_PIPELINE_MAXMIND_CITY_DB=str(paths["city_db"]),
    )

    started = time.monotonic()
    serial(days, schemas["serial"])
    serial_seconds = time.monotonic() - started

    dagster_home = work / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "postgres" / "dagster.yaml", dagster_home)
    env = {
        **os.environ,
        "ASN_PIPELINE_DB_URL": schemas["parallel"],
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_URL": schemas["dagster"],
    }
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        codes = list(pool.map(lambda day: materialize(day, env, PROJECT_ROOT), days))
    parallel_seconds = time.monotonic() - started

    runs = recorded_runs(dagster_home, schemas["dagster"])
    same = report(days, args.concurrency, schemas, serial_seconds, parallel_seconds, codes, runs)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if same and not any(codes) else 1


def schema_url(base: str, schema: str) -> str:
    """A fresh schema (dropped first if it exists) and a URL that puts it on the search path."""
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine.dispose()
    url = sa.engine.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def serial(days: tuple[dt.date, ...], db_url: str) -> None:
    import dagster as dg

    from asn_pipeline.definitions import defs
    from asn_pipeline.defs.automation.jobs import DAILY_JOB

    os.environ["ASN_PIPELINE_DB_URL"] = db_url
    job = defs().resolve_job_def(DAILY_JOB)
    with dg.DagsterInstance.ephemeral() as instance:
        for day in days:
            job.execute_in_process(
                partition_key=day.isoformat(), instance=instance, run_config=QUIET
            )


def materialize(day: dt.date, env: dict[str, str], cwd: Path) -> int:
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "asset", "materialize", "-m", "asn_pipeline.definitions"]
    command += ["--select", ASSETS, "--partition", day.isoformat()]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        print(f"{day}: exit {result.returncode}\n{result.stderr[-2000:]}", file=sys.stderr)
    return result.returncode


def recorded_runs(dagster_home: Path, dagster_url: str) -> list:
    import dagster as dg

    os.environ["DAGSTER_PG_URL"] = dagster_url
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        return [
            (run.tags.get("dagster/partition"), run.status.value) for run in instance.get_runs()
        ]


def report(days, concurrency, schemas, serial_seconds, parallel_seconds, codes, runs) -> bool:
    from asn_pipeline.store import Inventory
    from asn_pipeline.store.report import table_checksums

    sums = {}
    for name in ("serial", "parallel"):
        inventory = Inventory(schemas[name])
        sums[name] = table_checksums(inventory)
        inventory.dispose()
    succeeded = sum(status == "SUCCESS" for _, status in runs)
    print(f"{len(days)} partitions {days[0]}..{days[-1]}")
    print(f"serial, in process:            {serial_seconds:7.1f} s")
    print(
        f"{concurrency} concurrent dagster runs:   {parallel_seconds:7.1f} s  "
        f"({succeeded}/{len(runs)} runs SUCCESS in the PostgreSQL instance, "
        f"{sum(c != 0 for c in codes)} failed commands)"
    )
    print("\n| table | rows | serial checksum | concurrent checksum | equal |")
    print("|---|---:|---|---|---|")
    same = True
    for table, (rows, digest) in sums["serial"].items():
        other_rows, other = sums["parallel"][table]
        equal = (rows, digest) == (other_rows, other)
        same &= equal
        print(f"| {table} | {rows} | {digest} | {other} | {'yes' if equal else 'NO'} |")
    return same and succeeded == len(days)


if __name__ == "__main__":
    sys.exit(main())
