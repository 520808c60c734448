"""The per-line work of reading Cowrie logs: fold one part of one file into session fragments.

Kept apart from ``asn_pipeline.cowrie`` so that the worker processes which run ``serve`` do not
import pandas: a worker starts in a fraction of a second.

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
import io
import os
import pickle
import re
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import orjson

from asn_pipeline.lookup.special_purpose import canonical_ip

_CANONICAL_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
# ipaddress rejects leading zeros, so a dotted quad in this form is its own canonical text.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PLAIN_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")
_MISSING = object()

# (first timestamp, src_ip, event count) of one run of a session's events.
Run = tuple[str, str, int]
# (src_ip, first timestamp, last timestamp, event count) of one session.
Fragment = tuple[str, str, str, int]


@dataclass(frozen=True)
class LogPart:
    """The lines in bytes ``[start, end)`` of one file (offsets on line starts); gzip: all of it."""

    path: str
    start: int
    end: int
    gzip: bool
    sensor_folder: str | None


@dataclass
class PartResult:
    """What one part says; line numbers count from the part's first line, starting at 1.

    ``fragments`` are columns (sensor, session_id, src_ip, first_event_at, last_event_at,
    event_count) with one row per session in order of first appearance. ``runs`` holds the runs of
    the few rows that have more than one; every other row is the single run
    ``(first_event_at, src_ip, event_count)``.
    """

    lines_read: int = 0
    blank_lines: int = 0
    events_read: int = 0
    src_ip_conflicts: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)
    fragments: list[Sequence] = field(default_factory=lambda: [(), (), (), (), (), ()])
    runs: dict[int, list[Run]] = field(default_factory=dict)


def read_part(part: LogPart) -> PartResult:
    """Fold every line of one part into session fragments and rejected lines."""
    result = PartResult()
    if part.gzip:
        _scan(_gzip_lines(part.path, result), part.sensor_folder, result)
        return result
    with open(part.path, "rb") as handle:
        handle.seek(part.start)
        data = handle.read(part.end - part.start)
    # Line by line rather than split(): each line's bytes reuse the memory the last one freed.
    _scan(io.BytesIO(data), part.sensor_folder, result)
    return result


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
    """Cowrie's ISO timestamp as fixed-width UTC text (sorts as time); ``None`` if invalid."""
    if _CANONICAL_TS.match(text):
        try:
            dt.datetime.fromisoformat(text)
        except ValueError:
            return None
        return text
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _scan(lines: Iterable[bytes], sensor_folder: str | None, result: PartResult) -> None:
    """The hot loop: one ``orjson.loads`` and a handful of tests per well-formed line."""
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    rejected = result.rejected
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
            if raw.strip():
                rejected.append((number, _undecodable_reason(raw), _raw_text(raw)))
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
            # from a second seen valid. The session, sensor and address passed every check then.
            src_ip, timestamp = entry[1], stamp
        else:
            if type(event) is not dict:
                rejected.append((number, "not_an_object", _raw_text(raw)))
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
                reason = _field_reason(session, src, stamp, sensor)
                rejected.append((number, reason, _raw_text(raw)))
                continue
            src_ip = ip_cache.get(src, _MISSING)
            if src_ip is _MISSING:
                src_ip = ip_cache[src] = _canonical_ip_or_none(src)
            if src_ip is None:
                rejected.append((number, "invalid_src_ip", _raw_text(raw)))
                continue
            if stamp[26:] == "Z" and stamp.isascii() and stamp[20:26].isdigit():
                # Cowrie's own form: normalise_timestamp keeps such a stamp or rejects it, and
                # which depends only on the part before the microseconds: decide once a second.
                second = stamp[:20]
                valid = second_valid.get(second)
                if valid is None:
                    valid = second_valid[second] = normalise_timestamp(stamp) == stamp
                timestamp = stamp if valid else normalise_timestamp(stamp)
            else:
                timestamp = normalise_timestamp(stamp)
            if timestamp is None:
                rejected.append((number, "invalid_timestamp", _raw_text(raw)))
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


def _gzip_lines(path: str, result: PartResult) -> Iterator[bytes]:
    """Lines of a gzip file; a damaged stream ends in one rejected line after the last good one."""
    number = 0
    with gzip.open(path, "rb") as handle:
        try:
            for number, raw in enumerate(handle, start=1):  # noqa: B007
                yield raw
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            reason = "truncated_gzip" if isinstance(error, EOFError) else "corrupt_gzip"
            result.rejected.append((number + 1, reason, str(error)))


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
