"""The inventory as earlier days left it: a history of addresses, each with one session (of one
day, so stored as its sessions row alone, with no fragment).

Loaded once per (workload, size, database) into a template (a SQLite file, a PostgreSQL database),
then copied for every measured run, so each run starts from the same state. The rows satisfy the
pipeline's invariants: counters and daily statistics are what the sessions say.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from asn_pipeline.lookup.special_purpose import GLOBAL, classify
from asn_pipeline.store import Inventory
from asn_pipeline.store.database import SQL_DIR
from asn_pipeline.store.schema import ensure_schema
from bench.workload import Workload

CHUNK = 250_000
HISTORY_RUN = "bench-history"


@dataclass(frozen=True)
class Database:
    """Where a measured run writes: a URL, and how to reset it to the history template."""

    backend: str
    url: str
    template: str

    def reset(self) -> None:
        """Replace the run database by a fresh copy of the template."""
        if self.backend == "sqlite":
            target = Path(sa.engine.make_url(self.url).database)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(self.template, target)
            # The copy (a gigabyte) is on disk before the next measurement starts, rather than
            # written back while that measurement commits.
            os.sync()
            return
        run_db = sa.engine.make_url(self.url).database
        with _admin(self.url) as conn:
            _terminate(conn, run_db)
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{run_db}"')
            conn.exec_driver_sql(f'CREATE DATABASE "{run_db}" TEMPLATE "{self.template}"')

    def drop(self) -> None:
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{sa.engine.make_url(self.url).database}{suffix}").unlink(missing_ok=True)
            return
        with _admin(self.url) as conn:
            run_db = sa.engine.make_url(self.url).database
            _terminate(conn, run_db)
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{run_db}"')


def _schema_key(dialect: str) -> str:
    """A hash of the dialect's DDL: a template built with another schema is rebuilt."""
    ddl = "".join(p.read_text() for p in sorted((SQL_DIR / dialect).glob("0*.sql")))
    return hashlib.sha256(ddl.encode()).hexdigest()[:8]


def sqlite_database(workload: Workload, size: int) -> Database:
    """A SQLite run database whose template holds ``size`` history addresses."""
    template = workload.root / f"history-{size}-{_schema_key('sqlite')}.sqlite"
    complete = template.with_suffix(".complete")
    if not (complete.exists() and template.exists()):
        for old in workload.root.glob(f"history-{size}-*.sqlite"):
            old.unlink()
            old.with_suffix(".complete").unlink(missing_ok=True)
        _load(f"sqlite:///{template}", workload, size)
        complete.touch()
    return Database("sqlite", f"sqlite:///{workload.root / 'run.sqlite'}", str(template))


def postgres_database(workload: Workload, size: int, server_url: str) -> Database:
    """A PostgreSQL run database whose template database holds ``size`` history addresses."""
    name = f"asn_bench_{workload.shape.key}_{size}_{_schema_key('postgres')}"
    base = sa.engine.make_url(server_url)
    template_url = base.set(database=name).render_as_string(hide_password=False)
    with _admin(server_url) as conn:
        stale = conn.exec_driver_sql(
            "SELECT datname FROM pg_database WHERE datname LIKE %s AND datname <> %s",
            (f"asn_bench_{workload.shape.key}_{size}_%", name),
        ).scalars()
        for old in list(stale):  # templates of an older schema
            conn.exec_driver_sql(f'DROP DATABASE "{old}"')
        exists = conn.exec_driver_sql(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).first()
        loaded = exists and _has_marker(template_url)
        if not loaded:
            _terminate(conn, name)
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    if not loaded:
        _load(template_url, workload, size)
        engine = sa.create_engine(template_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
            conn.exec_driver_sql("CREATE TABLE bench_history_complete (size bigint)")
        engine.dispose()
    run_url = base.set(database="asn_bench_run").render_as_string(hide_password=False)
    return Database("postgres", run_url, name)


def _has_marker(url: str) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return bool(
                conn.exec_driver_sql(
                    "SELECT 1 FROM pg_tables WHERE tablename = 'bench_history_complete'"
                ).first()
            )
    finally:
        engine.dispose()


class _admin:
    """An autocommit connection to the server's maintenance database."""

    def __init__(self, url: str):
        admin_url = sa.engine.make_url(url).set(database="postgres")
        self.engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")

    def __enter__(self) -> sa.Connection:
        self.conn = self.engine.connect()
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
        self.engine.dispose()


def _terminate(conn: sa.Connection, database: str) -> None:
    conn.exec_driver_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    )


def _load(url: str, workload: Workload, size: int) -> None:
    """Write the history's rows, derived values included, straight through the drivers' bulk
    paths (a benchmark fixture, not the product's write path)."""
    inventory = Inventory(url)
    ensure_schema(inventory)
    inventory.dispose()
    frames = _history_frames(workload.history(size))
    if url.startswith("sqlite"):
        _load_sqlite(sa.engine.make_url(url).database, frames)
    else:
        _load_postgres(url, frames)


