"""Cowrie JSON logs: find a day's files and fold their events into per-session fragments.

A fragment is what one day's files say about one session (sensor, session id): its source address,
first and last event time and event count. Sessions that span midnight have one fragment per day;
the store merges them. Every line that cannot be used becomes a rejected line with a reason.

A large day is read in parts (byte ranges of plain files, cut on line boundaries; whole gzip
files) by worker processes running ``asn_pipeline.cowrie_events``, and the parts' results are
merged in file and line order into exactly what one pass over every line gives. The environment
variable ``ASN_PIPELINE_PARSE_WORKERS`` sets the number of workers (default: one per CPU; ``1``
reads in this process). A day smaller than ``IN_PROCESS_BYTES`` is always read in this process.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import pickle
import queue
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from asn_pipeline.cowrie_events import LogPart, PartResult, fold_runs, read_part
from asn_pipeline.cowrie_events import normalise_timestamp as normalise_timestamp
from asn_pipeline.settings import parse_workers

FRAGMENT_COLUMNS = [
    "sensor",
    "session_id",
    "src_ip",
    "first_event_at",
    "last_event_at",
    "event_count",
]
_DAILY_NAME = re.compile(r"^cowrie\.json\.(\d{4}-\d{2}-\d{2})(\.gz)?$")
PART_BYTES = 32 << 20
IN_PROCESS_BYTES = 64 << 20


@dataclass(frozen=True)
class LogFile:
    """One daily Cowrie file; ``name`` is its path relative to the landing directory."""

    path: Path
    name: str
    sensor_folder: str | None


@dataclass(frozen=True)
class RejectedLine:
    source_file: str
    line_number: int
    reason: str
    raw_line: str


@dataclass
class ParsedDay:
    """Everything read from one day's files."""

    files: list[LogFile]
    fragments: pd.DataFrame
    rejected: list[RejectedLine]
    events_read: int = 0
    lines_read: int = 0
    blank_lines: int = 0
    src_ip_conflicts: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


def files_for_day(landing_dir: Path, day: dt.date) -> list[LogFile]:
    """The day's files in the landing directory and one level of sensor sub-folders."""
    wanted = day.isoformat()
    found = []
    for path in sorted([*landing_dir.glob("cowrie.json.*"), *landing_dir.glob("*/cowrie.json.*")]):
        match = _DAILY_NAME.match(path.name)
        if not match or match.group(1) != wanted or not path.is_file():
            continue
        folder = path.parent.name if path.parent != landing_dir else None
        found.append(LogFile(path, path.relative_to(landing_dir).as_posix(), folder))
    return found


def parse_day(
    files: list[LogFile],
    *,
    workers: int | None = None,
    part_bytes: int = PART_BYTES,
    in_process_bytes: int = IN_PROCESS_BYTES,
) -> ParsedDay:
    """Fold every event of the given files into one fragment per (sensor, session).

    A day of ``in_process_bytes`` or more is read in parts of about ``part_bytes`` by ``workers``
    processes (default: ``ASN_PIPELINE_PARSE_WORKERS``, else one per CPU). None of the three
    changes the result.
    """
    parts = [part for log in files for part in _parts(log, part_bytes)]
    if sum(log.path.stat().st_size for log in files) < in_process_bytes:
        workers = 1  # starting processes would cost more than it saves
    elif workers is None:
        workers = parse_workers() or os.cpu_count() or 1
    workers = min(workers, len(parts))
    with _gc_paused():
        if workers <= 1:
            return _merge(files, parts, map(read_part, parts))
        with _read_in_workers(parts, workers) as results:
            return _merge(files, parts, results)


