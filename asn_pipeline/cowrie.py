"""Cowrie JSON logs: find a day's files and fold their events into per-session fragments.

A fragment is what one day's files say about one session (sensor, session id): its source address,
first and last event time and event count. Sessions that span midnight have one fragment per day;
the store merges them. Every line that cannot be used becomes a rejected line with a reason.
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pandas as pd

from asn_pipeline.lookup.special_purpose import canonical_ip

FRAGMENT_COLUMNS = [
    "sensor",
    "session_id",
    "src_ip",
    "first_event_at",
    "last_event_at",
    "event_count",
]
_DAILY_NAME = re.compile(r"^cowrie\.json\.(\d{4}-\d{2}-\d{2})(\.gz)?$")
_CANONICAL_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


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


def parse_day(files: list[LogFile]) -> ParsedDay:
    """Fold every event of the given files into one fragment per (sensor, session)."""
    sessions: dict[tuple[str, str], list] = {}
    ip_cache: dict[str, str | None] = {}
    day = ParsedDay(files=files, fragments=pd.DataFrame(columns=FRAGMENT_COLUMNS), rejected=[])

    def reject(log: LogFile, number: int, reason: str, raw: bytes) -> None:
        # NUL is valid UTF-8 but no database text type holds it: escape it like other bad bytes.
        text = raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n").replace("\0", "\\x00")
        day.rejected.append(RejectedLine(log.name, number, reason, text))
        day.reasons[reason] += 1

    for log in files:
        for number, raw in _numbered_lines(log, day):
            day.lines_read += 1
            if not raw.strip():
                day.blank_lines += 1
                continue
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:
                reject(log, number, _undecodable_reason(raw), raw)
                continue
            if not isinstance(event, dict):
                reject(log, number, "not_an_object", raw)
                continue
            reason, key, src_ip, timestamp = _session_event(event, log, ip_cache)
            if reason:
                reject(log, number, reason, raw)
                continue
            day.events_read += 1
            entry = sessions.get(key)
            if entry is None:
                sessions[key] = [src_ip, timestamp, timestamp, 1]
                continue
            entry[3] += 1
            if timestamp > entry[2]:
                entry[2] = timestamp
            if timestamp < entry[1]:
                entry[1] = timestamp
                if src_ip != entry[0]:
                    day.src_ip_conflicts += 1
                    entry[0] = src_ip
            elif src_ip != entry[0]:
                day.src_ip_conflicts += 1

    day.fragments = pd.DataFrame(
        [(sensor, session, *values) for (sensor, session), values in sessions.items()],
        columns=FRAGMENT_COLUMNS,
    )
    day.fragments["event_count"] = day.fragments["event_count"].astype("int64")
    return day


def _numbered_lines(log: LogFile, day: ParsedDay) -> Iterator[tuple[int, bytes]]:
    """Lines of a plain or gzip file; a damaged gzip stream ends in one rejected line."""
    opener = gzip.open if log.path.suffix == ".gz" else open
    number = 0
    with opener(log.path, "rb") as handle:
        try:
            for number, raw in enumerate(handle, start=1):  # noqa: B007
                yield number, raw
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            reason = "truncated_gzip" if isinstance(error, EOFError) else "corrupt_gzip"
            day.rejected.append(RejectedLine(log.name, number + 1, reason, str(error)))
            day.reasons[reason] += 1


def _undecodable_reason(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    return "invalid_json"


def _session_event(
    event: dict,
    log: LogFile,
    ip_cache: dict[str, str | None],
) -> tuple[str | None, tuple[str, str], str, str]:
    """(reason, key, src_ip, timestamp) of one event; ``reason`` is set when it is unusable."""
    session, src, stamp = event.get("session"), event.get("src_ip"), event.get("timestamp")
    sensor = event.get("sensor") or log.sensor_folder
    for name, value in (("session", session), ("src_ip", src), ("timestamp", stamp)):
        if value is None or value == "":
            return f"missing_{name}", ("", ""), "", ""
        if not isinstance(value, str) or "\0" in value:
            return f"invalid_{name}", ("", ""), "", ""
    if not isinstance(sensor, str) or not sensor:
        return "missing_sensor", ("", ""), "", ""
    if "\0" in sensor:
        return "invalid_sensor", ("", ""), "", ""
    src_ip = ip_cache.get(src, "")
    if src_ip == "":
        try:
            src_ip = canonical_ip(src)
        except ValueError:
            src_ip = None
        ip_cache[src] = src_ip
    if src_ip is None:
        return "invalid_src_ip", ("", ""), "", ""
    timestamp = normalise_timestamp(stamp)
    if timestamp is None:
        return "invalid_timestamp", ("", ""), "", ""
    return None, (sensor, session), src_ip, timestamp


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
