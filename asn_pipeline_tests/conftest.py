"""Shared fixtures: real Cowrie files, .mmdb files, inventories and Dagster runs."""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import gzip
import json
import os
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import orjson
import pandas as pd
import pytest
import sqlalchemy as sa
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from asn_pipeline.defs.automation.jobs import DAILY_JOB
from asn_pipeline.demo import Network, write_asn_mmdb, write_city_mmdb
from asn_pipeline.store import Inventory
from asn_pipeline.store.audit import counter_mismatches, dangling_asn_references
from asn_pipeline.store.report import DATA_TABLES, PROVENANCE_COLUMNS
from asn_pipeline.store.schema import ensure_schema
from asn_pipeline_tests import oracle
from asn_pipeline_tests.dns_server import CymruDnsServer

NETWORKS = [
    Network("45.10.0.0/16", 64496, "Example Hosting A", "NL"),
    Network("45.11.0.0/16", 64497, "Example Telecom B", "SG"),
    Network("45.12.0.0/16", 64498, "Example Mobile C", "BR"),
    Network("2a01:1000::/32", 64499, "Example IPv6 D", "DE"),
]
UNMAPPED_IP = "198.60.1.1"  # public, covered by no network above

TIME_COLUMNS = {
    "first_event_at",
    "last_event_at",
    "first_seen",
    "last_seen",
    "enriched_at",
    "updated_at",
    "first_observed",
    "last_observed",
}
DATE_COLUMNS = {"ingest_date", "stat_date", "fragment_date"}
DEFAULT_PG_URL = f"postgresql+psycopg2://{getpass.getuser()}@127.0.0.1:5432/test"


def ts(day: dt.date, hour: int = 12, minute: int = 0, second: float = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), dt.UTC) + dt.timedelta(seconds=second)


def cowrie_event(**fields) -> bytes:
    """One Cowrie event line of 2026-11-20; a field given as ``...`` is left out."""
    base = {
        "eventid": "cowrie.login.failed",
        "src_ip": "45.10.0.1",
        "session": "abc123",
        "sensor": "sensor-a",
        "timestamp": "2026-11-20T10:00:00.000000Z",
    }
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


@dataclass
class CowrieLogs:
    """Builds a landing directory of daily Cowrie files, one sub-folder per sensor."""

    root: Path
    lines: dict[tuple[str, dt.date], list[bytes]] = field(default_factory=lambda: defaultdict(list))

    def session(
        self,
        sensor: str,
        session_id: str,
        src_ip: str,
        start: dt.datetime,
        events: int = 3,
        step: dt.timedelta = dt.timedelta(seconds=20),
    ) -> None:
        """Events of one session, each in the daily file of its own timestamp's day."""
        for i in range(events):
            moment = start + i * step
            eventid = "cowrie.session.connect" if i == 0 else "cowrie.login.failed"
            event = {
                "eventid": eventid,
                "src_ip": src_ip,
                "src_port": 40000 + i,
                "session": session_id,
                "sensor": sensor,
                "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "message": "test",
            }
            self.lines[(sensor, moment.date())].append(orjson.dumps(event))

    def raw(self, sensor: str, day: dt.date, line: bytes) -> None:
        self.lines[(sensor, day)].append(line)

    def write(self, gzip_days: tuple[dt.date, ...] = ()) -> Path:
        for (sensor, day), lines in self.lines.items():
            folder = self.root / sensor
            folder.mkdir(parents=True, exist_ok=True)
            body = b"".join(line + b"\n" for line in lines)
            name = f"cowrie.json.{day.isoformat()}"
            if day in gzip_days:
                (folder / f"{name}.gz").write_bytes(gzip.compress(body))
            else:
                (folder / name).write_bytes(body)
        return self.root


