"""Cowrie JSON logs: find a day's files and fold their events into per-session fragments.

A fragment is what one day's files say about one session (sensor, session id): its source address,
first and last event time and event count. Sessions that span midnight have one fragment per day;
the store merges them. Every line that cannot be used becomes a rejected line with a reason (the
reasons are listed in ``asn_pipeline.cowrie_events``), and every file read gets a ``FileReport``.

Which files make a day (``files_for_day``): ``cowrie.json.D`` and ``cowrie.json.D.gz`` in the
landing directory and in its sub-folders, one per sensor, and nothing deeper. Hidden files and
folders (``.snapshot/``) are not looked at. A symlink, to a file or to a sensor folder, is followed
only if it resolves inside the landing directory. When a folder holds both ``cowrie.json.D`` and
``cowrie.json.D.gz``, the plain file is read and the ``.gz`` skipped: while ``gzip`` runs, the plain
file is complete and the ``.gz`` partial, and ``gzip -k`` leaves two copies of the same lines. A
file reached under two names (a symlink or hard link to another of the day's files) is read once,
under the name that is no link. Every file left out for one of these reasons (hidden ones apart)
is listed with the reason in ``DayFiles.skipped``. ``landing_files`` gives every day's files by the
same rules from one listing, and the entries that belong to no day (the live ``cowrie.json``,
other names).

A large day is read in parts (byte ranges of plain files, cut on line boundaries; whole gzip
files) by worker processes running ``asn_pipeline.cowrie_events``, and the parts' results are
merged in file and line order into exactly what one pass over every line gives. The environment
variable ``ASN_PIPELINE_PARSE_WORKERS`` sets the number of workers (default: one per CPU; ``1``
reads in this process). A day smaller than ``IN_PROCESS_BYTES`` is always read in this process.
Input is read in blocks and rejected lines are kept on disk until the ``ParsedDay`` is closed, so
memory stays bounded whatever the files hold.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import os
import pickle
import queue
import stat
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from asn_pipeline import settings
from asn_pipeline.cowrie_events import LogPart, PartResult, fold_runs, read_part, read_spool
from asn_pipeline.cowrie_events import normalise_timestamp as normalise_timestamp

FRAGMENT_COLUMNS = [
    "sensor",
    "session_id",
    "src_ip",
    "first_event_at",
    "last_event_at",
    "event_count",
]
PART_BYTES = 32 << 20
IN_PROCESS_BYTES = 64 << 20
# A batch of rejected lines holds at most this many characters of raw text, however many lines.
_BATCH_CHARS = 32 << 20


class LandingDirectoryError(OSError):
    """The landing directory is missing, not a directory, or cannot be listed."""


@dataclass(frozen=True)
class LogFile:
    """One daily Cowrie file; ``name`` is its path relative to the landing directory.

    ``logical_name`` is ``name`` without ``.gz``: the same file of the day, compressed or not.
    """

    path: Path
    name: str
    sensor_folder: str | None
    logical_name: str
    day: dt.date


@dataclass(frozen=True)
class SkippedFile:
    """A file or sensor folder that looks like part of the day but is not read, and why."""

    name: str
    reason: str
    detail: str


@dataclass(frozen=True)
class DayFiles:
    """The files to read for a day, and those left out with a reason."""

    files: list[LogFile]
    skipped: list[SkippedFile]


@dataclass(frozen=True)
class RejectedLine:
    """A line that is no usable event.

    ``line_bytes`` is the length of the whole line without its line break; ``raw_line`` is the
    line, or only its start when it is too long, and then ``line_sha256`` is the whole line's hash.
    """

    source_file: str
    line_number: int
    reason: str
    raw_line: str
    line_bytes: int
    line_sha256: str | None = None


@dataclass(frozen=True)
class FileReport:
    """What reading one file gave; ``status`` is ``ok``, ``no_events`` (read, but no event in it),
    ``not_gzip``, ``truncated_gzip`` or ``corrupt_gzip``."""

    name: str
    logical_name: str
    size_bytes: int
    lines_read: int
    events_read: int
    rejected_lines: int
    status: str


class RejectedLines:
    """A day's rejected lines in file and line order, read back from disk at each iteration."""

    def __init__(
        self,
        spool: tempfile.TemporaryDirectory | None = None,
        segments: list[tuple[str, str, int]] | None = None,
        count: int = 0,
    ) -> None:
        self._spool = spool
        self._segments = segments or []  # (spool file, source file, line number of its line 0)
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[RejectedLine]:
        for path, source_file, line_offset in self._segments:
            for number, reason, raw_line, line_bytes, line_sha256 in read_spool(path):
                yield RejectedLine(
                    source_file, line_offset + number, reason, raw_line, line_bytes, line_sha256
                )

    def batches(self, size: int = 10_000) -> Iterator[list[RejectedLine]]:
        """The lines in lists of at most ``size``; fewer when their raw lines are long."""
        batch: list[RejectedLine] = []
        chars = 0
        for line in self:
            batch.append(line)
            chars += len(line.raw_line)
            if len(batch) >= size or chars >= _BATCH_CHARS:
                yield batch
                batch, chars = [], 0
        if batch:
            yield batch

    def close(self) -> None:
        """Delete the spool files; the lines cannot be read any more."""
        if self._spool is not None:
            self._spool.cleanup()


