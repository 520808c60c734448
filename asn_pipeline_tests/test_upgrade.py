"""Inventories made by earlier releases upgrade in place, with every row they hold.

``fixtures/release_de8a6e0`` holds an inventory written by the first release (commit de8a6e0) on
both dialects, with the logs and .mmdb files it read; its README says how it was made.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from asn_pipeline.store import Inventory
from asn_pipeline.store.schema import SchemaVersionError, ensure_schema, migrations
from asn_pipeline_tests import oracle
from asn_pipeline_tests.conftest import Pipeline

RELEASE = Path(__file__).parent / "fixtures" / "release_de8a6e0"
DAYS = [dt.date(2026, 10, d) for d in (1, 2, 3, 4, 5, 6, 27)]
REUSED = ("sensor-a", "feedface0001")
KEPT_TABLES = ("session_fragments", "ip_inventory", "asn_inventory", "ip_asn_history")
# Back to schema 5: stale_days without its generation (PostgreSQL drops the sequence with it).
UNDO_006 = "ALTER TABLE stale_days DROP COLUMN generation"


def load_release(db_url: str) -> None:
    """The first release's inventory, as that release left it, at ``db_url``."""
    if db_url.startswith("sqlite"):
        shutil.copyfile(RELEASE / "inventory.sqlite", sa.engine.make_url(db_url).database)
        return
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql((RELEASE / "postgres.sql").read_text())
    finally:
        engine.dispose()


@pytest.fixture
def release(db_url, tmp_path, monkeypatch) -> Pipeline:
    load_release(db_url)
    landing = tmp_path / "landing"
    shutil.copytree(RELEASE / "landing", landing)
    monkeypatch.setenv("ASN_PIPELINE_DB_URL", db_url)
    monkeypatch.setenv("ASN_PIPELINE_LANDING_DIR", str(landing))
    monkeypatch.setenv("ASN_PIPELINE_MAXMIND_ASN_DB", str(RELEASE / "asn.mmdb"))
    monkeypatch.setenv("ASN_PIPELINE_MAXMIND_CITY_DB", str(RELEASE / "city.mmdb"))
    with dg.DagsterInstance.ephemeral() as instance:
        yield Pipeline(db_url, landing, instance)


def test_the_first_release_schema_is_migration_001():
    # 001 must stay the first release's schema: the fixture was made with it.
    for dialect in ("sqlite", "postgres"):
        folder = Path(__file__).parent.parent / "asn_pipeline" / "sql" / dialect
        assert [m.version for m in migrations(folder)][:2] == [1, 2]
    assert (
        "PRIMARY KEY (sensor, session_id)\n"
        in (
            Path(__file__).parent.parent / "asn_pipeline" / "sql" / "postgres" / "001_inventory.sql"
        ).read_text()
    )


def test_an_inventory_of_the_first_release_upgrades_in_place(
    release: Pipeline, request, tmp_path, monkeypatch
):
    before = {table: release.table(table) for table in (*KEPT_TABLES, "rejected_events")}
    old_sessions = release.table("sessions")
    assert len(old_sessions[old_sessions["session_id"] == REUSED[1]]) == 1  # the old merge

    inventory = Inventory(release.db_url)
    try:
        assert ensure_schema(inventory) == [2, 3, 4, 5, 6]
    finally:
        inventory.dispose()

    applied = release.table("schema_migrations").sort_values("version")
    assert applied["version"].tolist() == [1, 2, 3, 4, 5, 6]
    for table in ("session_fragments", "ip_asn_history", "rejected_events"):
        pd.testing.assert_frame_equal(
            release.table(table)[before[table].columns], before[table], check_dtype=False
        )
    assert set(release.table("ip_inventory")["ip_address"]) == set(
        before["ip_inventory"]["ip_address"]
    )
    sessions = release.table("sessions").set_index(["sensor", "session_id", "ingest_date"])
    sessions = sessions.sort_index()
    reused = sessions.loc[REUSED]
    assert reused.index.tolist() == ["2026-10-02", "2026-10-27"]
    assert reused["event_count"].tolist() == [4, 3]
    assert reused["src_ip"].tolist() == ["45.10.2.2", "45.12.27.27"]
    assert len(sessions) == len(old_sessions) + 1
    # The derived values follow the split at once: counters of every address in the inventory.
    ips = release.table("ip_inventory").set_index("ip_address")
    counters = oracle.ip_counters(sessions.reset_index()).reindex(ips.index)
    pd.testing.assert_frame_equal(
        ips[counters.columns], counters, check_names=False, check_dtype=False
    )
    for queue in ("stale_ips", "stale_asn_deltas", "stale_days"):
        assert release.table(queue).empty, queue

    # Materialised again by this release: the same as this release's own pass from nothing.
    release.run(*DAYS)
    fresh = release.other(request, tmp_path, "fresh")
    monkeypatch.setenv("ASN_PIPELINE_DB_URL", fresh.db_url)
    fresh.run(*DAYS)
    assert release.snapshot() == fresh.snapshot()


