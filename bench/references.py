"""What the machine can do: floors measured on the same data the pipeline processes.

Each function does the least work its step could possibly do (parse JSON, look up an address,
bulk-write rows) so the pipeline's timings can be read against them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import pathlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import maxminddb
import orjson
import pandas as pd
import sqlalchemy as sa
from pandas.api import types as ptypes

Quote = Callable[[str], str]

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")

_COLUMN_TYPES = {
    "postgresql": {
        "integer": "bigint",
        "float": "double precision",
        "bool": "boolean",
        "timestamptz": "timestamptz",
        "timestamp": "timestamp",
        "text": "text",
    },
    "sqlite": {
        "integer": "INTEGER",
        "float": "REAL",
        "bool": "INTEGER",
        "timestamptz": "TEXT",
        "timestamp": "TEXT",
        "text": "TEXT",
    },
}


def orjson_parse(files: list[pathlib.Path]) -> dict:
    """Read ``files`` line by line in binary mode and ``orjson.loads`` every non-blank line.

    ``.gz`` files are read through ``gzip.open``. Nothing is done with the parsed objects. Lines
    that are not valid JSON (Cowrie logs and the demo data hold some) are counted as
    ``malformed`` rather than aborting the run. Timed: opening, reading, decompressing, parsing.
    Returns ``{"lines": parsed + malformed, "malformed": ..., "seconds": ...}``.
    """
    lines = malformed = 0
    started = time.perf_counter()
    for path in files:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                lines += 1
                try:
                    orjson.loads(line)
                except orjson.JSONDecodeError:
                    malformed += 1
    seconds = time.perf_counter() - started
    return {"lines": lines, "malformed": malformed, "seconds": seconds}


def maxminddb_lookups(asn_mmdb: str, ips: list[str]) -> dict:
    """Look up every address of ``ips`` with ``maxminddb`` (``MODE_AUTO``): ``reader.get(ip)``.

    Only the loop is timed, not opening the database. Returns ``{"lookups": n, "seconds": s}``.
    """
    with maxminddb.open_database(asn_mmdb, maxminddb.MODE_AUTO) as reader:
        get = reader.get
        started = time.perf_counter()
        for ip in ips:
            get(ip)
        seconds = time.perf_counter() - started
    return {"lookups": len(ips), "seconds": seconds}


def copy_upsert(db_url: str, tables: dict[str, pd.DataFrame], keys: dict[str, list[str]]) -> dict:
    """The raw bulk-write floor: stage every frame, then one ``INSERT ... ON CONFLICT`` each.

    For each ``name`` creates a scratch table ``ref_<name>`` shaped like the frame, with
    ``PRIMARY KEY (keys[name])``. Then, timed and in one transaction for all tables: on
    PostgreSQL ``COPY`` of the frame (text format, serialisation included) into a ``TEMP``
    staging table, on SQLite ``executemany`` into one; then ``INSERT INTO ref_<name> SELECT *
    FROM staging ON CONFLICT (keys) DO UPDATE SET`` every non-key column. Creating and dropping
    ``ref_<name>`` is not timed. Keys must be unique within each frame (as one ``INSERT ... ON
    CONFLICT`` requires). Returns ``{"rows": ..., "seconds": ..., "by_table": {name: seconds}}``;
    ``seconds`` also holds the commit, ``by_table`` does not.
    """
    engine = sa.create_engine(db_url)
    dialect = engine.dialect.name
    if dialect not in _COLUMN_TYPES:
        raise ValueError(f"copy_upsert supports postgresql and sqlite, not {dialect}")
    quote = engine.dialect.identifier_preparer.quote
    for name, frame in tables.items():
        _check_identifiers([name, *map(str, frame.columns), *keys[name]])
        missing = set(keys[name]) - set(frame.columns)
        if missing:
            raise ValueError(f"keys {sorted(missing)} are not columns of {name}")

    by_table: dict[str, float] = {}
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        for name, frame in tables.items():
            cursor.execute(f"DROP TABLE IF EXISTS {quote('ref_' + name)}")
            cursor.execute(_create_table(name, frame, keys[name], dialect, quote))
        connection.commit()
        try:
            started = time.perf_counter()
            for name, frame in tables.items():
                table_started = time.perf_counter()
                if dialect == "postgresql":
                    _copy_into_staging(cursor, name, frame, quote)
                else:
                    _insert_into_staging(cursor, name, frame, quote)
                cursor.execute(_upsert_from_staging(name, frame, keys[name], dialect, quote))
                by_table[name] = time.perf_counter() - table_started
            connection.commit()
            seconds = time.perf_counter() - started
        except BaseException:
            connection.rollback()
            raise
        finally:
            for name in tables:
                cursor.execute(f"DROP TABLE IF EXISTS {quote('ref_' + name)}")
                if dialect == "sqlite":
                    cursor.execute(f"DROP TABLE IF EXISTS temp.{quote('stage_' + name)}")
            connection.commit()
        cursor.close()
    finally:
        connection.close()
        engine.dispose()
    return {
        "rows": sum(len(frame) for frame in tables.values()),
        "seconds": seconds,
        "by_table": by_table,
    }


def _check_identifiers(names: Iterable[str]) -> None:
    """Identifiers are spliced into SQL, so they must be plain lower_snake names from code."""
    for name in names:
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"not a plain lower_snake identifier: {name!r}")


def _kind(series: pd.Series) -> str:
    dtype = series.dtype
    if ptypes.is_bool_dtype(dtype):
        return "bool"
    if ptypes.is_integer_dtype(dtype):
        return "integer"
    if ptypes.is_float_dtype(dtype):
        return "float"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "timestamptz"
    if ptypes.is_datetime64_dtype(dtype):
        return "timestamp"
    return "text"


def _create_table(
    name: str, frame: pd.DataFrame, key: list[str], dialect: str, quote: Quote
) -> str:
    types = _COLUMN_TYPES[dialect]
    columns = ", ".join(f"{quote(c)} {types[_kind(frame[c])]}" for c in frame.columns)
    primary_key = ", ".join(quote(c) for c in key)
    return f"CREATE TABLE {quote('ref_' + name)} ({columns}, PRIMARY KEY ({primary_key}))"


def _upsert_from_staging(
    name: str, frame: pd.DataFrame, key: list[str], dialect: str, quote: Quote
) -> str:
    columns = ", ".join(quote(c) for c in frame.columns)
    conflict = ", ".join(quote(c) for c in key)
    updates = [f"{quote(c)} = excluded.{quote(c)}" for c in frame.columns if c not in key]
    action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
    # SQLite: without a WHERE, "ON CONFLICT" would parse as a join constraint of the SELECT.
    where = " WHERE true" if dialect == "sqlite" else ""
    return (
        f"INSERT INTO {quote('ref_' + name)} ({columns}) "
        f"SELECT {columns} FROM {quote('stage_' + name)}{where} "
        f"ON CONFLICT ({conflict}) {action}"
    )


def _copy_into_staging(cursor: Any, name: str, frame: pd.DataFrame, quote: Quote) -> None:
    """``COPY`` the frame in PostgreSQL's text format into a staging table dropped at commit."""
    target, staging = quote("ref_" + name), quote("stage_" + name)
    cursor.execute(f"CREATE TEMP TABLE {staging} (LIKE {target}) ON COMMIT DROP")
    columns = ", ".join(quote(c) for c in frame.columns)
    buffer = io.StringIO()
    buffer.writelines(_copy_lines(frame))
    buffer.seek(0)
    cursor.copy_expert(f"COPY {staging} ({columns}) FROM STDIN", buffer)