@dataclass
class ParsedDay:
    """Everything read from one day's files; ``close`` it (or use ``with``) to free its spool."""

    files: list[LogFile]
    fragments: pd.DataFrame
    rejected: RejectedLines
    file_reports: list[FileReport] = field(default_factory=list)
    events_read: int = 0
    lines_read: int = 0
    blank_lines: int = 0
    src_ip_conflicts: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def close(self) -> None:
        """Delete the rejected lines' spool files."""
        self.rejected.close()

    def __enter__(self) -> ParsedDay:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def files_for_day(landing_dir: Path, day: dt.date) -> DayFiles:
    """The day's files in the landing directory and one level of sensor sub-folders, in order,
    and the ones left out, by the rules of the module docstring.

    Raises ``LandingDirectoryError`` if the landing directory or a sensor folder cannot be listed.
    """
    root = _landing_root(landing_dir)
    skipped: list[SkippedFile] = []
    named = list(_named_for_day(landing_dir, root, day, skipped))
    return _resolve_day(landing_dir, root, day, named, skipped)


def _named_for_day(
    landing_dir: Path, root: str, day: dt.date, skipped: list[SkippedFile]
) -> list[tuple[str, str, str | None]]:
    """(name, path, sensor folder) of every entry named as a file of ``day``; sensor folders
    that are symlinks out of the landing directory go to ``skipped``, unread."""
    wanted = f"cowrie.json.{day.isoformat()}"
    found = []
    for entry in _listing(landing_dir, landing_dir):
        if entry.name.removesuffix(".gz") == wanted:
            found.append((entry.name, entry.path, None))
        elif _is_dir(entry):
            folder = _text(entry.name)
            if not _inside(root, entry.path):
                target = _text(os.path.realpath(entry.path))
                skipped.append(SkippedFile(folder, "symlink_outside_landing", target))
                continue
            for inner in _listing(entry.path, landing_dir):
                if inner.name.removesuffix(".gz") == wanted:
                    found.append((f"{folder}/{inner.name}", inner.path, folder))
    return found


def _landing_root(landing_dir: Path) -> str:
    """The landing directory's real path, after checking that it can be listed."""
    try:
        status = os.stat(landing_dir)
    except FileNotFoundError:
        raise LandingDirectoryError(f"landing directory {landing_dir} does not exist") from None
    except OSError as error:
        raise LandingDirectoryError(
            f"landing directory {landing_dir} cannot be read: {error.strerror}"
        ) from None
    if not stat.S_ISDIR(status.st_mode):
        raise LandingDirectoryError(f"landing directory {landing_dir} is not a directory")
    if not os.access(landing_dir, os.R_OK | os.X_OK):
        raise LandingDirectoryError(f"landing directory {landing_dir} is not readable")
    return os.path.realpath(landing_dir)