@contextmanager
def _read_in_workers(parts: list[LogPart], workers: int) -> Iterator[Iterator[PartResult]]:
    """The parts' results in order, read by ``workers`` new Python processes.

    Fresh interpreters, as Dagster runs are threaded and must not fork. Not multiprocessing's spawn
    or forkserver: they import the main module again in each worker, and when that is a Dagster
    entry point or a benchmark script, starting a worker takes seconds instead of a tenth.
    """
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-c", "from asn_pipeline.cowrie_events import serve; serve()"]
    processes: list[subprocess.Popen] = []
    idle: queue.SimpleQueue[subprocess.Popen] = queue.SimpleQueue()

    def read(part: LogPart) -> PartResult:
        process = idle.get()
        try:
            pickle.dump(part, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            process.stdin.flush()
            done, result = pickle.load(process.stdout)
        except (EOFError, BrokenPipeError, pickle.UnpicklingError):
            raise ChildProcessError(f"a worker reading {part.path} exited") from None
        finally:
            idle.put(process)  # even a dead one: the next part then fails at once, not hangs
        if not done:
            raise result
        return result

    threads = ThreadPoolExecutor(workers, thread_name_prefix="cowrie-parts")
    try:
        for _ in range(workers):
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=environment
            )
            processes.append(process)
            idle.put(process)
        yield threads.map(read, parts)
    except BaseException:
        for process in processes:
            process.kill()
        raise
    finally:
        threads.shutdown(cancel_futures=True)
        for process in processes:
            with suppress(OSError):
                process.stdin.close()  # the worker's end of input: it exits
            process.wait()


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Parsing allocates millions of objects and no reference cycles: collecting is pure cost.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parts(log: LogFile, part_bytes: int) -> list[LogPart]:
    """Split a plain file into equal parts of at most about ``part_bytes``, on line boundaries."""
    path, folder = str(log.path), log.sensor_folder
    if log.path.suffix == ".gz":
        return [LogPart(path, 0, 0, True, folder)]  # a gzip stream can only be read from its start
    size = log.path.stat().st_size
    count = max(1, -(-size // part_bytes))
    starts = [0]
    with open(log.path, "rb") as handle:
        for target in (size * i // count for i in range(1, count)):
            if target > starts[-1]:
                start = _next_line_start(handle, target, size)
                if start >= size:
                    break
                starts.append(start)
    ends = [*starts[1:], size]
    return [LogPart(path, *bounds, False, folder) for bounds in zip(starts, ends, strict=True)]


def _next_line_start(handle: BinaryIO, offset: int, size: int) -> int:
    """The first offset at or after ``offset`` where a line starts (``size`` if none does)."""
    handle.seek(offset - 1)
    position = offset - 1
    while block := handle.read(1 << 16):
        newline = block.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(block)
    return size


def _merge(files: list[LogFile], parts: list[LogPart], results: Iterable[PartResult]) -> ParsedDay:
    """Combine part results in file and line order, exactly as one pass over all lines would."""
    day = ParsedDay(files=files, fragments=pd.DataFrame(columns=FRAGMENT_COLUMNS), rejected=[])
    names = {str(log.path): log.name for log in files}
    columns: list[list] = [[] for _ in FRAGMENT_COLUMNS]
    rows: dict[tuple[str, str], int] = {}
    line_offset, previous_path = 0, None
    for part, result in zip(parts, results, strict=True):
        if part.path != previous_path:
            line_offset, previous_path = 0, part.path
        name = names[part.path]
        day.rejected.extend(
            RejectedLine(name, line_offset + number, reason, raw)
            for number, reason, raw in result.rejected
        )
        line_offset += result.lines_read
        day.lines_read += result.lines_read
        day.blank_lines += result.blank_lines
        day.events_read += result.events_read
        day.src_ip_conflicts += result.src_ip_conflicts
        day.src_ip_conflicts += _add_fragments(columns, rows, result)
    day.reasons = Counter(line.reason for line in day.rejected)
    if rows:
        day.fragments = pd.DataFrame(dict(zip(FRAGMENT_COLUMNS, columns, strict=True)))
    day.fragments["event_count"] = day.fragments["event_count"].astype("int64")
    return day


def _add_fragments(
    columns: list[list], rows: dict[tuple[str, str], int], result: PartResult
) -> int:
    """Append a part's sessions to the day's columns; returns the change in ``src_ip_conflicts``.

    A session seen by an earlier part (typically one that straddles the parts' boundary) is folded
    into that row from its runs, and its conflicts are counted again from the row's state.
    """
    part_columns = result.fragments
    keys = list(zip(part_columns[0], part_columns[1], strict=True))
    part_rows = dict(zip(keys, range(len(keys)), strict=True))
    shared = sorted(part_rows[key] for key in part_rows.keys() & rows.keys())
    change = 0
    for row in shared:
        _, _, src_ip, first, last, count = (column[row] for column in part_columns)
        runs = result.runs.get(row) or [(first, src_ip, count)]
        change -= fold_runs(None, runs, last)[1]  # as counted within the part
        held = rows[keys[row]]
        fragment = tuple(column[held] for column in columns[2:])
        fragment, conflicts = fold_runs(fragment, runs, last)
        change += conflicts
        for column, value in zip(columns[2:], fragment, strict=True):
            column[held] = value
    if shared:
        part_columns = [list(column) for column in part_columns]
        for row in reversed(shared):
            del keys[row]
            for column in part_columns:
                del column[row]
    rows.update(zip(keys, range(len(rows), len(rows) + len(keys)), strict=True))
    for column, part_column in zip(columns, part_columns, strict=True):
        column.extend(part_column)
    return change
