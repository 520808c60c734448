"""Concurrent partitions, killed processes, a Dagster instance on PostgreSQL (DESIGN §5.4, 5.5)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from asn_pipeline.settings import PROJECT_ROOT
from asn_pipeline.store import Inventory, audit
from asn_pipeline.store.database import DAY_LOCK_CLASS, WRITE_LOCK_KEY, DayRows
from asn_pipeline.store.schema import _APPLIED_IN_PROCESS, ensure_schema
from asn_pipeline_tests import oracle
from asn_pipeline_tests.conftest import CowrieLogs, Pipeline, assert_exact, configure, ts
from asn_pipeline_tests.test_invariants import DAYS, write_week

REPEATS = 3
KILLS = 6  # kills that land inside a write transaction
MAX_ATTEMPTS = 20
EMPTYING_ORDER = (
    "asn_daily_stats",
    "ip_asn_history",
    "sessions",
    "session_fragments",
    "ip_inventory",
    "asn_inventory",
    "rejected_events",
    "source_files",
    "stale_ips",
    "stale_asn_deltas",
    "stale_days",
    "asn_country_counts",
)


def start_partition(day, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "asn_pipeline_tests.run_partition", day.isoformat()],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_until_ready(process: subprocess.Popen) -> float:
    """Block until the child has loaded its definitions; return that moment."""
    assert process.stdout.readline().strip() == b"ready"
    return time.monotonic()


def serial_snapshot(pipeline: Pipeline, monkeypatch, db_url: str, days) -> dict:
    """The state one in-order, one-at-a-time pass leaves, in another database."""
    serial = Pipeline(db_url, pipeline.landing, pipeline.instance)
    monkeypatch.setenv("ASN_PIPELINE_DB_URL", db_url)
    serial.run(*days)
    monkeypatch.setenv("ASN_PIPELINE_DB_URL", pipeline.db_url)
    return serial.snapshot()


def own_database(pipeline: Pipeline, request, monkeypatch) -> Pipeline:
    """The PostgreSQL pipeline on a database of its own (``postgres_databases``): for a test that
    holds the write lock while its writers must reach it within a time limit."""
    url = request.getfixturevalue("postgres_databases")()
    monkeypatch.setenv("ASN_PIPELINE_DB_URL", url)
    return Pipeline(url, pipeline.landing, pipeline.instance)


def other_database(pipeline: Pipeline, request, tmp_path, name: str) -> str:
    if pipeline.backend == "postgres":
        return request.getfixturevalue("postgres_schemas")()
    return f"sqlite:///{tmp_path / f'{name}.sqlite'}"


@pytest.mark.parametrize("repeat", range(REPEATS))
def test_partitions_materialised_at_the_same_time_match_the_serial_result(
    pipeline: Pipeline, logs: CowrieLogs, monkeypatch, request, tmp_path, repeat
):
    write_week(logs)  # every day shares the same addresses and ASNs
    expected = serial_snapshot(
        pipeline, monkeypatch, other_database(pipeline, request, tmp_path, "serial"), DAYS
    )

    # Every day at once, some twice, each in its own process, in a different order each time.
    days = list(DAYS) + random.Random(repeat).sample(DAYS, 3)
    random.Random(repeat).shuffle(days)
    processes = [start_partition(day, {"ASN_PIPELINE_DB_URL": pipeline.db_url}) for day in days]
    errors = [p.communicate(timeout=600)[1] for p in processes]
    failed = {
        f"{day} (process {n})": error.decode(errors="replace")[-4000:]
        for n, (day, process, error) in enumerate(zip(days, processes, errors, strict=True))
        if process.returncode != 0
    }

    assert not failed, "\n\n".join(f"{key}:\n{error}" for key, error in failed.items())
    assert_same_state(pipeline.snapshot(), expected)


def assert_same_state(found: dict[str, list[tuple]], expected: dict[str, list[tuple]]) -> None:
    """Equal snapshots; else, per table, the rows only one of them holds."""
    differences = {
        table: {
            "only here": sorted(set(found[table]) - set(rows), key=repr),
            "only in the serial result": sorted(set(rows) - set(found[table]), key=repr),
        }
        for table, rows in expected.items()
        if found[table] != rows
    }
    assert not differences, differences


def test_a_new_sqlite_database_opened_while_another_process_writes_waits_for_its_lock(tmp_path):
    # A new file is in rollback-journal mode; the first connection switches it to WAL, which
    # SQLite refuses at once (no busy handler) while another connection holds a write lock.
    path = tmp_path / "new.sqlite"
    other = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.5, other.rollback)
    release.start()
    inventory = Inventory(f"sqlite:///{path}")
    try:
        started = time.monotonic()
        with inventory.read() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert time.monotonic() - started >= 0.4  # it waited for the lock, not failed on it
        ensure_schema(inventory)
    finally:
        release.join()
        inventory.dispose()
        other.close()


def big_day(logs: CowrieLogs, sessions: int = 6_000) -> None:
    rng = random.Random(11)
    addresses = [f"45.{10 + i % 3}.{i // 250}.{i % 250 + 1}" for i in range(3_000)]
    for n in range(sessions):
        start = ts(DAYS[0], rng.randint(0, 23), rng.randint(0, 59), rng.random() * 59)
        logs.session(f"sensor-{n % 2}", f"k{n:06d}", rng.choice(addresses), start, events=3)
    logs.write()


APP = "asn_pipeline_kill_test"


@contextlib.contextmanager
def write_lock_probe(pipeline: Pipeline) -> Iterator[Callable[[], bool]]:
    """A cheap test of whether a write transaction is in progress: the child's session holds the
    advisory lock (PostgreSQL), or SQLite refuses this connection its write lock at once."""
    if pipeline.backend == "sqlite":
        conn = sqlite3.connect(pipeline.db_url.removeprefix("sqlite:///"), timeout=0)

        def sqlite_probe() -> bool:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return True
            conn.rollback()
            return False

        try:
            yield sqlite_probe
        finally:
            conn.close()
        return
    engine = sa.create_engine(pipeline.db_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        yield lambda: bool(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid) "
                "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s",
                (APP,),
            ).scalar_one()
        )
    engine.dispose()


def count_writes(
    process: subprocess.Popen, writing: Callable[[], bool], stop_inside: int | None = None
) -> int:
    """Count the write transactions the probe sees open while ``process`` runs; with
    ``stop_inside``, return as soon as that one (1-based) is open."""
    seen, inside = 0, False
    while process.poll() is None:
        now = writing()
        if now and not inside:
            seen += 1
            if seen == stop_inside:
                return seen
        inside = now
        time.sleep(0.001)
    return seen


def assert_consistent(pipeline: Pipeline) -> None:
    """What any committed prefix of transactions must satisfy: no dangling reference, sessions
    equal to the merge of their parts, and every stale counter queued for recomputation."""
    inventory = Inventory(pipeline.db_url)
    try:
        assert audit.dangling_asn_references(inventory) == 0
    finally:
        inventory.dispose()
    parts = pipeline.table("session_parts")
    sessions = pipeline.table("sessions").set_index(["sensor", "session_id"]).sort_index()
    merged = parts.groupby(["sensor", "session_id"]).agg(
        ingest_date=("fragment_date", "min"),
        first_event_at=("first_event_at", "min"),
        last_event_at=("last_event_at", "max"),
        event_count=("event_count", "sum"),
    )
    pd.testing.assert_frame_equal(sessions[merged.columns], merged.sort_index(), check_dtype=False)
    counts = pipeline.table("sessions").groupby("src_ip").size()
    ips = pipeline.table("ip_inventory").set_index("ip_address")
    wrong = set(ips.index[ips["session_count"] != counts.reindex(ips.index, fill_value=0)])
    assert wrong <= set(pipeline.table("stale_ips")["ip_address"])


def test_a_process_killed_mid_write_leaves_a_consistent_state_and_the_rerun_completes(
    pipeline: Pipeline, logs: CowrieLogs, monkeypatch, request, tmp_path
):
    big_day(logs)
    expected = serial_snapshot(
        pipeline, monkeypatch, other_database(pipeline, request, tmp_path, "serial"), DAYS[:1]
    )
    child_url = pipeline.db_url
    if pipeline.backend == "postgres":  # name the child's sessions to see its locks
        child_url = str(sa.engine.make_url(child_url).update_query_dict({"application_name": APP}))
        child_url = sa.engine.make_url(child_url).render_as_string(hide_password=False)
    env = {"ASN_PIPELINE_DB_URL": child_url}
    # A first, undisturbed run: how many write transactions does a run open, as the probe sees?
    timing = start_partition(DAYS[0], env)
    wait_until_ready(timing)
    with write_lock_probe(pipeline) as writing:
        writes = count_writes(timing, writing)
    assert timing.returncode == 0, timing.stderr.read()[-3000:]
    assert writes

    rng = random.Random(5)
    inside_write = 0
    for _ in range(MAX_ATTEMPTS):
        if inside_write == KILLS:
            break
        # From empty each time, so every kill interrupts first-time writes of every step.
        pipeline.execute(*(f"DELETE FROM {table}" for table in EMPTYING_ORDER))
        process = start_partition(DAYS[0], env)
        wait_until_ready(process)
        # Inside a randomly chosen one of the run's write transactions (counted, not timed, so
        # a slower or faster machine still lands inside one).
        with write_lock_probe(pipeline) as writing:
            count_writes(process, writing, stop_inside=rng.randrange(1, writes + 1))
            process.send_signal(signal.SIGKILL)
        inside_write += process.wait(timeout=60) == -signal.SIGKILL
        assert_consistent(pipeline)

    assert inside_write == KILLS, f"only {inside_write} kills landed inside a write"
    pipeline.run(DAYS[0])
    assert pipeline.snapshot() == expected


def test_a_dagster_instance_on_postgres_records_the_run(
    logs: CowrieLogs, mmdb_files, tmp_path, monkeypatch, postgres_schemas
):
    inventory_url, dagster_url = postgres_schemas(), postgres_schemas()
    configure(monkeypatch, inventory_url, logs, mmdb_files)
    logs.session("sensor-a", "s1", "45.10.0.1", ts(DAYS[0], 9))
    logs.write()
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "postgres" / "dagster.yaml", dagster_home)
    monkeypatch.setenv("DAGSTER_PG_URL", dagster_url)

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        on_postgres = Pipeline(inventory_url, logs.root, instance)
        [result] = on_postgres.run(DAYS[0])
        assert result.success
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == DAYS[0].isoformat()
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"

    engine = sa.create_engine(dagster_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM runs").scalar_one() == 1
        materialised = conn.exec_driver_sql(
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
        ).scalar_one()
    engine.dispose()
    # The four assets, and cowrie_sessions again from the inventory step that wrote its day.
    assert materialised == 5


@pytest.mark.parametrize("part", ["stage", "day_rows"])
def test_work_tables_and_a_days_own_rows_load_while_another_holds_the_lock_on_postgresql_only(
    db_url, part, request
):
    """PostgreSQL: a second writer's ``stage`` (its work tables, the connection's own) and its
    ``day_rows`` (its day's fragments, files and rejected lines, under the day's lock) run while
    the first holds the write lock, and the rest of the write waits for the lock. SQLite: its
    lock comes with the transaction, so they wait too. Either way, WRITE_LOCK counts the wait."""
    from asn_pipeline.store.database import WRITE_LOCK

    if db_url.startswith("postgresql"):
        db_url = request.getfixturevalue("postgres_databases")()  # locks of its own
    holder, writer = Inventory(db_url), Inventory(db_url)
    ensure_schema(holder)
    reached, wrote = threading.Event(), threading.Event()

    def second_write() -> None:
        def hook(_conn) -> None:
            reached.set()

        parts = {"stage": hook} if part == "stage" else {"day_rows": DayRows(DAYS[0], hook)}
        with writer.write(**parts):
            wrote.set()

    waited_before = WRITE_LOCK.waited
    thread = threading.Thread(target=second_write)
    with holder.write():
        thread.start()
        postgres = holder.dialect == "postgresql"
        assert reached.wait(5 if postgres else 1) is postgres
        assert not wrote.wait(1)  # the write itself waits for the lock
    thread.join(30)
    assert reached.is_set() and wrote.is_set()
    assert WRITE_LOCK.waited - waited_before >= 0.9  # the second write's wait, counted
    holder.dispose()
    writer.dispose()


def test_writes_of_one_day_wait_for_each_other_and_other_days_do_not(db_url):
    """PostgreSQL's day locks: while a transaction holds the lock of one day, a write of that
    day waits before its day's rows, and a write of another day completes."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one lock for every write")
    holder, writer = Inventory(db_url), Inventory(db_url)
    ensure_schema(holder)
    messages: list[str] = []
    writer.on_wait = messages.append
    same_day, other_day = threading.Event(), threading.Event()

    def write(day, reached: threading.Event) -> None:
        with writer.write(day_rows=DayRows(day, lambda conn: reached.set())):
            pass

    with holder.engine.begin() as conn:
        conn.exec_driver_sql(
            "SELECT pg_advisory_xact_lock(%s, %s)", (DAY_LOCK_CLASS, DAYS[0].toordinal())
        )
        waiting = threading.Thread(target=write, args=(DAYS[0], same_day))
        waiting.start()
        write(DAYS[2], other_day)
        assert other_day.is_set()
        assert not same_day.wait(1)
        assert any(f"waiting for the lock of day {DAYS[0]}" in m for m in messages)
    waiting.join(30)
    assert same_day.is_set()
    holder.dispose()
    writer.dispose()


