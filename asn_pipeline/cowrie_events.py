"""The per-line work of reading Cowrie logs: what makes a line rejected, and folding one part of one
file into session fragments.

Kept apart from ``asn_pipeline.cowrie`` so that the worker processes which run ``serve`` do not
import pandas: a worker starts in a fraction of a second.

A line is an event, a blank line, or a rejected line with one reason:

- ``line_too_long``: longer than the limit (``ASN_PIPELINE_MAX_LINE_BYTES``), never parsed; only
  its first ``RAW_PREFIX_BYTES`` bytes are kept, with its length and SHA-256;
- ``invalid_utf8``, ``invalid_json``, ``not_an_object``;
- ``missing_``/``invalid_`` + ``session``, ``src_ip``, ``timestamp`` or ``sensor``: the field is
  absent, empty, not a string, holds NUL, or (``src_ip``) is no IP address;
- ``timestamp_out_of_range`` (no UTC time: ``0001-01-01T00:30:00+01:00``),
  ``timestamp_before_year_1000`` (its text would lose the fixed width that ordering needs),
  ``timestamp_far_from_file_day`` (outside the file's window, see ``WINDOW_BEFORE``);
- ``truncated_gzip``, ``corrupt_gzip``: the partial line at which a gzip stream breaks off (its
  bytes, maybe none); ``not_gzip``: a ``.gz`` file that is not gzip at all, as one empty line.

Input is read in blocks and handed to the hot loop as lines of whole blocks, so neither a gzip
bomb nor a gigabyte-long line is ever held whole. Rejected lines go to a spool file per part as
they come and are read back in order by the parent process (``read_spool``).

A part's sessions come back as fragments. A session that an earlier part also saw is folded again
from its *runs*, so that parts read in separate processes merge to exactly the result of reading
every line in turn: a run ``(ts, src_ip, n)`` is one event followed by ``n - 1`` events with the
same source address and timestamps not earlier than ``ts``, and folding it has the same effect as
folding its ``n`` events one by one (``fold_runs``). Within a part, almost every session is one run.
"""

from __future__ import annotations

import datetime as dt
import gc
import gzip
import hashlib
import io
import os
import pickle
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from typing import BinaryIO

import orjson

from asn_pipeline.lookup.special_purpose import canonical_ip

_CANONICAL_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
# ipaddress rejects leading zeros, so a dotted quad in this form is its own canonical text.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PLAIN_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")
_MISSING = object()

# Cowrie rotates cowrie.json.D at the sensor's local midnight, and local time is UTC-12h to
# UTC+14h: the file holds events from D-1 10:00Z to D+1 12:00Z. A sensor clock up to ~10 h wrong
# widens that to [D-1 00:00Z, D+2 00:00Z); an event outside is implausible for the file. The bounds
# fall on whole seconds, so the hot loop's per-second cache of valid timestamps tests them too.
WINDOW_BEFORE = dt.timedelta(days=1)
WINDOW_AFTER = dt.timedelta(days=2)
RAW_PREFIX_BYTES = 4096
BLOCK_BYTES = 8 << 20
# A hostile file can make every source address or second unique: the caches then start over.
_CACHE_ENTRIES = 1 << 20
# A spool batch is pickled when it holds this many lines or characters of raw text.
_SPOOL_BATCH_LINES = 10_000
_SPOOL_BATCH_CHARS = 4 << 20
_GZIP_MAGIC = b"\x1f\x8b"

# (first timestamp, src_ip, event count) of one run of a session's events.
Run = tuple[str, str, int]
# (src_ip, first timestamp, last timestamp, event count) of one session.
Fragment = tuple[str, str, str, int]
# (line number in the part, reason, raw_line, line_bytes, line_sha256) of one rejected line.
SpooledLine = tuple[int, str, str, int, str | None]


@dataclass(frozen=True)
class LogPart:
    """The lines in bytes ``[start, end)`` of one file (offsets on line starts); gzip: all of it.

    ``day`` is the file's day (for the timestamp window); rejected lines go to the file ``spool``.
    """

    path: str
    start: int
    end: int
    gzip: bool
    sensor_folder: str | None
    day: dt.date
    spool: str
    max_line_bytes: int