def _copy_lines(frame: pd.DataFrame) -> Iterator[str]:
    cells = [_copy_column(frame[c]) for c in frame.columns]
    for row in zip(*cells, strict=True):
        yield "\t".join(row) + "\n"


def _copy_column(series: pd.Series) -> list[str]:
    """One column as COPY text cells: ``\\N`` for missing, backslash/tab/CR/LF escaped."""
    kind = _kind(series)
    missing = series.isna().to_numpy()
    if kind == "integer":
        text = series.astype(object).map(str)
    elif kind == "float":
        text = series.astype(object).map(repr)
    elif kind == "bool":
        text = series.map({True: "t", False: "f"})
    elif kind in ("timestamptz", "timestamp"):
        text = series.map(lambda t: t.isoformat() if t is not pd.NaT else "")
    else:
        text = series.map(_text_value).map(_escape_copy)
    cells = text.tolist()
    for i in missing.nonzero()[0]:
        cells[i] = "\\N"
    return cells


def _text_value(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return "" if value is None or value is pd.NA or value != value else str(value)


def _escape_copy(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _insert_into_staging(cursor: Any, name: str, frame: pd.DataFrame, quote: Quote) -> None:
    """``executemany`` the frame, with bound parameters, into a SQLite temp staging table."""
    target, staging = quote("ref_" + name), quote("stage_" + name)
    cursor.execute(f"DROP TABLE IF EXISTS temp.{staging}")
    cursor.execute(f"CREATE TEMP TABLE {staging} AS SELECT * FROM main.{target} WHERE 0")
    columns = ", ".join(quote(c) for c in frame.columns)
    placeholders = ", ".join("?" for _ in frame.columns)
    cursor.executemany(
        f"INSERT INTO {staging} ({columns}) VALUES ({placeholders})", _sqlite_rows(frame)
    )


def _sqlite_rows(frame: pd.DataFrame) -> Iterator[tuple]:
    """Plain Python values: ``None`` for missing, times as the product stores them (UTC text)."""
    columns = []
    for c in frame.columns:
        series = frame[c]
        kind = _kind(series)
        if kind in ("timestamptz", "timestamp"):
            utc = series.dt.tz_convert("UTC") if kind == "timestamptz" else series
            values = utc.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").astype(object)
        elif kind == "text":
            values = series.map(_text_value, na_action="ignore").astype(object)
        else:
            values = series.astype(object)
        columns.append(values.where(series.notna(), None).tolist())
    return zip(*columns, strict=True)


def group_by_day(db_url: str, day: dt.date) -> dict:
    """One ``GROUP BY`` of ``day``'s sessions by ASN (sessions and distinct addresses), fetched:
    the least a day's statistics can cost. Returns ``{"groups": n, "seconds": s}``."""
    engine = sa.create_engine(db_url)
    statement = sa.text(
        "SELECT asn_number, count(*), count(DISTINCT src_ip) FROM sessions "
        "WHERE ingest_date = :day GROUP BY asn_number"
    )
    day_value = day.isoformat() if engine.dialect.name == "sqlite" else day
    try:
        with engine.connect() as conn:
            started = time.perf_counter()
            groups = len(conn.execute(statement, {"day": day_value}).all())
            seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    return {"groups": groups, "seconds": seconds}