def test_an_inventory_newer_than_the_code_is_refused(db_url, release: Pipeline):
    release.execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
        "applied_at text NOT NULL, applied_by text)",
        "INSERT INTO schema_migrations VALUES (99, 'from_the_future', '2030-01-01', NULL)",
    )
    before = {table: release.table(table) for table in ("sessions", *KEPT_TABLES)}
    inventory = Inventory(db_url)
    try:
        with pytest.raises(SchemaVersionError, match="schema version 99, newer than this code"):
            ensure_schema(inventory)
    finally:
        inventory.dispose()

    [result] = release.run(DAYS[0], raise_on_error=False)
    assert not result.success
    for table, rows in before.items():
        pd.testing.assert_frame_equal(release.table(table), rows)


def test_an_inventory_of_the_previous_release_gains_step_outputs_and_keeps_every_row(
    pipeline: Pipeline, logs
):
    """Migration 004 from schema 3 (the release that added it), with a week of data in it."""
    from asn_pipeline.store import schema
    from asn_pipeline.store.report import table_checksums
    from asn_pipeline_tests.conftest import assert_exact
    from asn_pipeline_tests.test_invariants import DAYS as WEEK
    from asn_pipeline_tests.test_invariants import write_week

    write_week(logs)
    pipeline.run(*WEEK[:-1])
    # Schema 3: everything but 004's table, 005's view, 006's column and their records.
    pipeline.execute(
        "DROP VIEW session_parts",
        "DROP TABLE step_outputs",
        UNDO_006,
        "DELETE FROM schema_migrations WHERE version >= 4",
    )
    inventory = Inventory(pipeline.db_url)
    try:
        before = table_checksums(inventory)
        schema._APPLIED_IN_PROCESS.discard(inventory.url)  # as a new process of the new release
        assert ensure_schema(inventory) == [4, 5, 6]
        assert table_checksums(inventory) == before
    finally:
        inventory.dispose()
    assert pipeline.table("schema_migrations")["version"].tolist()[-3:] == [4, 5, 6]
    assert pipeline.table("step_outputs").empty
    (result,) = pipeline.run(WEEK[-1])
    assert result.success
    assert set(pipeline.table("step_outputs")["run_id"]) == {result.run_id}
    assert_exact(pipeline)