@dataclass
class PartResult:
    """What one part says; line numbers count from the part's first line, starting at 1.

    ``fragments`` are columns (sensor, session_id, src_ip, first_event_at, last_event_at,
    event_count) with one row per session in order of first appearance. ``runs`` holds the runs of
    the few rows that have more than one; every other row is the single run
    ``(first_event_at, src_ip, event_count)``. ``damage`` is ``not_gzip``, ``truncated_gzip`` or
    ``corrupt_gzip`` for a damaged gzip file. The rejected lines themselves are in the part's spool.
    """

    lines_read: int = 0
    blank_lines: int = 0
    events_read: int = 0
    src_ip_conflicts: int = 0
    rejected_lines: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    damage: str | None = None
    fragments: list[Sequence] = field(default_factory=lambda: [(), (), (), (), (), ()])
    runs: dict[int, list[Run]] = field(default_factory=dict)


def read_part(part: LogPart) -> PartResult:
    """Fold every line of one part into session fragments; spool its rejected lines."""
    result = PartResult()
    spool = _Spool(part.spool, result)
    try:
        with open(part.path, "rb") as handle:
            _scan(_part_lines(handle, part, result), part, result, spool.reject)
    finally:
        spool.close()
    return result


def read_spool(path: str) -> Iterator[SpooledLine]:
    """The rejected lines a part wrote to ``path``, in order."""
    with open(path, "rb") as handle:
        while True:
            try:
                batch = pickle.load(handle)
            except EOFError:
                return
            yield from batch


def serve() -> None:
    """A worker process: read pickled parts from stdin until it ends, reply to each on stdout.

    A reply is ``(True, PartResult)`` or ``(False, exception)``. Anything else the process prints
    goes to stderr, so that it cannot garble the replies.
    """
    gc.disable()  # a part makes millions of objects and no reference cycles: collecting is waste
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    while True:
        try:
            part = pickle.load(requests)
        except EOFError:
            return
        try:
            reply = (True, read_part(part))
        except Exception as error:  # raised again by the parent, which stops the day
            reply = (False, error)
        pickle.dump(reply, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()


def fold_runs(fragment: Fragment | None, runs: Iterable[Run], last: str) -> tuple[Fragment, int]:
    """Fold runs into a fragment ``(src_ip, first, last, count)``; returns it and its conflicts.

    The source address is that of the earliest event (the first seen among equal timestamps); a
    conflict is an event whose address differs from the fragment's address when it is folded in.
    """
    runs = iter(runs)
    if fragment is None:
        first, src_ip, count = next(runs)
        fragment = (src_ip, first, last, count)
    held_ip, first, held_last, held_count = fragment
    conflicts = 0
    for ts, src_ip, count in runs:
        if ts < first:
            # Only the run's first event can be the earliest; the rest then match its address.
            conflicts += src_ip != held_ip
            held_ip, first = src_ip, ts
        elif src_ip != held_ip:
            conflicts += count
        held_count += count
    return (held_ip, first, max(held_last, last), held_count), conflicts


def normalise_timestamp(text: str) -> str | None:
    """Cowrie's ISO timestamp as fixed-width UTC text (sorts as time); ``None`` if unusable."""
    return _utc_text(text)[0]


def _utc_text(text: str) -> tuple[str | None, str]:
    """``(fixed-width UTC text, "")``, or ``(None, reason)`` for an unusable timestamp."""
    if _CANONICAL_TS.match(text):
        try:
            dt.datetime.fromisoformat(text)
        except ValueError:
            return None, "invalid_timestamp"
        if text < "1000":
            return None, "timestamp_before_year_1000"
        return text, ""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None, "invalid_timestamp"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    try:
        moment = moment.astimezone(dt.UTC)
    except OverflowError:  # before year 1 or after 9999 once in UTC
        return None, "timestamp_out_of_range"
    if moment.year < 1000:  # strftime would write the year in fewer than four digits
        return None, "timestamp_before_year_1000"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), ""


def _window(day: dt.date) -> tuple[str, str]:
    """The first and the first too late timestamp of a file of ``day``, as fixed-width text."""
    earliest = day - WINDOW_BEFORE if day - dt.date.min >= WINDOW_BEFORE else dt.date.min
    latest = day + WINDOW_AFTER if dt.date.max - day >= WINDOW_AFTER else None
    # No date follows 9999-12-31, but every year-9999 timestamp sorts before year "A".
    return f"{earliest}T00:00:00.000000Z", f"{latest or 'A'}T00:00:00.000000Z"