@dataclass
class Pipeline:
    """The project's real Definitions, run partition by partition on a real Dagster instance."""

    db_url: str
    landing: Path
    instance: dg.DagsterInstance

    def definitions(self) -> dg.Definitions:
        from asn_pipeline.definitions import defs

        return defs()

    def run(
        self,
        *days: dt.date,
        raise_on_error: bool = True,
        assets: list[str] | None = None,
        ops: dict | None = None,
        tags: dict[str, str] | None = None,
    ) -> list[dg.ExecuteInProcessResult]:
        """Materialise the daily job (or only ``assets``) for each day, in the given order."""
        job = self.definitions().resolve_job_def(DAILY_JOB)
        selection = [dg.AssetKey(a) for a in assets] if assets else None
        run_config = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
        if ops:
            run_config["ops"] = ops
        return [
            job.execute_in_process(
                partition_key=day.isoformat(),
                instance=self.instance,
                raise_on_error=raise_on_error,
                asset_selection=selection,
                run_config=run_config,
                tags=tags,
            )
            for day in days
        ]

    def run_range(
        self, first: dt.date, last: dt.date, *, raise_on_error: bool = True
    ) -> dg.ExecuteInProcessResult:
        """Materialise the daily job over ``first``..``last`` in one run, as a single-run
        backfill (the assets' backfill policy) does."""
        job = self.definitions().resolve_job_def(DAILY_JOB)
        return job.execute_in_process(
            instance=self.instance,
            raise_on_error=raise_on_error,
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
            tags={
                ASSET_PARTITION_RANGE_START_TAG: first.isoformat(),
                ASSET_PARTITION_RANGE_END_TAG: last.isoformat(),
            },
        )

    def latest_metadata(self, asset: str, day: dt.date) -> dict:
        """The metadata of the newest materialisation of ``asset``'s partition ``day``."""
        [record] = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[day.isoformat()]),
            limit=1,
        ).records
        return record.asset_materialization.metadata

    def other(self, request, tmp_path: Path, name: str) -> Pipeline:
        """A pipeline on a second, empty inventory of the same backend, same logs and instance."""
        if self.backend == "postgres":
            url = request.getfixturevalue("postgres_schemas")()
        else:
            url = f"sqlite:///{tmp_path / f'{name}.sqlite'}"
        return Pipeline(url, self.landing, self.instance)

    @property
    def backend(self) -> str:
        return "postgres" if self.db_url.startswith("postgresql") else "sqlite"

    def create_schema(self) -> None:
        """Bring the inventory to the code's schema before any run (to set up triggers on it)."""
        inventory = Inventory(self.db_url)
        try:
            ensure_schema(inventory)
        finally:
            inventory.dispose()

    def execute(self, *statements: str) -> None:
        """Run raw SQL against the inventory (test set-up such as injected failures)."""
        engine = sa.create_engine(self.db_url)
        try:
            with engine.begin() as conn:
                for statement in statements:
                    conn.exec_driver_sql(statement)
        finally:
            engine.dispose()

    def table(self, name: str) -> pd.DataFrame:
        """A table with times as UTC timestamps, dates as ISO text and JSON as dicts."""
        engine = sa.create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                frame = pd.read_sql_table(name, conn)
        finally:
            engine.dispose()
        for column in frame.columns:
            if column in TIME_COLUMNS:
                frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
            elif column in DATE_COLUMNS:
                frame[column] = frame[column].map(lambda d: str(d)[:10])
            elif column == "enrichment":
                frame[column] = frame[column].map(
                    lambda e: json.loads(e) if isinstance(e, str) else e
                )
        return frame

    def snapshot(self) -> dict[str, list[tuple]]:
        """Every data table, sorted, without provenance columns: equal snapshots = equal state."""
        state = {}
        for name in DATA_TABLES:
            frame = self.table(name)
            frame = frame[[c for c in frame.columns if c not in PROVENANCE_COLUMNS]]
            rows = frame.astype(object).where(frame.notna(), None).itertuples(index=False)
            state[name] = sorted((tuple(r) for r in rows), key=repr)
        return state


def assert_exact(pipeline: Pipeline) -> None:
    """Invariants 1 and 3 over the whole inventory (addresses, ASNs and daily statistics against
    the oracle, and the audits), foreign keys intact, and nothing left queued."""
    sessions = pipeline.table("sessions")
    ips = pipeline.table("ip_inventory").set_index("ip_address")
    counters = oracle.ip_counters(sessions)
    assert set(ips.index) == set(counters.index)
    pd.testing.assert_frame_equal(
        ips.loc[counters.index, counters.columns], counters, check_names=False, check_dtype=False
    )
    asns = pipeline.table("asn_inventory").set_index("asn_number")
    expected = oracle.asn_counters(ips.reset_index()).reindex(asns.index, fill_value=0)
    pd.testing.assert_frame_equal(
        asns[expected.columns], expected, check_names=False, check_dtype=False
    )
    mapped = ips.dropna(subset=["current_asn"]).astype({"current_asn": "int64"})
    seen = mapped.groupby("current_asn").agg(
        first_seen=("first_seen", "min"), last_seen=("last_seen", "max")
    )
    pd.testing.assert_frame_equal(
        asns[["first_seen", "last_seen"]],
        seen.reindex(asns.index),
        check_names=False,
        check_dtype=False,
    )
    stats = pipeline.table("asn_daily_stats").set_index(["stat_date", "asn_number"]).sort_index()
    pd.testing.assert_frame_equal(
        stats,
        oracle.daily_stats(sessions).sort_index(),
        check_names=False,
        check_dtype=False,
        check_index_type=False,  # an empty index: dates read back as datetimes, not text
    )
    inventory = Inventory(pipeline.db_url)
    try:
        for day in sorted(set(sessions["ingest_date"])):
            mismatches = counter_mismatches(inventory, dt.date.fromisoformat(day))
            assert not any(mismatches.values()), (day, mismatches)
        assert dangling_asn_references(inventory) == 0
    finally:
        inventory.dispose()
    assert set(ips["current_asn"].dropna().astype(int)) <= set(asns.index)
    assert set(sessions["asn_number"].dropna().astype(int)) <= set(asns.index)
    if pipeline.backend == "sqlite":
        with sqlite3.connect(pipeline.db_url.removeprefix("sqlite:///")) as conn:
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    for queue in ("stale_ips", "stale_asn_deltas", "stale_days"):
        assert pipeline.table(queue).empty, queue