def test_a_step_finds_the_inventory_current_without_waiting_for_a_writer(db_url):
    """The schema check at the start of a step (a new process: nothing applied in it yet) is a
    read when the inventory is current: it does not wait for a write in progress."""
    holder = Inventory(db_url)
    ensure_schema(holder)
    checker = Inventory(db_url)
    checked = threading.Event()

    def check() -> None:
        assert ensure_schema(checker) == []
        checked.set()

    with holder.write():
        _APPLIED_IN_PROCESS.discard(db_url)
        thread = threading.Thread(target=check)
        thread.start()
        assert checked.wait(10)
    thread.join(30)
    assert db_url in _APPLIED_IN_PROCESS
    holder.dispose()
    checker.dispose()


def write_day_with_lookups(url: str, landing, asn_db, day, on_wait=None, settle=True) -> None:
    """What the inventory step does for ``day``: read its files, look its addresses up, and
    write both in one transaction (``upsert_lookups`` with the day), settled unless told."""
    from asn_pipeline.cowrie import files_for_day, parse_day
    from asn_pipeline.lookup.enrich import look_up
    from asn_pipeline.lookup.maxmind import MaxMindLookup
    from asn_pipeline.store.inventory import upsert_lookups
    from asn_pipeline.store.sessions import DayWrite

    inventory = Inventory(url, application_name=f"writer of {day}")
    if on_wait is not None:
        inventory.on_wait = on_wait
    parsed = parse_day(files_for_day(landing, day).files, workers=1)
    write = DayWrite.of(day, parsed, f"run-{day}")
    maxmind = MaxMindLookup(asn_db)
    lookups = look_up(write.addresses, maxmind).addresses
    maxmind.close()
    try:
        upsert_lookups(
            inventory, lookups, f"run-{day}", dt.datetime.now(dt.UTC), day=write, settle=settle
        )
    finally:
        parsed.close()
        inventory.dispose()