def _scan(
    lines: Iterable[bytes],
    part: LogPart,
    result: PartResult,
    reject: Callable[[int, str, bytes | _BadLine], None],
) -> None:
    """The hot loop: one ``orjson.loads`` and a handful of tests per well-formed line."""
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    sensor_folder = part.sensor_folder
    earliest, latest = _window(part.day)
    earliest_second, latest_second = earliest[:20], latest[:20]
    ip_cache: dict[str, str | None] = {}
    second_valid: dict[str, bool] = {}
    sensors: dict[str, str] = {}
    # (sensor, session) -> [run ts, run src_ip, run count, last ts, closed runs, run's raw src_ip]
    sessions: dict[tuple[str, str], list] = {}
    several_runs: list[tuple[str, str]] = []
    blank = events = number = 0
    for number, raw in enumerate(lines, start=1):  # noqa: B007
        try:
            event = loads(raw)
        except decode_error:
            # A line that is not bytes (a _BadLine: too long, or a damaged gzip's last) is never
            # JSON either: orjson refuses its type.
            if type(raw) is _BadLine:
                reject(number, raw.reason, raw)
            elif raw.strip():
                reject(number, _undecodable_reason(raw), raw)
            else:
                blank += 1  # only blank lines are blank after strip(), and none of them is JSON
            continue
        try:
            session, src, stamp = event["session"], event["src_ip"], event["timestamp"]
            sensor = event["sensor"] or sensor_folder
            entry = sessions.get((sensor, session))
        except (KeyError, TypeError):  # not an object, a field missing or unhashable: see below
            entry = None
        if (
            entry is not None
            and src == entry[5]
            and type(stamp) is str
            and stamp[26:] == "Z"
            and stamp.isascii()
            and stamp[20:26].isdigit()
            and second_valid.get(stamp[:20])
        ):
            # Most events: a session seen before, the same address, a timestamp in Cowrie's form
            # from a second seen valid and in the file's window. The session, sensor and address
            # passed every check then.
            src_ip, timestamp = entry[1], stamp
        else:
            if type(event) is not dict:
                reject(number, "not_an_object", raw)
                continue
            get = event.get
            session, src, stamp = get("session"), get("src_ip"), get("timestamp")
            sensor = get("sensor") or sensor_folder
            if not (
                type(session) is str
                and type(src) is str
                and type(stamp) is str
                and type(sensor) is str
                and session
                and src
                and stamp
                and sensor
                and "\0" not in session
                and "\0" not in src
                and "\0" not in stamp
                and "\0" not in sensor
            ):
                reject(number, _field_reason(session, src, stamp, sensor), raw)
                continue
            src_ip = ip_cache.get(src, _MISSING)
            if src_ip is _MISSING:
                if len(ip_cache) >= _CACHE_ENTRIES:
                    ip_cache.clear()
                src_ip = ip_cache[src] = _canonical_ip_or_none(src)
            if src_ip is None:
                reject(number, "invalid_src_ip", raw)
                continue
            valid = False
            if stamp[26:] == "Z" and stamp.isascii() and stamp[20:26].isdigit():
                # Cowrie's own form: whether the stamp is kept as it is depends only on the part
                # before the microseconds: decide once a second.
                second = stamp[:20]
                valid = second_valid.get(second)
                if valid is None:
                    if len(second_valid) >= _CACHE_ENTRIES:
                        second_valid.clear()
                    valid = second_valid[second] = (
                        earliest_second <= second < latest_second and _utc_text(stamp)[0] == stamp
                    )
            if valid:
                timestamp = stamp
            else:
                timestamp, reason = _utc_text(stamp)
                if timestamp is not None and not earliest <= timestamp < latest:
                    timestamp, reason = None, "timestamp_far_from_file_day"
                if timestamp is None:
                    reject(number, reason, raw)
                    continue
            entry = sessions.get((sensor, session))
        events += 1
        if entry is None:
            sensor = sensors.setdefault(sensor, sensor)  # one string per sensor in the result
            sessions[(sensor, session)] = [timestamp, src_ip, 1, timestamp, None, src]
        elif timestamp >= entry[3] and src_ip == entry[1]:
            entry[2] += 1  # not earlier than any event before: the open run goes on
            entry[3] = timestamp
        else:
            closed = entry[4]
            if closed is None:
                closed = entry[4] = []
                several_runs.append((sensor, session))
            closed.append((entry[0], entry[1], entry[2]))
            entry[0], entry[1], entry[2], entry[5] = timestamp, src_ip, 1, src
            if timestamp > entry[3]:
                entry[3] = timestamp
    result.lines_read += number
    result.blank_lines += blank
    result.events_read += events
    if sessions:
        _fragments(sessions, several_runs, result)


