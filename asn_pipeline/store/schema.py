"""The inventory's schema: numbered migrations per dialect, applied once, in order, in place.

``sql/<dialect>/NNN_name.sql`` are the migrations; ``001`` is the schema of the first release.
An inventory records each migration it has applied in ``schema_migrations``. An inventory made
before that table existed holds the first release's tables and counts as version 1. Every
migration applies under the write lock (and, on PostgreSQL, every day's lock: no day's own rows
are being written meanwhile), in the same transaction as the record of it and the
recomputation of whatever derived values it queued: an upgrade commits whole or not at all, and
concurrent processes opening the same inventory apply it once.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from asn_pipeline.store.database import Inventory, run, sql_statements
from asn_pipeline.store.derived import drain_queues

_MIGRATION = re.compile(r"^(\d{3})_(\w+)\.sql$")
_APPLIED_IN_PROCESS: set[str] = set()


class SchemaVersionError(RuntimeError):
    """The inventory was upgraded by a newer release than this code."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def migrations(folder: Path) -> list[Migration]:
    """The numbered migrations of a dialect's folder, in order."""
    found = []
    for path in folder.glob("*.sql"):
        match = _MIGRATION.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations in {folder} are not numbered 001, 002, ... without gaps")
    return found


def ensure_schema(inventory: Inventory) -> list[int]:
    """Bring the inventory to the code's schema; returns the versions applied (once per process
    and database, later calls return at once).

    Raises ``SchemaVersionError`` if the inventory has a migration this code does not know.
    """
    if inventory.url in _APPLIED_IN_PROCESS:
        return []
    known = migrations(inventory.sql_folder)
    if _is_current(inventory, len(known)):
        _APPLIED_IN_PROCESS.add(inventory.url)
        return []
    # every_day: a migration may rewrite any day's rows (PostgreSQL: no day's own write runs).
    with inventory.write(every_day=True) as conn:
        applied = schema_version(conn)
        if applied > len(known):
            raise SchemaVersionError(
                f"the inventory at {inventory.display_url} is at schema version {applied}, "
                f"newer than this code's {len(known)}; upgrade asn_pipeline to use it"
            )
        pending = known[applied:]
        for migration in pending:
            apply_migration(conn, migration)
        if pending:
            drain_queues(conn)
    _APPLIED_IN_PROCESS.add(inventory.url)
    return [m.version for m in pending]


def _is_current(inventory: Inventory, version: int) -> bool:
    """Whether the inventory is at ``version`` already: a read, which waits for no writer."""
    with inventory.read() as conn:
        if not sa.inspect(conn).has_table("schema_migrations"):
            return False
        applied = conn.exec_driver_sql("SELECT max(version) FROM schema_migrations").scalar()
    return applied is not None and int(applied) == version


def apply_migration(conn: Connection, migration: Migration, note: str | None = None) -> None:
    """Run one migration's statements and record it (the caller holds the write lock)."""
    for statement in sql_statements(migration.path.read_text()):
        conn.exec_driver_sql(statement)
    _record(conn, migration, note)


def schema_version(conn: Connection) -> int:
    """The last migration applied (0 for an empty database, 1 for one made by the first release,
    which has the tables but no ``schema_migrations``)."""
    folder = Inventory.folder_for(conn.dialect.name)
    for statement in sql_statements((folder / "schema_migrations.sql").read_text()):
        conn.exec_driver_sql(statement)
    version = conn.exec_driver_sql("SELECT max(version) FROM schema_migrations").scalar()
    if version is not None:
        return int(version)
    if sa.inspect(conn).has_table("ip_inventory"):
        _record(conn, migrations(folder)[0], note="found: made by the first release")
        return 1
    return 0


def _record(conn: Connection, migration: Migration, note: str | None = None) -> None:
    run(
        conn,
        "schema",
        "record_migration",
        version=migration.version,
        migration=migration.name,
        applied_at=dt.datetime.now(dt.UTC),
        applied_by=note or f"asn_pipeline on {socket.gethostname()}",
    )