@pytest.fixture
def dns_server() -> Iterator[CymruDnsServer]:
    """A Team Cymru DNS server on 127.0.0.1 (dnspython), for the tests that turn Cymru on."""
    server = CymruDnsServer().start()
    yield server
    server.stop()


@pytest.fixture
def mmdb_files(tmp_path: Path) -> dict[str, Path]:
    paths = {"asn": tmp_path / "asn.mmdb", "city": tmp_path / "city.mmdb"}
    write_asn_mmdb(paths["asn"], NETWORKS)
    write_city_mmdb(paths["city"], NETWORKS)
    return paths


@pytest.fixture
def logs(tmp_path: Path) -> CowrieLogs:
    return CowrieLogs(tmp_path / "landing")


def postgres_base_url() -> str:
    return os.environ.get("ASN_PIPELINE_TEST_PG_URL", DEFAULT_PG_URL)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The test PostgreSQL server's URL; tests fail (not skip) without one when CI is set."""
    url = postgres_base_url()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as error:
        message = f"PostgreSQL at {sa.engine.make_url(url).render_as_string()} unreachable: {error}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    finally:
        engine.dispose()
    return url


@contextlib.contextmanager
def fresh_schema(base_url: str) -> Iterator[str]:
    """A new schema on the test server; the URL puts it first on the search path."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = sa.engine.make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture
def postgres_schemas(postgres_server) -> Iterator[Callable[[], str]]:
    """Makes fresh PostgreSQL schemas (as URLs), all dropped after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(fresh_schema(postgres_server))


@contextlib.contextmanager
def fresh_database(base_url: str) -> Iterator[str]:
    """A new database on the test server, dropped afterwards (with its connections)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield sa.engine.make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture
def postgres_databases(postgres_server) -> Iterator[Callable[[], str]]:
    """Makes fresh PostgreSQL databases (as URLs), all dropped after the test. PostgreSQL scopes
    advisory locks to a database, not to a schema: a test that holds the write lock or a day's
    lock and waits for its own writers within a time limit needs one, or the writers of tests
    running beside it on other schemas, which wait for that lock while holding a day's lock,
    hold its own writers up."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(fresh_database(postgres_server))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> str:
    """The inventory database: each test runs on SQLite and on PostgreSQL."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_schemas")()
    return f"sqlite:///{tmp_path / 'inventory.sqlite'}"


def configure(monkeypatch, db_url: str, logs: CowrieLogs, mmdb_files: dict[str, Path]) -> None:
    """Point every ASN_PIPELINE_* variable at the test's database, logs and .mmdb files."""
    logs.root.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("ASN_PIPELINE_DB_URL", db_url)
    monkeypatch.setenv("ASN_PIPELINE_LANDING_DIR", str(logs.root))
    monkeypatch.setenv("ASN_PIPELINE_MAXMIND_ASN_DB", str(mmdb_files["asn"]))
    monkeypatch.setenv("ASN_PIPELINE_MAXMIND_CITY_DB", str(mmdb_files["city"]))


@pytest.fixture
def pipeline(monkeypatch, mmdb_files, logs, db_url) -> Pipeline:
    configure(monkeypatch, db_url, logs, mmdb_files)
    with dg.DagsterInstance.ephemeral() as instance:
        yield Pipeline(db_url, logs.root, instance)
