"""The landing sensor: a run of daily_asn_inventory for each day whose files are new or changed.

What is new is decided by a watermark per folder (the landing directory itself and each sensor
folder): the highest inode change time (ctime) seen there, and a digest of the name, size and
modification time of the few entries at exactly that time. ctime rather than mtime, because
``rsync -a`` and ``cp -p`` give a copy its old mtime, while every create, write, rename or link
sets ctime to the clock of the machine that holds the folder; one watermark per folder keeps
sensor folders mounted from machines with different clocks apart. The cursor holds these
watermarks and the few days whose files came before their partition exists (today's), nothing
per file, so it stays small however many years the landing directory holds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from asn_pipeline.cowrie import (
    LandingDirectoryError,
    LandingFiles,
    files_version,
    landing_files,
)
from asn_pipeline.defs.automation.jobs import daily_asn_inventory
from asn_pipeline.defs.partitions import daily_partitions
from asn_pipeline.resources import LandingDirectory

LANDING_SENSOR = "cowrie_landing_sensor"
CURSOR_VERSION = 1
# A day after the last partition waits for it when it is today (UTC) or tomorrow (a sensor in a
# time zone ahead of UTC rotates its file before the UTC day ends); later days are skipped.
WAIT_DAYS_AHEAD = 1
NOTES_SHOWN = 10
TAG_CHARS = 12
NOT_AN_INPUT = {
    "live_log": "Cowrie's live log, read once it is rotated",
    "not_a_daily_file": "not named cowrie.json.YYYY-MM-DD[.gz]",
    "folder_in_sensor_folder": "nothing below a sensor folder is read",
    "symlink_outside_landing": "links out of the landing directory",
}


@dataclass(frozen=True)
class Seen:
    """What the sensor compares of an entry: inode change time, size, modification time."""

    ctime_ns: int
    size: int
    mtime_ns: int

    def tag(self, name: str) -> str:
        """A short digest of the entry's name and version, to keep in the cursor."""
        text = f"{name}\0{self.size}\0{self.mtime_ns}".encode("utf-8", "surrogateescape")
        return hashlib.sha256(text).hexdigest()[:TAG_CHARS]


@dataclass(frozen=True)
class Watermark:
    """The highest ctime seen in a folder (``None``: nothing seen yet) and a tag of each entry
    at exactly that ctime: an entry that gets the same ctime later (the clock ticks in
    milliseconds), or a file changed again within that tick, is new."""

    ctime_ns: int | None = None
    at_mark: frozenset[str] = frozenset()

    def is_new(self, name: str, seen: Seen) -> bool:
        if self.ctime_ns is None or seen.ctime_ns > self.ctime_ns:
            return True
        return seen.ctime_ns == self.ctime_ns and seen.tag(name) not in self.at_mark

    def advanced(self, entries: dict[str, Seen]) -> Watermark:
        """The watermark after a tick that saw ``entries`` in the folder."""
        top = max(seen.ctime_ns for seen in entries.values())
        if self.ctime_ns is not None and self.ctime_ns > top:  # the newest entry is gone
            return self
        return Watermark(top, frozenset(s.tag(n) for n, s in entries.items() if s.ctime_ns == top))