def _fragments(sessions: dict, several_runs: list[tuple[str, str]], result: PartResult) -> None:
    """The part's sessions as columns; a session of one run is its own fragment."""
    sensors, session_ids = zip(*sessions, strict=True)
    firsts, src_ips, counts, lasts, _, _ = zip(*sessions.values(), strict=True)
    if several_runs:
        firsts, src_ips, counts = list(firsts), list(src_ips), list(counts)
        row_of = {key: row for row, key in enumerate(sessions)}
        for key in several_runs:
            ts, src_ip, count, last, closed, _ = sessions[key]
            row = row_of[key]
            runs = result.runs[row] = [*closed, (ts, src_ip, count)]
            (src_ips[row], firsts[row], _, counts[row]), conflicts = fold_runs(None, runs, last)
            result.src_ip_conflicts += conflicts
    result.fragments = [sensors, session_ids, src_ips, firsts, lasts, counts]


class _BadLine:
    """A line handed to the hot loop as its reason, first bytes, length and SHA-256, not whole.

    Bytes arrive in pieces; a CR at the end of a piece is held back, as it may begin the line break.
    """

    __slots__ = ("reason", "prefix", "size", "_hash", "_held_cr")

    def __init__(self, reason: str, data: bytes = b"") -> None:
        self.reason, self.prefix, self.size = reason, b"", 0
        self._hash, self._held_cr = hashlib.sha256(), False
        self.add(data)

    def add(self, data: bytes) -> None:
        if self._held_cr:
            self._take(b"\r")
        self._held_cr = data.endswith(b"\r")
        self._take(memoryview(data)[:-1] if self._held_cr else data)

    def end(self, line_break: bool) -> _BadLine:
        """The line is complete; ``line_break``: it ended in one (else the data ended)."""
        if self._held_cr and not line_break:
            self._take(b"\r")
        self._held_cr = False
        return self

    def _take(self, data: bytes | memoryview) -> None:
        if len(self.prefix) < RAW_PREFIX_BYTES:
            self.prefix += data[: RAW_PREFIX_BYTES - len(self.prefix)]
        self._hash.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> str | None:
        """The hex SHA-256 of the whole line when ``prefix`` is only its start."""
        return self._hash.hexdigest() if self.size > len(self.prefix) else None


def _part_lines(handle: BinaryIO, part: LogPart, result: PartResult) -> Iterable:
    """The part's lines: bytes, and ``_BadLine`` for those not handed over whole."""
    if not part.gzip:
        blocks = _plain_blocks(handle, part.start, part.end)
    elif handle.read(2) in (b"", _GZIP_MAGIC):
        handle.seek(0)
        # read1: a stream that breaks off still gives every byte decompressed before the break.
        blocks = iter(partial(gzip.GzipFile(fileobj=handle).read1, BLOCK_BYTES), b"")
    else:
        result.damage = "not_gzip"
        return [_BadLine("not_gzip")]
    return chain.from_iterable(_lines(blocks, part.max_line_bytes, result))


