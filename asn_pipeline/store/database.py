"""The inventory database: engine, schema, named queries and everything that differs by dialect.

Every other store module speaks through ``Inventory.write()`` and the named queries in ``sql/``;
this is the one place that knows SQLite from PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import re
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd
import psycopg2
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from asn_pipeline.settings import PACKAGE_DIR, redact_url

SQL_DIR = PACKAGE_DIR / "sql"  # package data: the wheel carries it
_QUERY_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
SQLITE_BUSY_TIMEOUT_MS = 60_000
# Page cache per connection: whole-partition statements walk large indexes; the default 2 MiB
# cache turns that into disk reads.
SQLITE_CACHE_KIB = 256 * 1024
PG_TEMP_BUFFERS = "256MB"
PG_WORK_MEM = "64MB"
# Every inventory write transaction on PostgreSQL holds this advisory lock (SQLite's BEGIN
# IMMEDIATE is the same single-writer rule): whatever reads or writes rows that other writes
# share runs serially under it, so the invariants hold under any concurrency; parsing, lookups,
# loading work tables and a day's own rows run in parallel outside it.
WRITE_LOCK_KEY = 0x61736E5F706970  # "asn_pip"
# A write's rows that belong to one day alone (its source files and rejected lines) are
# written before that lock, under a lock of the day: pg_advisory_xact_lock(DAY_LOCK_CLASS,
# the day's ordinal). Writers of other days touch none of those rows and only read them, so they
# go on under the write lock meanwhile. Every day writer also holds (DAY_LOCK_CLASS, 0) shared;
# a migration takes it exclusively, before the write lock like the rest (no lock-order cycle).
DAY_LOCK_CLASS = 0x61736E64  # "asnd"
ALL_DAYS = 0
# A writer whose client died without closing its connection (a host lost, a process frozen) must
# not hold that lock for hours: PostgreSQL ends a transaction left idle this long, and TCP
# keepalives (both ends) notice a peer that is gone within about two minutes. A write
# transaction runs statement after statement; it is never idle for more than a few seconds.
PG_IDLE_IN_TRANSACTION_TIMEOUT_S = 300
PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10}
PG_SERVER_KEEPALIVES = {"tcp_keepalives_idle": 60, "tcp_keepalives_interval": 10}
# Before queueing behind another writer, a writer says who that is (``Inventory.on_wait``).
SQLITE_FIRST_TRY_MS = 100
DDL_FOLDERS = {"sqlite": "sqlite", "postgresql": "postgres"}


@dataclass
class LockTimes:
    """Seconds this process's inventory writes waited for the write lock and held it (until
    their commit or rollback ended), and how many writes there were: what ``bench.scaling``
    reports as the lock's share of the wall time."""

    waited: float = 0.0
    held: float = 0.0
    writes: int = 0


WRITE_LOCK = LockTimes()


@dataclass(frozen=True)
class DayRows:
    """The part of a write that touches only ``day``'s own rows (``Inventory.write``)."""

    day: dt.date
    write: Callable[[Connection], None]