def _listing(directory: str | Path, landing_dir: Path) -> list[os.DirEntry]:
    """The directory's entries that are not hidden, by name."""
    try:
        with os.scandir(directory) as entries:
            return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as error:
        raise LandingDirectoryError(
            f"landing directory {landing_dir}: cannot list {directory}: {error.strerror}"
        ) from None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop, say: nothing to list there
        return False


def _inside(root: str, path: str) -> bool:
    """Whether ``path``, symlinks resolved, is ``root`` or below it."""
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def _text(name: str) -> str:
    # A file name that is not UTF-8 holds surrogates, which no database text column takes.
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


LIVE_LOG = "cowrie.json"
DAILY_PREFIX = "cowrie.json."


@dataclass(frozen=True)
class LandingEntry:
    """A visible entry of the landing directory or of a sensor folder.

    ``day`` is set for a name of a day's file (read or skipped, as ``files_for_day`` decides).
    An entry that belongs to no day has a ``reason``: ``live_log`` (Cowrie's current
    ``cowrie.json``, read once it is rotated), ``not_a_daily_file`` (any other name),
    ``folder_in_sensor_folder`` (nothing below a sensor folder is read) or
    ``symlink_outside_landing`` (a sensor folder that links out of the landing directory).
    """

    path: Path
    name: str
    sensor_folder: str | None
    day: dt.date | None = None
    reason: str | None = None


@dataclass(frozen=True)
class LandingFiles:
    """The landing directory from one listing: for each day that has a file name, what
    ``files_for_day`` gives for it, and every entry looked at."""

    days: dict[dt.date, DayFiles]
    entries: list[LandingEntry]

    @property
    def not_inputs(self) -> list[LandingEntry]:
        """The entries that belong to no day."""
        return [entry for entry in self.entries if entry.day is None]


def landing_files(landing_dir: Path) -> LandingFiles:
    """Every day's files in the landing directory and one level of sensor sub-folders, by the
    rules of the module docstring, from one listing however many days it holds.

    Raises ``LandingDirectoryError`` if the landing directory or a sensor folder cannot be listed.
    """
    root = _landing_root(landing_dir)
    entries: list[LandingEntry] = []
    outside: list[SkippedFile] = []  # files_for_day lists these in every day's skipped files

    def add(entry: os.DirEntry, folder: str | None, is_dir: bool) -> None:
        # A day's file name is ASCII: the name files_for_day gives it.
        shown = f"{folder}/{_text(entry.name)}" if folder else _text(entry.name)
        day = daily_file_day(entry.name)
        if day is not None:
            entries.append(LandingEntry(Path(entry.path), shown, folder, day))
            return
        live = entry.name.removesuffix(".gz") == LIVE_LOG
        reason = "folder_in_sensor_folder" if is_dir else "live_log" if live else "not_a_daily_file"
        entries.append(LandingEntry(Path(entry.path), shown, folder, reason=reason))

    for entry in _listing(landing_dir, landing_dir):
        if daily_file_day(entry.name) is not None or not _is_dir(entry):
            add(entry, None, False)
            continue
        folder = _text(entry.name)
        if not _inside(root, entry.path):
            target = _text(os.path.realpath(entry.path))
            outside.append(SkippedFile(folder, "symlink_outside_landing", target))
            reason = "symlink_outside_landing"
            entries.append(LandingEntry(Path(entry.path), folder, None, reason=reason))
            continue
        for inner in _listing(entry.path, landing_dir):
            add(inner, folder, _is_dir(inner))
    named: dict[dt.date, list[tuple[str, str, str | None]]] = {}
    for entry in entries:
        if entry.day is not None:
            named.setdefault(entry.day, []).append(
                (entry.name, str(entry.path), entry.sensor_folder)
            )
    days = {
        day: _resolve_day(landing_dir, root, day, found, list(outside))
        for day, found in sorted(named.items())
    }
    return LandingFiles(days, entries)