def test_an_inventory_of_the_previous_release_keeps_its_fragments_and_converges_when_rewritten(
    pipeline: Pipeline, logs, request, tmp_path, monkeypatch
):
    """Migration 005 from schema 4 (the release before it): that release kept a fragment for
    every session. Its days stay valid as they are, new days meet them, and a day written again
    is stored as this release stores it, with every part, session and counter exact."""
    from asn_pipeline.store import schema
    from asn_pipeline.store.report import table_checksums
    from asn_pipeline_tests.conftest import assert_exact
    from asn_pipeline_tests.test_invariants import DAYS as WEEK
    from asn_pipeline_tests.test_invariants import write_week

    write_week(logs)
    pipeline.run(*WEEK[:-1])
    columns = ["sensor", "session_id", "fragment_date", "src_ip", "first_event_at"]
    columns += ["last_event_at", "event_count", "ingested_by_run"]
    parts = pipeline.table("session_parts")[columns]
    fragments = pipeline.table("session_fragments")
    assert 0 < len(fragments) < len(parts)  # the spanning sessions' parts only
    # Schema 4 as that release left it: a fragment for every part, no view.
    pipeline.execute(
        "INSERT INTO session_fragments SELECT p.* FROM session_parts AS p WHERE NOT EXISTS ("
        "SELECT 1 FROM session_fragments AS f WHERE f.sensor = p.sensor"
        " AND f.session_id = p.session_id AND f.fragment_date = p.fragment_date)",
        "DROP VIEW session_parts",
        UNDO_006,
        "DELETE FROM schema_migrations WHERE version >= 5",
    )
    assert len(pipeline.table("session_fragments")) == len(parts)
    inventory = Inventory(pipeline.db_url)
    try:
        before = table_checksums(inventory)
        schema._APPLIED_IN_PROCESS.discard(inventory.url)  # as a new process of the new release
        assert ensure_schema(inventory) == [5, 6]
        assert table_checksums(inventory) == before
    finally:
        inventory.dispose()
    key = ["sensor", "session_id", "fragment_date"]
    pd.testing.assert_frame_equal(
        pipeline.table("session_parts")[columns].sort_values(key, ignore_index=True),
        parts.sort_values(key, ignore_index=True),
    )

    # A new day next to the old ones, then every day again, last first: the same state as this
    # release's own pass from nothing, fragments included.
    (result,) = pipeline.run(WEEK[-1])
    assert result.success
    assert_exact(pipeline)
    for day in reversed(WEEK):
        pipeline.run(day)
    assert_exact(pipeline)
    fresh = pipeline.other(request, tmp_path, "fresh")
    monkeypatch.setenv("ASN_PIPELINE_DB_URL", fresh.db_url)
    fresh.run(*WEEK)
    assert pipeline.snapshot() == fresh.snapshot()
    # Only the sessions spanning midnight keep fragments, two parts each.
    kept = pipeline.table("session_fragments").groupby(["sensor", "session_id"]).size()
    assert kept.index.get_level_values("session_id").str.startswith("mid").all()
    assert (kept == 2).all() and len(kept) == 2 * (len(WEEK) - 1)


def test_an_inventory_of_the_previous_release_keeps_its_queued_keys_with_a_generation_each(
    pipeline: Pipeline, logs
):
    """Migration 006 from schema 5 (the release before it), with a week of data in it and
    (day, ASN) keys queued that its drain had not reached: each gets a generation, and the
    upgrade's drain writes their statistics as the sessions say."""
    from asn_pipeline.store import schema
    from asn_pipeline_tests.conftest import assert_exact
    from asn_pipeline_tests.test_invariants import DAYS as WEEK
    from asn_pipeline_tests.test_invariants import write_week

    write_week(logs)
    pipeline.run(*WEEK[:-1])
    stats = pipeline.table("asn_daily_stats")
    day, asn = stats.iloc[0]["stat_date"], int(stats.iloc[0]["asn_number"])
    pipeline.execute(
        UNDO_006,
        "DELETE FROM schema_migrations WHERE version = 6",
        # Queued as that release queued it, and a statistic it had not recomputed yet.
        f"INSERT INTO stale_days (stat_date, asn_number) VALUES ('{day}', {asn})",
        f"UPDATE asn_daily_stats SET new_ip_count = new_ip_count + 7 WHERE stat_date = '{day}'"
        f" AND asn_number = {asn}",
    )
    assert "generation" not in pipeline.table("stale_days").columns
    sessions_before = pipeline.table("sessions")
    inventory = Inventory(pipeline.db_url)
    try:
        schema._APPLIED_IN_PROCESS.discard(inventory.url)  # as a new process of the new release
        assert ensure_schema(inventory) == [6]
    finally:
        inventory.dispose()
    assert pipeline.table("schema_migrations")["version"].tolist()[-1] == 6
    assert list(pipeline.table("stale_days").columns) == ["stat_date", "asn_number", "generation"]
    pd.testing.assert_frame_equal(pipeline.table("sessions"), sessions_before)
    assert_exact(pipeline)  # the queued key drained, its statistic as the sessions say

    # The next day, written by this release, meets the upgraded queue.
    (result,) = pipeline.run(WEEK[-1])
    assert result.success
    assert_exact(pipeline)