class Inventory:
    """A handle on the inventory database; ``write()`` gives one all-or-nothing transaction."""

    def __init__(
        self,
        url: str,
        *,
        application_name: str | None = None,
        idle_in_transaction_timeout_s: float = PG_IDLE_IN_TRANSACTION_TIMEOUT_S,
    ):
        self.url = url
        self.application_name = application_name or f"asn_pipeline {_whoami()}"
        self.engine: Engine = _create_engine(
            url, self.application_name, idle_in_transaction_timeout_s, self._sqlite_waiting
        )
        self.dialect = self.engine.dialect.name
        self.sql_folder = self.folder_for(self.dialect)
        # Told, before a writer queues for the write lock, who holds it.
        self.on_wait: Callable[[str], None] = logging.getLogger(__name__).warning

    @property
    def display_url(self) -> str:
        """The URL with its password masked."""
        return redact_url(self.url)

    @staticmethod
    def folder_for(dialect: str) -> Path:
        """``sql/<dialect>/``: the dialect's migrations, work tables and query forms."""
        return SQL_DIR / DDL_FOLDERS.get(dialect, dialect)

    @contextmanager
    def write(
        self,
        stage: Callable[[Connection], None] | None = None,
        day_rows: DayRows | None = None,
        *,
        every_day: bool = False,
    ) -> Iterator[Connection]:
        """One transaction that commits at the end of the block or rolls back on any error.

        It takes the single write lock: PostgreSQL's advisory lock, or SQLite's own (``BEGIN
        IMMEDIATE``, so concurrent writers queue behind ``busy_timeout`` instead of failing on a
        lock upgrade). ``stage`` loads the write's own rows into its work tables first: on
        PostgreSQL before the lock is taken (temporary tables are the connection's own, so the
        load needs no lock and runs while another writer holds it); on SQLite, whose lock comes
        with the transaction, after. ``day_rows`` then writes the rows of one day that no
        writer of another day writes: on PostgreSQL under that day's lock alone, while another
        writer may hold the write lock; ``every_day`` (migrations) excludes all of those. On
        SQLite all of it is one transaction under its one lock, in the same order.
        ``WRITE_LOCK`` adds up the time waited for and held.
        """
        asked, taken = time.monotonic(), None
        try:
            with self.engine.begin() as conn:
                postgres = self.dialect == "postgresql"
                if not postgres:
                    taken = time.monotonic()  # BEGIN IMMEDIATE took it
                    self._claim_sqlite_lock()
                _prepare_work_tables(conn, self.sql_folder)
                if stage is not None:
                    stage(conn)
                if postgres and (every_day or day_rows is not None):
                    self._take_day_lock(conn, day_rows.day if day_rows else None)
                if day_rows is not None:
                    day_rows.write(conn)
                if postgres:
                    asked = time.monotonic()
                    self._take_advisory_lock(conn)
                    taken = time.monotonic()
                WRITE_LOCK.waited += taken - asked
                WRITE_LOCK.writes += 1
                yield conn
        finally:
            if taken is not None:  # held until the commit or rollback ended
                WRITE_LOCK.held += time.monotonic() - taken

    def _take_day_lock(self, conn: Connection, day: dt.date | None) -> None:
        """The lock of ``day`` (and every day's, shared), or of every day (``None``)."""
        if day is None:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, %s)", (DAY_LOCK_CLASS, ALL_DAYS))
            return
        conn.exec_driver_sql(
            "SELECT pg_advisory_xact_lock_shared(%s, %s)", (DAY_LOCK_CLASS, ALL_DAYS)
        )
        self._take_advisory_lock(
            conn, f"the lock of day {day}", (DAY_LOCK_CLASS, day.toordinal()), "day_lock_holder"
        )

    def _take_advisory_lock(
        self,
        conn: Connection,
        name: str = "the inventory write lock",
        key: tuple[int, ...] = (WRITE_LOCK_KEY,),
        holder_query: str = "write_lock_holder",
    ) -> None:
        """Take an advisory lock at once if it is free; else say who holds it, and wait."""
        args = ", ".join(["%s"] * len(key))
        if conn.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({args})", key).scalar():
            return
        holder = conn.execute(_queries("lock", "postgres")[holder_query], {"key": key[-1]})
        holder = holder.first()
        if holder is None:
            self.on_wait(f"waiting for {name} (its holder just let it go)")
        else:
            # pg_stat_activity may show the holder after its transaction ended (no xact_start).
            started = (
                f"transaction started {holder.xact_start:%Y-%m-%d %H:%M:%S %Z}"
                if holder.xact_start is not None
                else "its transaction just ended"
            )
            self.on_wait(
                f"waiting for {name}, held by PostgreSQL backend {holder.pid} "
                f"({holder.application_name or 'no application name'}, client "
                f"{holder.client_addr or 'local socket'}, {started}, {holder.state})"
            )
        started = time.monotonic()
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({args})", key)
        self.on_wait(f"got {name} after {time.monotonic() - started:.1f} s")

    def _claim_sqlite_lock(self) -> None:
        """Say who this writer is, for writers that queue behind it (SQLite cannot tell them):
        a small file beside the database, replaced atomically."""
        path = self._sqlite_holder_file()
        if path is not None:
            tmp = path.with_name(f"{path.name}.{os.getpid()}")
            tmp.write_text(f"{self.application_name}, since {dt.datetime.now(dt.UTC):%H:%M:%S} UTC")
            os.replace(tmp, path)

    def _sqlite_holder_file(self) -> Path | None:
        database = sa.engine.make_url(self.url).database
        return Path(f"{database}-writer") if database else None

    def _sqlite_waiting(self) -> None:
        path = self._sqlite_holder_file()
        try:
            holder = path.read_text() if path else "unknown"
        except OSError:
            holder = "unknown"
        self.on_wait(f"waiting for the inventory write lock, last taken by {holder}")

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading; on SQLite it takes no write lock."""
        with self.engine.connect() as conn:
            conn.execution_options(read_only=True)
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def query(module: str, name: str, dialect: str | None = None) -> sa.TextClause:
    """A named query from ``sql/queries/<module>.sql``, or the dialect's own form of it from
    ``sql/<dialect>/queries/<module>.sql`` where one is needed for a good plan."""
    if dialect is not None:
        override = _queries(module, DDL_FOLDERS.get(dialect, dialect)).get(name)
        if override is not None:
            return override
    return _queries(module)[name]


def run(conn: Connection, module: str, name: str, **params: object) -> sa.CursorResult:
    """Execute a named query with bound parameters (dates and times in the dialect's form); a
    list parameter fills an ``IN :name`` with one value per item."""
    if conn.dialect.name == "sqlite":
        params = {k: _sqlite_value(v) for k, v in params.items()}
    statement = query(module, name, conn.dialect.name)
    lists = [k for k, v in params.items() if isinstance(v, list)]
    if lists:
        statement = statement.bindparams(*(sa.bindparam(k, expanding=True) for k in lists))
    return conn.execute(statement, params)


def analyze(conn: Connection, *tables: str) -> None:
    """Give PostgreSQL's planner the size of work tables just filled by ``INSERT ... SELECT``
    (SQLite's statements fix their join order with ``CROSS JOIN`` instead)."""
    if conn.dialect.name == "postgresql":
        for table in tables:
            conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.quote(table)}")


def bulk_insert(conn: Connection, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
    """Load many rows: ``COPY`` on PostgreSQL, one prepared ``executemany`` on SQLite."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _copy_rows(conn, table, columns, rows)
        return
    statement = sa.table(table, *(sa.column(c) for c in columns)).insert()
    compiled = str(statement.compile(dialect=conn.dialect))
    temporal = _temporal_columns(rows, len(columns))
    if temporal:
        rows = [
            tuple(_sqlite_value(v) if i in temporal else v for i, v in enumerate(row))
            for row in rows
        ]
    conn.connection.dbapi_connection.executemany(compiled, rows)


def _copy_rows(conn: Connection, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
    """COPY rows in PostgreSQL's text format, then refresh the planner's statistics of the table."""
    cells = [_copy_column(values) for values in zip(*rows, strict=True)]
    buffer = io.StringIO()
    buffer.writelines("\t".join(line) + "\n" for line in zip(*cells, strict=True))
    buffer.seek(0)
    preparer = conn.dialect.identifier_preparer
    column_list = ", ".join(preparer.quote(c) for c in columns)
    with conn.connection.dbapi_connection.cursor() as cursor:
        cursor.copy_expert(f"COPY {preparer.quote(table)} ({column_list}) FROM STDIN", buffer)
    if table.startswith("w_"):
        analyze(conn, table)


def _copy_column(values: tuple) -> list[str] | tuple[str, ...]:
    """One column as COPY text cells; text needing no escapes passes through as it is."""
    if all(v is None for v in values):
        return ["\\N"] * len(values)
    if all(type(v) is str for v in values):
        text = "".join(values)
        if not any(c in text for c in "\\\t\n\r"):
            return values
    return [_copy_value(v) for v in values]


def _temporal_columns(rows: list[tuple], width: int) -> set[int]:
    """Columns whose first non-null value is a date or time (SQLite stores those as text)."""
    found, pending = set(), set(range(width))
    for row in rows:
        for i in list(pending):
            if row[i] is not None:
                pending.discard(i)
                if isinstance(row[i], dt.date):
                    found.add(i)
        if not pending:
            break
    return found


def _copy_value(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _sqlite_value(value: object) -> object:
    """SQLite keeps times as fixed-width UTC text and dates as ISO text."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def frame_rows(frame: pd.DataFrame, columns: Sequence[str]) -> list[tuple]:
    """Rows of a DataFrame as plain Python tuples (``None`` for missing), for ``bulk_insert``."""
    values = []
    for column in columns:
        series = frame[column]
        if series.hasnans:
            values.append(series.astype(object).where(series.notna(), None).tolist())
        else:
            values.append(series.tolist())
    return list(zip(*values, strict=True))


@cache
def _queries(module: str, folder: str | None = None) -> dict[str, sa.TextClause]:
    path = SQL_DIR / "queries" / f"{module}.sql"
    if folder is not None:
        path = SQL_DIR / folder / "queries" / f"{module}.sql"
        if not path.exists():
            return {}
    text = path.read_text()
    parts = _QUERY_NAME.split(text)
    return {
        name: sa.text(body.strip().rstrip(";"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True)
    }


@cache
def _work_tables(folder: Path) -> tuple[tuple[str, str], ...]:
    """(name, DDL) of the scratch tables in ``folder/work_tables.sql``."""
    statements = sql_statements((folder / "work_tables.sql").read_text())
    return tuple((re.search(r"TABLE IF NOT EXISTS (\w+)", s).group(1), s) for s in statements)


def _prepare_work_tables(conn: Connection, folder: Path) -> None:
    for _, statement in _work_tables(folder):
        conn.exec_driver_sql(statement)
    names = [name for name, _ in _work_tables(folder)]
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"TRUNCATE {', '.join(names)}")
    else:
        for name in names:
            conn.exec_driver_sql(f"DELETE FROM {name}")  # noqa: S608 - names come from sql/


def sql_statements(script: str) -> list[str]:
    """The statements of a SQL script (``;``-separated; comment lines dropped)."""
    without_comments = "\n".join(
        line for line in script.splitlines() if not line.lstrip().startswith("--")
    )
    return [s.strip() for s in without_comments.split(";") if s.strip()]


def is_transient(error: BaseException) -> bool:
    """A failure that the same work may not meet again: a busy or locked SQLite database, a lost
    or reset PostgreSQL connection, a deadlock or serialisation failure. Not a bad statement,
    constraint or input."""
    if isinstance(error, sa.exc.DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig or error
    if isinstance(error, sqlite3.OperationalError):
        return any(word in str(error) for word in ("locked", "busy"))
    return isinstance(error, psycopg2.OperationalError | psycopg2.InterfaceError)


def _application_name(url: str, default: str) -> dict[str, str]:
    """The PostgreSQL application name: the URL's own if it names one, else ``default``."""
    if "application_name" in sa.engine.make_url(url).query:
        return {}
    return {"application_name": default[:63]}


def _whoami() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


def _enable_wal(cursor) -> None:  # type: ignore[no-untyped-def]
    """Put the database in WAL mode (persistent: a no-op once a first connection has done it).

    Switching a new database from its rollback journal needs an exclusive lock, and SQLite
    reports "database is locked" at once, without its busy handler, while another connection
    (another partition's process opening the same new file) holds a write lock; so wait here,
    within the busy timeout like any other lock."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


def _create_engine(
    url: str,
    application_name: str,
    idle_in_transaction_timeout_s: float,
    on_sqlite_busy: Callable[[], None],
) -> Engine:
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        if database:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # Let SQLAlchemy's "begin" event below emit BEGIN itself (pysqlite's own is deferred).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            _enable_wal(cursor)
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn):  # type: ignore[no-untyped-def]
            if conn.get_execution_options().get("read_only", False):
                conn.exec_driver_sql("BEGIN")
                return
            # A short first try, so that a writer that has to queue can say so, then the wait.
            conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_FIRST_TRY_MS}")
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except sa.exc.OperationalError as error:
                if not is_transient(error):
                    raise
                on_sqlite_busy()
                conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            finally:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")

        return engine
    # READ COMMITTED: a writer that waited for the advisory lock must see what the previous
    # writer committed; a snapshot taken earlier (REPEATABLE READ) would not.
    engine = sa.create_engine(
        url,
        pool_pre_ping=True,
        isolation_level="READ COMMITTED",
        connect_args={**_application_name(url, application_name), **PG_KEEPALIVES},
    )
    settings = {
        # A partition's work tables and hash joins hold hundreds of thousands of rows; the
        # server defaults (8 MB of temp buffers, 4 MB per sort or hash) would spill them to disk.
        "temp_buffers": PG_TEMP_BUFFERS,
        "work_mem": PG_WORK_MEM,
        "idle_in_transaction_session_timeout": f"{int(idle_in_transaction_timeout_s * 1000)}ms",
        **PG_SERVER_KEEPALIVES,
    }

    @sa.event.listens_for(engine, "connect")
    def _on_pg_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        with dbapi_connection.cursor() as cursor:
            for name, value in settings.items():
                cursor.execute("SELECT set_config(%s, %s, false)", (name, str(value)))
        dbapi_connection.commit()

    return engine