def _plain_blocks(handle: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    handle.seek(start)
    remaining = end - start
    while remaining > 0 and (block := handle.read(min(BLOCK_BYTES, remaining))):
        remaining -= len(block)
        yield block


def _lines(blocks: Iterator[bytes], limit: int, result: PartResult) -> Iterator[Iterable]:
    """The lines of a stream of blocks, as one iterable per block; a line of more than ``limit``
    bytes (line break excluded) as a ``_BadLine``, streamed through and never held whole.

    A damaged gzip stream ends the lines with its partial last line as a ``_BadLine``.
    """
    carry = b""  # the start of a line that no block so far has ended, at most limit + 1 bytes
    long: _BadLine | None = None  # the line being streamed when it exceeded that
    # Any run of limit + 1 bytes without a newline contains an aligned window of this many.
    window = (limit + 2) // 2
    try:
        for block in blocks:
            start = 0
            if carry or long is not None:
                newline = block.find(b"\n")
                if newline < 0:
                    if long is not None:
                        long.add(block)
                        continue
                    carry += block
                else:
                    if long is not None:
                        long.add(block[:newline])
                        yield (long.end(line_break=True),)
                    else:
                        yield _bounded((carry + block[: newline + 1],), limit)
                    long, carry, start = None, b"", newline + 1
            if not carry:
                last = block.rfind(b"\n", start)
                if last < 0:
                    carry = block[start:]
                else:
                    # The block's whole lines, without copying them: a BytesIO shares the bytes
                    # it is made from, and cutting off less than half of them keeps sharing.
                    lines = io.BytesIO(block)
                    lines.seek(start)
                    lines.truncate(last + 1)
                    carry = block[last + 1 :]
                    if last + 1 - start > limit + 1 and any(
                        block.find(b"\n", at, at + window) < 0
                        for at in range(start, last + 1, window)
                    ):
                        yield _bounded(lines, limit)  # a line may be too long: look at each
                    else:
                        yield lines  # iterating it makes each line's bytes, quickly
            if len(carry) > limit + 1:  # too long, even if a CR at its end is the line break
                long, carry = _BadLine("line_too_long", carry), b""
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        result.damage = "truncated_gzip" if isinstance(error, EOFError) else "corrupt_gzip"
        tail = long if long is not None else _BadLine("", carry)
        tail.reason = result.damage
        yield (tail.end(line_break=False),)
        return
    if long is not None:
        yield (long.end(line_break=False),)
    elif carry:
        yield _bounded((carry,), limit)


def _bounded(lines: Iterable[bytes], limit: int) -> Iterator[bytes | _BadLine]:
    """The lines, each one longer than ``limit`` as a ``_BadLine``."""
    for line in lines:
        if _line_bytes(line) > limit:
            yield _BadLine("line_too_long", line.removesuffix(b"\n")).end(line.endswith(b"\n"))
        else:
            yield line


def _line_bytes(raw: bytes) -> int:
    """The length of a line without its line break (LF or CR LF)."""
    if raw.endswith(b"\n"):
        return len(raw) - (2 if raw.endswith(b"\r\n") else 1)
    return len(raw)


class _Spool:
    """A part's rejected lines, written to a file in pickled batches as they come."""

    def __init__(self, path: str, result: PartResult) -> None:
        self.path, self.result = path, result
        self.batch: list[SpooledLine] = []
        self.chars = 0
        self.handle: BinaryIO | None = None

    def reject(self, number: int, reason: str, raw: bytes | _BadLine) -> None:
        if type(raw) is _BadLine:
            line = (number, reason, _raw_text(raw.prefix), raw.size, raw.sha256)
        else:
            line = (number, reason, _raw_text(raw), _line_bytes(raw), None)
        self.batch.append(line)
        self.chars += len(line[2])
        self.result.rejected_lines += 1
        self.result.reasons[reason] = self.result.reasons.get(reason, 0) + 1
        if len(self.batch) >= _SPOOL_BATCH_LINES or self.chars >= _SPOOL_BATCH_CHARS:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            if self.handle is None:
                self.handle = open(self.path, "wb")  # noqa: SIM115 - closed by close()
            pickle.dump(self.batch, self.handle, protocol=pickle.HIGHEST_PROTOCOL)
            self.batch, self.chars = [], 0

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self.handle is not None:
                self.handle.close()


def _field_reason(session: object, src: object, stamp: object, sensor: object) -> str:
    """Why an event's session, source address, timestamp or sensor is unusable."""
    for name, value in (("session", session), ("src_ip", src), ("timestamp", stamp)):
        if value is None or value == "":
            return f"missing_{name}"
        if not isinstance(value, str) or "\0" in value:
            return f"invalid_{name}"
    if not isinstance(sensor, str) or not sensor:
        return "missing_sensor"
    return "invalid_sensor"


def _canonical_ip_or_none(text: str) -> str | None:
    if _PLAIN_IPV4.fullmatch(text):
        return text
    try:
        return canonical_ip(text)
    except ValueError:
        return None


def _undecodable_reason(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    return "invalid_json"


def _raw_text(raw: bytes) -> str:
    # NUL is valid UTF-8 but no database text type holds it: escape it like other bad bytes.
    return raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n").replace("\0", "\\x00")