@pytest.mark.parametrize("first", [0, 1])
def test_sessions_written_before_the_write_lock_merge_with_a_neighbour_committed_meanwhile(
    pipeline: Pipeline, logs: CowrieLogs, mmdb_files, first, request, monkeypatch
):
    """PostgreSQL writes a day's sessions of ids no other day has before it takes the write
    lock. Two neighbouring days, each holding a part of one session spanning their midnight,
    both insert their part early while a third transaction holds the lock; the one that gets the
    lock second finds the other's committed session and merges with it. Either order gives the
    inventory the files say, exact, as written one after the other."""
    if pipeline.backend != "postgres":
        pytest.skip("SQLite has one lock for every write: nothing is written before it")
    pipeline = own_database(pipeline, request, monkeypatch)
    earlier, day, after = DAYS[0], DAYS[3], DAYS[4]
    # The ASNs have rows before the two days (a new ASN's sessions are written under the lock).
    logs.session("sensor-a", "known", "45.10.0.9", ts(earlier, 9))
    logs.session("sensor-a", "known-b", "45.11.0.9", ts(earlier, 9))
    logs.session("sensor-a", "midnight", "45.10.0.1", ts(day, 23, 59, 50), events=4)
    for i, d in enumerate((day, after)):
        logs.session("sensor-b", f"alone-{i}", "45.11.0.2", ts(d, 6))
        logs.session("sensor-b", f"new-asn-{i}", "45.12.0.3", ts(d, 7))  # 64498: no row yet
    logs.write()
    pipeline.create_schema()
    write_day_with_lookups(pipeline.db_url, logs.root, mmdb_files["asn"], earlier)

    holder = Inventory(pipeline.db_url)
    waiting = {d: threading.Event() for d in (day, after)}
    errors: list[BaseException] = []

    def write(d) -> None:
        def on_wait(message: str) -> None:
            if message.startswith("waiting for the inventory write lock"):
                waiting[d].set()

        try:
            write_day_with_lookups(pipeline.db_url, logs.root, mmdb_files["asn"], d, on_wait)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)
            waiting[d].set()

    order = (day, after) if first == 0 else (after, day)
    threads = [threading.Thread(target=write, args=(d,)) for d in order]
    with holder.engine.begin() as conn:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
        for d, thread in zip(order, threads, strict=True):
            thread.start()
            assert waiting[d].wait(60), f"the write of {d} did not queue for the lock"
        assert not errors, errors
        # Both have inserted their sessions, under their day's lock, before the write lock.
        early_writers = conn.exec_driver_sql(
            "SELECT a.application_name FROM pg_locks AS l "
            "JOIN pg_stat_activity AS a ON a.pid = l.pid "
            "JOIN pg_class AS c ON c.oid = l.relation "
            "WHERE c.relname = 'sessions' AND l.mode = 'RowExclusiveLock' AND l.granted "
            "AND starts_with(a.application_name, 'writer of ')"
        ).scalars()
        assert sorted(early_writers) == [f"writer of {day}", f"writer of {after}"]
    for thread in threads:
        thread.join(60)
    assert not errors, errors

    sessions = pipeline.table("sessions").set_index("session_id")
    midnight = sessions.loc[["midnight"]]
    assert list(zip(midnight["ingest_date"], midnight["event_count"], strict=True)) == [
        (str(day), 4)
    ]
    assert len(sessions) == len(oracle.sessions_from_files(logs.root))
    fragments = pipeline.table("session_fragments")
    assert sorted(zip(fragments["session_id"], fragments["fragment_date"], strict=True)) == [
        ("midnight", str(day)),
        ("midnight", str(after)),
    ]
    assert_exact(pipeline)
    holder.dispose()