@dataclass(frozen=True)
class LandingCursor:
    """The sensor's cursor: a watermark per folder (``""``: the landing directory itself), the
    days waiting for their partition, and the ctime a folder not seen yet starts from."""

    folders: dict[str, Watermark] = field(default_factory=dict)
    waiting: frozenset[dt.date] = frozenset()
    landed_after_ns: int | None = None

    def mark(self, folder: str) -> Watermark:
        return self.folders.get(folder) or Watermark(self.landed_after_ns)

    @classmethod
    def parse(cls, text: str | None) -> LandingCursor:
        """The cursor this sensor wrote, or one set by hand: ``{"landed_after": "<ISO time>"}``
        (only files that land after that time are new)."""
        if not text:
            return cls()
        try:
            state = json.loads(text)
            if "landed_after" in state:
                after = dt.datetime.fromisoformat(state["landed_after"])
                if after.tzinfo is None:
                    raise ValueError("landed_after needs a time zone, e.g. 2026-12-01T00:00:00Z")
                return cls(landed_after_ns=round(after.timestamp() * 10**6) * 1000)
            if state.get("version") != CURSOR_VERSION:
                raise ValueError(f"expected version {CURSOR_VERSION}")
            return cls(
                folders={
                    folder: Watermark(int(ctime), frozenset(map(str, at_mark)))
                    for folder, (ctime, at_mark) in state["folders"].items()
                },
                waiting=frozenset(dt.date.fromisoformat(day) for day in state["waiting"]),
                landed_after_ns=state.get("landed_after_ns"),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ValueError(
                f"{LANDING_SENSOR}: cannot read its cursor ({error}); reset it with "
                f"`dagster sensor cursor {LANDING_SENSOR} --delete` (every day is new again) or "
                f'`--set \'{{"landed_after": "<ISO time>"}}\'`'
            ) from None

    def dumps(self) -> str:
        state = {
            "version": CURSOR_VERSION,
            "folders": {f: [w.ctime_ns, sorted(w.at_mark)] for f, w in self.folders.items()},
            "waiting": sorted(day.isoformat() for day in self.waiting),
        }
        if self.landed_after_ns is not None:
            state["landed_after_ns"] = self.landed_after_ns
        return json.dumps(state, sort_keys=True, separators=(",", ":"))


@dataclass
class Look:
    """What a tick saw: each entry's state by folder, each day's files read with their state,
    the days with a new or changed file read (and those files' names), and a note for each new
    or changed entry that belongs to no day."""

    seen: dict[str, dict[str, Seen]] = field(default_factory=dict)
    days: dict[dt.date, list[tuple[str, Seen]]] = field(default_factory=dict)
    new_days: dict[dt.date, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dg.sensor(
    job=daily_asn_inventory,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def cowrie_landing_sensor(
    context: dg.SensorEvaluationContext, landing: LandingDirectory
) -> dg.SensorResult:
    """A run of a day when a file of it lands or changes in ASN_PIPELINE_LANDING_DIR."""
    try:
        listing = landing_files(landing.root)
    except LandingDirectoryError as error:
        raise LandingDirectoryError(
            f"ASN_PIPELINE_LANDING_DIR={str(landing.root)!r}: {error}"
        ) from None
    cursor = LandingCursor.parse(context.cursor)
    look = _look(listing, cursor)
    days, new_days, notes = look.days, look.new_days, look.notes

    requests, waiting = [], set()
    with dg.partition_loading_context() as partitions:
        today = partitions.effective_dt.astimezone(dt.UTC).date()
        first, end = daily_partitions.start.date(), daily_partitions.end
        for day in sorted(set(new_days) | cursor.waiting):
            key = day.isoformat()
            names = ", ".join(new_days.get(day, [])) or key
            if daily_partitions.has_partition_key(key):
                if day not in days:  # a waiting day whose files are gone
                    notes.append(f"{key}: its files are gone, not requested")
                    continue
                run_key = f"{key}:{_version_of(days[day])}"
                requests.append(dg.RunRequest(partition_key=key, run_key=run_key))
                context.log.info(f"{key}: run {run_key} for {names}")
            elif day < first:
                notes.append(f"{names}: before the first partition {first.isoformat()}")
            elif end is not None and day >= end.date():
                notes.append(f"{names}: after the last partition {end.date().isoformat()}")
            elif day <= today + dt.timedelta(days=WAIT_DAYS_AHEAD):
                waiting.add(day)
                context.log.info(f"{key}: waits for its partition (the day ends at 24:00 UTC)")
            else:
                notes.append(f"{names}: the day is in the future ({today.isoformat()} in UTC)")

    folders = dict(cursor.folders)
    folders.update({f: cursor.mark(f).advanced(entries) for f, entries in look.seen.items()})
    next_cursor = LandingCursor(folders, frozenset(waiting), cursor.landed_after_ns).dumps()
    for note in notes:
        context.log.warning(f"Not requested: {note}")
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=next_cursor)
    return dg.SensorResult(
        skip_reason=_skip_reason(landing.root, days, waiting, notes), cursor=next_cursor
    )


def _look(listing: LandingFiles, cursor: LandingCursor) -> Look:
    """Compare every entry with the cursor's watermark of its folder."""
    look = Look()
    read = {log.name: day for day, found in listing.days.items() for log in found.files}
    for entry in listing.entries:
        # A file read follows its link; an entry read from no file is looked at itself (a
        # gzip copy beside its plain file, a link out of the landing directory, other names).
        state = _seen(entry.path, follow=entry.name in read)
        if state is None:  # gone since the listing
            continue
        folder = entry.sensor_folder or ""
        look.seen.setdefault(folder, {})[entry.name] = state
        day = read.get(entry.name)
        if day is not None:
            look.days.setdefault(day, []).append((entry.name, state))
        if not cursor.mark(folder).is_new(entry.name, state):
            continue
        if day is not None:
            look.new_days.setdefault(day, []).append(entry.name)
        elif entry.day is None:
            look.notes.append(f"{entry.name}: {NOT_AN_INPUT[entry.reason]}")
    return look


def _seen(path: Path, *, follow: bool) -> Seen | None:
    """The entry's state (of its target when ``follow``; a link's own change counts too), or
    ``None`` when it is gone since the listing."""
    try:
        own = os.lstat(path)
        target = os.stat(path) if follow else own
    except OSError:
        return None
    return Seen(max(own.st_ctime_ns, target.st_ctime_ns), target.st_size, target.st_mtime_ns)


def _version_of(files: list[tuple[str, Seen]]) -> str:
    """A digest of a day's file set: names, sizes and modification times."""
    return files_version((name, seen.size, seen.mtime_ns) for name, seen in files)


def _skip_reason(
    root: Path, days: dict[dt.date, list[tuple[str, Seen]]], waiting: set[dt.date], notes: list[str]
) -> str:
    files = sum(len(found) for found in days.values())
    reason = f"No new or changed daily file in {root} ({files} files of {len(days)} days)."
    if waiting:
        reason += (
            f" Waiting for their partition: {', '.join(d.isoformat() for d in sorted(waiting))}."
        )
    if notes:
        shown = "; ".join(notes[:NOTES_SHOWN])
        more = f"; and {len(notes) - NOTES_SHOWN} more" if len(notes) > NOTES_SHOWN else ""
        reason += f" Not requested: {shown}{more}."
    return reason