def daily_file_day(name: str) -> dt.date | None:
    """The day of a daily file name, ``cowrie.json.YYYY-MM-DD`` with or without ``.gz``."""
    stem = name.removesuffix(".gz")
    if not stem.startswith(DAILY_PREFIX):
        return None
    text = stem.removeprefix(DAILY_PREFIX)
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        return None
    return day if day.isoformat() == text else None  # not 20261120 or 2026-W47-5


def files_version(files: Iterable[tuple[str, int, int]]) -> str:
    """A digest of a day's files from each one's name, size and modification time (ns): the
    landing sensor's run key of the day and the landing directory's data version of it."""
    return hashlib.sha256(json.dumps(sorted(files)).encode()).hexdigest()[:16]


def _resolve_day(
    landing_dir: Path,
    root: str,
    day: dt.date,
    named: list[tuple[str, str, str | None]],
    skipped: list[SkippedFile],
) -> DayFiles:
    """The day's files from the entries named for it, by the rules of the module docstring;
    ``skipped`` gets the entries left out."""
    names_of_file: dict[tuple[int, int], list[tuple[bool, str, str, str | None]]] = {}
    for name, path, folder in named:
        target = os.path.realpath(path)
        if not _inside(root, target):
            skipped.append(SkippedFile(name, "symlink_outside_landing", _text(target)))
            continue
        try:
            status = os.stat(path)
        except OSError as error:  # a dangling symlink, a symlink loop
            skipped.append(SkippedFile(name, "not_a_file", error.strerror or str(error)))
            continue
        if not stat.S_ISREG(status.st_mode):  # never open a FIFO, a device or a directory
            kind = "a directory" if stat.S_ISDIR(status.st_mode) else "not a regular file"
            skipped.append(SkippedFile(name, "not_a_file", kind))
            continue
        linked = target != os.path.join(root, os.path.relpath(path, landing_dir))
        names_of_file.setdefault((status.st_dev, status.st_ino), []).append(
            (linked, name, path, folder)
        )
    by_logical_name: dict[str, list[LogFile]] = {}
    for names in names_of_file.values():
        _, name, path, folder = min(names)  # the name that is no link, else the first
        skipped += [SkippedFile(n, "same_file_as", name) for _, n, _, _ in names if n != name]
        log = LogFile(Path(path), name, folder, name.removesuffix(".gz"), day)
        by_logical_name.setdefault(log.logical_name, []).append(log)
    files = []
    for logs in by_logical_name.values():
        if len(logs) > 1:  # the plain file and its .gz: the plain one is complete (docstring)
            plain = next(log for log in logs if log.name == log.logical_name)
            skipped += [
                SkippedFile(log.name, "duplicate_of_plain_file", plain.name)
                for log in logs
                if log is not plain
            ]
            logs = [plain]
        files += logs
    # As paths sort: the landing directory's own files, then each folder's.
    files.sort(key=lambda log: log.name.split("/"))
    skipped.sort(key=lambda skip: skip.name.split("/"))
    return DayFiles(files, skipped)