def _load_sqlite(path: str, frames: dict[str, pd.DataFrame]) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-2097152")  # 2 GiB: the indexes stay in memory
        conn.execute("BEGIN")
        for table, frame in frames.items():
            columns = ", ".join(frame.columns)
            marks = ", ".join("?" * len(frame.columns))
            statement = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
            for start in range(0, len(frame), CHUNK):
                part = frame.iloc[start : start + CHUNK].astype(object)
                rows = part.where(part.notna(), None).itertuples(index=False, name=None)
                conn.executemany(statement, rows)
        conn.commit()
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _load_postgres(url: str, frames: dict[str, pd.DataFrame]) -> None:
    engine = sa.create_engine(url)
    try:
        raw = engine.raw_connection()
        with raw.cursor() as cursor:
            for table, frame in frames.items():
                columns = ", ".join(frame.columns)
                for start in range(0, len(frame), CHUNK):
                    buffer = io.StringIO()
                    frame.iloc[start : start + CHUNK].to_csv(buffer, header=False, index=False)
                    buffer.seek(0)
                    cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN (FORMAT csv)", buffer)
        raw.commit()
        raw.close()
    finally:
        engine.dispose()


def _history_frames(history: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Rows of every inventory table, in foreign-key order."""
    n = len(history)
    ips = history["ip_address"]
    asn = history["asn_number"]
    mapped = asn.notna()
    ip_class = pd.Series(GLOBAL, index=history.index)
    ip_class[~mapped] = [classify(ip) for ip in ips[~mapped]]
    source = np.where(mapped, "maxmind", np.where(ip_class == GLOBAL, "none", "bogon"))
    day = pd.to_datetime(history["session_date"].astype(str))
    second = pd.Series(np.arange(n) % 86_000, index=history.index)
    first_at = day + pd.to_timedelta(second, unit="s")
    last_at = first_at + pd.Timedelta(seconds=60)
    first_text = first_at.dt.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    last_text = last_at.dt.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    date_text = day.dt.strftime("%Y-%m-%d")
    enriched_at = "2026-01-01T00:00:00.000000Z"
    session_ids = [f"h{i:011x}" for i in range(n)]

    ip_inventory = pd.DataFrame(
        {
            "ip_address": ips,
            "ip_version": np.where(ips.str.contains(":"), 6, 4),
            "ip_class": ip_class,
            "current_asn": asn,
            "asn_source": source,
            "asn_network": history["asn_network"],
            "first_seen": first_text,
            "last_seen": last_text,
            "session_count": 1,
            "build_epoch": pd.array(np.where(source == "bogon", None, 1_767_225_600), "Int64"),
            "enriched_at": enriched_at,
            "enriched_by_run": HISTORY_RUN,
            "enrichment": "{}",
        }
    )
    sessions = pd.DataFrame(
        {
            "sensor": "sensor-fra",
            "session_id": session_ids,
            "src_ip": ips,
            "ingest_date": date_text,
            "first_event_at": first_text,
            "last_event_at": last_text,
            "event_count": 5,
            "asn_number": asn,
        }
    )
    by_asn = ip_inventory[mapped].groupby("current_asn")
    asn_inventory = pd.DataFrame(
        {
            "organization_name": [f"Bench Network {a}" for a in by_asn.groups],
            "first_seen": by_asn["first_seen"].min(),
            "last_seen": by_asn["last_seen"].max(),
            "unique_ip_count": by_asn.size(),
            "total_session_count": by_asn["session_count"].sum(),
            "name_source": "maxmind",
            "updated_at": enriched_at,
            "updated_by_run": HISTORY_RUN,
        }
    ).rename_axis("asn_number")
    asn_inventory = asn_inventory.reset_index()
    daily = (
        sessions[mapped]
        .groupby(["ingest_date", "asn_number"])
        .agg(session_count=("src_ip", "size"), unique_ip_count=("src_ip", "nunique"))
        .reset_index()
        .rename(columns={"ingest_date": "stat_date"})
    )
    daily["new_ip_count"] = daily["unique_ip_count"]  # one session per address: all are new
    ip_asn_history = pd.DataFrame(
        {
            "ip_address": ips[mapped],
            "asn_number": asn[mapped],
            "source": "maxmind",
            "first_observed": enriched_at,
            "last_observed": enriched_at,
            "build_epoch": 1_767_225_600,
        }
    )
    return {
        "asn_inventory": asn_inventory,
        "ip_inventory": ip_inventory,
        "sessions": sessions,
        "asn_daily_stats": daily,
        "ip_asn_history": ip_asn_history,
    }