@pytest.mark.parametrize("meanwhile", ["queued again", "drained"])
def test_statistics_computed_before_the_write_lock_give_way_to_a_write_committed_meanwhile(
    pipeline: Pipeline, logs: CowrieLogs, mmdb_files, meanwhile
):
    """On PostgreSQL a drain computes the queued daily statistics before it takes the write lock
    (``refresh_statistics``). A write that commits in between and changes what they say either
    queues their key again, with a new generation, or drains it itself; under the lock the drain
    keeps only what still stands, and the statistics come out exact either way."""
    from asn_pipeline.cowrie import files_for_day, parse_day
    from asn_pipeline.store.derived import compute_queued_statistics, drain_queues
    from asn_pipeline.store.sessions import replace_day

    if pipeline.backend != "postgres":
        pytest.skip("SQLite computes them under its one lock: no write can commit in between")
    earlier, later = DAYS[0], DAYS[2]
    logs.session("sensor-a", "first-seen-later", "45.10.0.7", ts(later, 9))
    logs.session("sensor-a", "known-later", "45.10.0.8", ts(later, 10))
    logs.session("sensor-a", "known-earlier", "45.10.0.8", ts(earlier, 9))
    logs.write()
    pipeline.create_schema()
    write_day_with_lookups(pipeline.db_url, logs.root, mmdb_files["asn"], later)
    # The backfill of the earlier day brings both addresses there: the later day counts neither
    # as new any more.
    logs.session("sensor-b", "first-seen-earlier", "45.10.0.7", ts(earlier, 11))
    logs.write()
    inventory = Inventory(pipeline.db_url)
    parsed = parse_day(files_for_day(logs.root, later).files, workers=1)
    try:
        replace_day(inventory, later, parsed, "run-again")  # queues the later day's keys
        queued = pipeline.table("stale_days")
        assert set(queued["stat_date"]) == {str(later)}

        def compute_then_let_a_write_commit(conn: sa.Connection) -> None:
            compute_queued_statistics(conn)
            computed = conn.exec_driver_sql(
                "SELECT sum(new_ip_count) FROM w_day_stats WHERE stat_date = %s", (later,)
            ).scalar_one()
            assert computed == 2  # both addresses new on the later day, as it stood
            write_day_with_lookups(
                pipeline.db_url,
                logs.root,
                mmdb_files["asn"],
                earlier,
                settle=meanwhile == "drained",
            )
            if meanwhile == "queued again":
                again = pipeline.table("stale_days").set_index(["stat_date", "asn_number"])
                before = queued.set_index(["stat_date", "asn_number"])["generation"]
                assert (again["generation"].reindex(before.index) > before).all()
            else:
                assert pipeline.table("stale_days").empty

        with inventory.write(compute_then_let_a_write_commit) as conn:
            drain_queues(conn)
    finally:
        parsed.close()
        inventory.dispose()
    stats = pipeline.table("asn_daily_stats").set_index("stat_date")
    assert stats.loc[[str(later)], "new_ip_count"].sum() == 0
    assert_exact(pipeline)