def parse_day(
    files: list[LogFile],
    *,
    workers: int | None = None,
    part_bytes: int = PART_BYTES,
    in_process_bytes: int = IN_PROCESS_BYTES,
    max_line_bytes: int | None = None,
) -> ParsedDay:
    """Fold every event of the given files into one fragment per (sensor, session).

    A day of ``in_process_bytes`` or more is read in parts of about ``part_bytes`` by ``workers``
    processes (default: ``ASN_PIPELINE_PARSE_WORKERS``, else one per CPU). None of the three
    changes the result. A line longer than ``max_line_bytes`` (default:
    ``ASN_PIPELINE_MAX_LINE_BYTES``) is rejected. Rejected lines wait in a temporary directory
    until the result is closed.
    """
    limit = settings.max_line_bytes() if max_line_bytes is None else max_line_bytes
    spool = tempfile.TemporaryDirectory(prefix="asn-pipeline-rejected-")
    try:
        sizes = [log.path.stat().st_size for log in files]
        ranges = [
            (owner, bounds)
            for owner, log in enumerate(files)
            for bounds in _byte_ranges(log, sizes[owner], part_bytes)
        ]
        parts = [
            LogPart(
                path=str(files[owner].path),
                start=start,
                end=end,
                gzip=files[owner].name.endswith(".gz"),
                sensor_folder=files[owner].sensor_folder,
                day=files[owner].day,
                spool=os.path.join(spool.name, f"part-{index}"),
                max_line_bytes=limit,
            )
            for index, (owner, (start, end)) in enumerate(ranges)
        ]
        owners = [owner for owner, _ in ranges]
        if sum(sizes) < in_process_bytes:
            workers = 1  # starting processes would cost more than it saves
        elif workers is None:
            workers = settings.parse_workers() or os.cpu_count() or 1
        workers = min(workers, len(parts))
        with _gc_paused():
            if workers <= 1:
                return _merge(files, sizes, parts, owners, map(read_part, parts), spool)
            with _read_in_workers(parts, workers) as results:
                return _merge(files, sizes, parts, owners, results, spool)
    except BaseException:
        spool.cleanup()
        raise


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


def _byte_ranges(log: LogFile, size: int, part_bytes: int) -> list[tuple[int, int]]:
    """Split a plain file into equal parts of at most about ``part_bytes``, on line boundaries."""
    if log.name.endswith(".gz"):
        return [(0, 0)]  # a gzip stream can only be read from its start
    count = max(1, -(-size // part_bytes))
    starts = [0]
    with open(log.path, "rb") as handle:
        for target in (size * i // count for i in range(1, count)):
            if target > starts[-1]:
                start = _next_line_start(handle, target, size)
                if start >= size:
                    break
                starts.append(start)
    return list(zip(starts, [*starts[1:], size], strict=True))


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


def _merge(
    files: list[LogFile],
    sizes: list[int],
    parts: list[LogPart],
    owners: list[int],
    results: Iterable[PartResult],
    spool: tempfile.TemporaryDirectory,
) -> ParsedDay:
    """Combine part results in file and line order, exactly as one pass over all lines would.

    ``owners`` gives the index in ``files`` of each part's file.
    """
    day = ParsedDay(
        files=files, fragments=pd.DataFrame(columns=FRAGMENT_COLUMNS), rejected=RejectedLines()
    )
    columns: list[list] = [[] for _ in FRAGMENT_COLUMNS]
    rows: dict[tuple[str, str], int] = {}
    segments: list[tuple[str, str, int]] = []
    rejected_lines = 0
    per_file = [[0, 0, 0, None] for _ in files]  # lines, events, rejected lines, damage
    line_offset, previous_owner = 0, None
    for part, owner, result in zip(parts, owners, results, strict=True):
        if owner != previous_owner:
            line_offset, previous_owner = 0, owner
        if result.rejected_lines:
            segments.append((part.spool, files[owner].name, line_offset))
        counts = per_file[owner]
        counts[0] += result.lines_read
        counts[1] += result.events_read
        counts[2] += result.rejected_lines
        counts[3] = counts[3] or result.damage
        line_offset += result.lines_read
        rejected_lines += result.rejected_lines
        day.lines_read += result.lines_read
        day.blank_lines += result.blank_lines
        day.events_read += result.events_read
        day.reasons.update(result.reasons)
        day.src_ip_conflicts += result.src_ip_conflicts
        day.src_ip_conflicts += _add_fragments(columns, rows, result)
    day.rejected = RejectedLines(spool, segments, rejected_lines)
    day.file_reports = [
        FileReport(
            log.name,
            log.logical_name,
            size,
            lines,
            events,
            rejected,
            damage or ("ok" if events else "no_events"),
        )
        for log, size, (lines, events, rejected, damage) in zip(files, sizes, per_file, strict=True)
    ]
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
