"""Hostile input: the reader never loses data, never crashes and stays in bounded memory.

Every line read is an event, a blank line or a rejected line; every file of the day is read once
or listed as skipped with a reason; a damaged file is reported, not fatal.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zlib

import pytest

from asn_pipeline.cowrie import LandingDirectoryError, files_for_day, parse_day
from asn_pipeline.cowrie_events import BLOCK_BYTES
from asn_pipeline.settings import ConfigurationError, Settings, max_line_bytes
from asn_pipeline_tests.conftest import cowrie_event as event

DAY = dt.date(2026, 11, 20)
NAME = f"cowrie.json.{DAY}"


def event_of_length(length: int, **fields) -> bytes:
    """A well-formed event of exactly ``length`` bytes."""
    return event(**fields, message="x" * (length - len(event(**fields, message=""))))


def lines(*items: bytes) -> bytes:
    return b"".join(item + b"\n" for item in items)


def test_hidden_files_and_folders_are_not_inputs(tmp_path):
    for folder in (".snapshot", ".git", "sensor-a"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / NAME).write_bytes(lines(event()))
    (tmp_path / ".snapshot" / "sensor-b").mkdir()
    (tmp_path / ".snapshot" / "sensor-b" / NAME).write_bytes(lines(event()))

    found = files_for_day(tmp_path, DAY)

    assert [f.name for f in found.files] == [f"sensor-a/{NAME}"]
    assert found.skipped == []


def test_a_symlink_is_followed_only_when_it_resolves_inside_the_landing_directory(tmp_path):
    landing, outside = tmp_path / "landing", tmp_path / "outside"
    for folder in (landing / "sensor-a", landing / "archive" / "old", outside / "sensor-x"):
        folder.mkdir(parents=True)
    (landing / "sensor-a" / NAME).write_bytes(lines(event(session="a")))
    (landing / "archive" / "old" / "kept").write_bytes(lines(event(session="archived")))
    (outside / "sensor-x" / NAME).write_bytes(lines(event(session="outside")))
    (outside / "secret").write_bytes(lines(event(session="secret")))
    # Inside: a sensor folder that links to a folder two levels down, and one to another sensor.
    (landing / "sensor-b").mkdir()
    (landing / "sensor-b" / NAME).symlink_to("../archive/old/kept")
    (landing / "sensor-c").symlink_to("sensor-a")
    (landing / "sensor-0").mkdir()  # sorts first, but is only another name of sensor-a's file
    (landing / "sensor-0" / NAME).symlink_to(f"../sensor-a/{NAME}")
    # Outside: a file, a sensor folder, and a relative link that climbs out.
    (landing / NAME).symlink_to(outside / "secret")
    (landing / "sensor-x").symlink_to(outside / "sensor-x")
    (landing / "sensor-y").symlink_to("../outside/sensor-x")

    found = files_for_day(landing, DAY)

    assert [(f.name, f.sensor_folder) for f in found.files] == [
        (f"sensor-a/{NAME}", "sensor-a"),
        (f"sensor-b/{NAME}", "sensor-b"),
    ]
    assert [(s.name, s.reason, s.detail) for s in found.skipped] == [
        (NAME, "symlink_outside_landing", str((outside / "secret").resolve())),
        (f"sensor-0/{NAME}", "same_file_as", f"sensor-a/{NAME}"),
        (f"sensor-c/{NAME}", "same_file_as", f"sensor-a/{NAME}"),
        ("sensor-x", "symlink_outside_landing", str((outside / "sensor-x").resolve())),
        ("sensor-y", "symlink_outside_landing", str((outside / "sensor-x").resolve())),
    ]
    with parse_day(found.files) as parsed:
        assert sorted(parsed.fragments["session_id"]) == ["a", "archived"]


def test_a_landing_directory_reached_through_a_symlink_is_the_landing_directory(tmp_path):
    (tmp_path / "real" / "sensor-a").mkdir(parents=True)
    (tmp_path / "real" / "sensor-a" / NAME).write_bytes(lines(event()))
    (tmp_path / "mount").symlink_to(tmp_path / "real")

    found = files_for_day(tmp_path / "mount", DAY)

    assert [f.name for f in found.files] == [f"sensor-a/{NAME}"]
    assert found.skipped == []


def test_a_folder_name_that_is_not_utf8_names_its_files_readably(tmp_path):
    folder = os.path.join(os.fsencode(tmp_path), b"sensor-\xff")
    os.mkdir(folder)
    with open(os.path.join(folder, os.fsencode(NAME)), "wb") as handle:
        handle.write(lines(event(sensor=None), b"junk"))

    [log] = files_for_day(tmp_path, DAY).files
    with parse_day([log]) as parsed:
        [rejected] = parsed.rejected

    assert log.name == f"sensor-\\xff/{NAME}" and log.sensor_folder == "sensor-\\xff"
    assert rejected.source_file == log.name and log.name.encode("utf-8")
    assert list(parsed.fragments["sensor"]) == ["sensor-\\xff"]


def test_names_of_the_day_that_are_no_regular_file_are_skipped_unopened(tmp_path):
    (tmp_path / "sensor-a").mkdir()
    os.mkfifo(tmp_path / "sensor-a" / NAME)  # opening it would wait for a writer forever
    (tmp_path / "sensor-b").mkdir()
    (tmp_path / "sensor-b" / NAME).symlink_to("missing")
    (tmp_path / "sensor-c").mkdir()
    (tmp_path / "sensor-c" / NAME).mkdir()

    found = files_for_day(tmp_path, DAY)

    assert found.files == []
    assert [(s.name, s.reason) for s in found.skipped] == [
        (f"sensor-a/{NAME}", "not_a_file"),
        (f"sensor-b/{NAME}", "not_a_file"),
        (f"sensor-c/{NAME}", "not_a_file"),
    ]


def test_a_day_in_a_plain_file_and_its_gzip_copy_is_counted_once(tmp_path):
    body = lines(event(session="s1"), event(session="s2"))
    for sensor in ("sensor-a", "sensor-b"):
        (tmp_path / sensor).mkdir()
    (tmp_path / "sensor-a" / NAME).write_bytes(body)
    (tmp_path / "sensor-a" / f"{NAME}.gz").write_bytes(gzip.compress(body)[:20])  # gzip running
    (tmp_path / "sensor-b" / f"{NAME}.gz").write_bytes(gzip.compress(body))

    found = files_for_day(tmp_path, DAY)
    with parse_day(found.files) as parsed:
        reports = [(r.name, r.logical_name, r.status) for r in parsed.file_reports]

    assert [(f.name, f.logical_name, f.day) for f in found.files] == [
        (f"sensor-a/{NAME}", f"sensor-a/{NAME}", DAY),
        (f"sensor-b/{NAME}.gz", f"sensor-b/{NAME}", DAY),
    ]
    assert [(s.name, s.reason, s.detail) for s in found.skipped] == [
        (f"sensor-a/{NAME}.gz", "duplicate_of_plain_file", f"sensor-a/{NAME}")
    ]
    assert parsed.events_read == 4 and len(parsed.rejected) == 0
    assert reports == [
        (f"sensor-a/{NAME}", f"sensor-a/{NAME}", "ok"),
        (f"sensor-b/{NAME}.gz", f"sensor-b/{NAME}", "ok"),
    ]


def test_a_landing_directory_that_cannot_be_listed_is_an_error_naming_it(tmp_path):
    missing, not_a_directory = tmp_path / "unmounted", tmp_path / "a-file"
    not_a_directory.write_text("")

    with pytest.raises(LandingDirectoryError, match=f"{missing} does not exist"):
        files_for_day(missing, DAY)
    with pytest.raises(LandingDirectoryError, match=f"{not_a_directory} is not a directory"):
        files_for_day(not_a_directory, DAY)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads whatever the permissions say")
def test_an_unreadable_landing_directory_or_sensor_folder_is_an_error(tmp_path):
    (tmp_path / "sensor-a").mkdir(mode=0)
    with pytest.raises(LandingDirectoryError, match="sensor-a"):
        files_for_day(tmp_path, DAY)
    tmp_path.chmod(0)
    try:
        with pytest.raises(LandingDirectoryError, match="not readable"):
            files_for_day(tmp_path, DAY)
    finally:
        tmp_path.chmod(0o700)
        (tmp_path / "sensor-a").chmod(0o700)


@pytest.mark.parametrize(
    ("stamp", "reason"),
    [
        ("0001-01-01T00:30:00+01:00", "timestamp_out_of_range"),
        ("9999-12-31T23:59:59-01:00", "timestamp_out_of_range"),
        ("0999-12-31T23:59:59.000000Z", "timestamp_before_year_1000"),
        ("1000-01-01T00:30:00+01:00", "timestamp_before_year_1000"),
        ("0500-06-01T12:00:00", "timestamp_before_year_1000"),
        ("2026-11-18T23:59:59.999999Z", "timestamp_far_from_file_day"),
        ("2026-11-19T00:59:59.999999+01:00", "timestamp_far_from_file_day"),
        ("2026-11-22T00:00:00.000000Z", "timestamp_far_from_file_day"),
        ("2026-11-21T23:00:00-01:00", "timestamp_far_from_file_day"),
        ("1970-01-01T00:00:00Z", "timestamp_far_from_file_day"),
        ("9999-12-31T23:59:59.999999Z", "timestamp_far_from_file_day"),
    ],
)
def test_a_timestamp_out_of_range_or_far_from_the_file_day_is_a_rejected_line(
    tmp_path, stamp, reason
):
    # The same stamp first for a new session, then for a known one (the hot loop's fast path).
    (tmp_path / NAME).write_bytes(
        lines(event(), event(session="new", timestamp=stamp), event(timestamp=stamp), event())
    )

    with parse_day(files_for_day(tmp_path, DAY).files) as parsed:
        rejected = [(r.line_number, r.reason) for r in parsed.rejected]

    assert rejected == [(2, reason), (3, reason)]
    assert parsed.events_read == 2 and list(parsed.fragments["session_id"]) == ["abc123"]


@pytest.mark.parametrize(
    ("stamp", "stored"),
    [
        ("2026-11-19T00:00:00.000000Z", "2026-11-19T00:00:00.000000Z"),
        ("2026-11-19T01:00:00+01:00", "2026-11-19T00:00:00.000000Z"),
        ("2026-11-21T23:59:59.999999Z", "2026-11-21T23:59:59.999999Z"),
        ("2026-11-20T13:59:59.5+14:00", "2026-11-19T23:59:59.500000Z"),
        ("2026-11-21T11:59:59-12:00", "2026-11-21T23:59:59.000000Z"),
    ],
)
def test_the_file_day_window_holds_every_time_zone_and_a_skewed_clock(tmp_path, stamp, stored):
    (tmp_path / NAME).write_bytes(lines(event(timestamp=stamp), event(timestamp=stamp)))

    with parse_day(files_for_day(tmp_path, DAY).files) as parsed:
        assert len(parsed.rejected) == 0
    assert parsed.fragments.loc[0, ["first_event_at", "event_count"]].tolist() == [stored, 2]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize(
    ("limit", "length"),
    [(1024, 1025), (1024, 3000), (1 << 20, (1 << 20) + 1), (1 << 20, 3 * BLOCK_BYTES)],
    ids=["just-over", "under-prefix", "default-just-over", "over-several-blocks"],
)
def test_a_line_longer_than_the_limit_is_rejected_and_kept_bounded(
    tmp_path, compress, limit, length
):
    long_event = event_of_length(length, session="long")  # well-formed, but too long
    body = lines(event(), long_event, event(session="s2"), b"[1" + long_event)
    body += lines(event_of_length(limit, session="fits"))  # just fits
    body += b"{" + b"z" * length + b"\r\n" + event(session="s3") + b"\n" + long_event
    path = tmp_path / (f"{NAME}.gz" if compress else NAME)
    path.write_bytes(gzip.compress(body, compresslevel=1) if compress else body)

    with parse_day(files_for_day(tmp_path, DAY).files, max_line_bytes=limit) as parsed:
        rejected = list(parsed.rejected)
        [report] = parsed.file_reports

    expected = {2: long_event, 4: b"[1" + long_event, 6: b"{" + b"z" * length, 8: long_event}
    assert [(r.line_number, r.reason) for r in rejected] == [
        (number, "line_too_long") for number in expected
    ]
    for line in rejected:
        whole = expected[line.line_number]
        assert line.line_bytes == len(whole)
        assert line.raw_line == whole[:4096].decode()
        assert line.line_sha256 == (
            hashlib.sha256(whole).hexdigest() if len(whole) > 4096 else None
        )
    assert parsed.events_read == 4 and parsed.lines_read == 8 == report.lines_read
    assert sorted(parsed.fragments["session_id"]) == ["abc123", "fits", "s2", "s3"]


def test_parts_read_in_parallel_agree_on_long_lines_and_hostile_timestamps(tmp_path):
    body = []
    for i in range(400):
        body.append(event(session=f"s{i % 37}", src_ip=f"45.10.0.{i % 5 + 1}"))
        if i % 9 == 0:
            body.append(event(session=f"s{i % 37}", message="x" * (3000 + i)))
        if i % 13 == 0:
            body.append(event(session=f"s{i % 37}", timestamp="0001-01-01T00:30:00+01:00"))
            body.append(event(session=f"s{i % 37}", timestamp="2026-11-25T00:00:00.000000Z"))
    (tmp_path / NAME).write_bytes(b"\n".join(body))
    files = files_for_day(tmp_path, DAY).files
    size = (tmp_path / NAME).stat().st_size

    with parse_day(files, workers=1, part_bytes=size, max_line_bytes=2048) as one_pass:
        one = list(one_pass.rejected)
    with parse_day(
        files, workers=2, part_bytes=4096, in_process_bytes=0, max_line_bytes=2048
    ) as in_parts:
        parts = list(in_parts.rejected)

    assert parts == one
    assert in_parts.reasons == one_pass.reasons
    assert one_pass.reasons["line_too_long"] == 45
    assert one_pass.reasons["timestamp_out_of_range"] == 31
    assert one_pass.reasons["timestamp_far_from_file_day"] == 31
    assert in_parts.file_reports == one_pass.file_reports
    assert in_parts.fragments.equals(one_pass.fragments)


def test_damaged_files_are_reported_and_keep_what_they_hold(tmp_path):
    body = lines(*(event(session=f"s{i}") for i in range(3000)))
    data = gzip.compress(body)
    for sensor in ("sensor-a", "sensor-b", "sensor-c", "sensor-d", "sensor-e", "sensor-f"):
        (tmp_path / sensor).mkdir()
    (tmp_path / "sensor-a" / f"{NAME}.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "sensor-b" / f"{NAME}.gz").write_bytes(data[:-4] + b"\0\0\0\0")  # bad length
    (tmp_path / "sensor-c" / f"{NAME}.gz").write_bytes(body[:500])  # plain text named .gz
    (tmp_path / "sensor-d" / NAME).write_bytes(b"")
    (tmp_path / "sensor-e" / NAME).write_bytes(lines(b"{", b"   "))
    (tmp_path / "sensor-f" / NAME).write_bytes(body)
    # What a decompressor gets out of the truncated stream before it breaks off:
    readable = zlib.decompressobj(wbits=31).decompress(data[: len(data) // 2])
    complete, partial = readable.rsplit(b"\n", 1)

    with parse_day(files_for_day(tmp_path, DAY).files) as parsed:
        rejected = {(r.source_file.split("/")[0], r.reason): r for r in parsed.rejected}
        reports = {r.name.split("/")[0]: r for r in parsed.file_reports}

    assert {name: r.status for name, r in reports.items()} == {
        "sensor-a": "truncated_gzip",
        "sensor-b": "corrupt_gzip",
        "sensor-c": "not_gzip",
        "sensor-d": "no_events",
        "sensor-e": "no_events",
        "sensor-f": "ok",
    }
    truncated = rejected[("sensor-a", "truncated_gzip")]
    assert reports["sensor-a"].events_read == complete.count(b"\n") + 1
    assert truncated.raw_line == partial.decode() and truncated.line_bytes == len(partial)
    assert truncated.line_number == reports["sensor-a"].lines_read
    assert reports["sensor-b"].events_read == 3000  # the damage is in the trailer
    assert rejected[("sensor-b", "corrupt_gzip")].raw_line == ""
    not_gzip = rejected[("sensor-c", "not_gzip")]
    assert (not_gzip.line_number, not_gzip.raw_line, not_gzip.line_bytes) == (1, "", 0)
    assert [(r.size_bytes, r.lines_read, r.rejected_lines) for r in reports.values()][2:] == [
        (500, 1, 1),
        (0, 0, 0),
        (6, 2, 1),
        (len(body), 3000, 0),
    ]
    assert parsed.lines_read == parsed.events_read + parsed.blank_lines + len(parsed.rejected)


def test_rejected_lines_come_back_in_order_as_often_as_asked_until_closed(tmp_path):
    (tmp_path / "sensor-a").mkdir()
    (tmp_path / "sensor-a" / NAME).write_bytes(lines(*(b"junk %d" % i for i in range(25_000))))
    (tmp_path / NAME).write_bytes(lines(event(), b"[]"))

    parsed = parse_day(files_for_day(tmp_path, DAY).files)
    with parsed:
        first = list(parsed.rejected)
        batches = list(parsed.rejected.batches(10_000))

    assert len(parsed.rejected) == len(first) == 25_001 == parsed.reasons.total()
    assert [(r.source_file, r.line_number, r.reason) for r in first[:2]] == [
        (NAME, 2, "not_an_object"),
        (f"sensor-a/{NAME}", 1, "invalid_json"),
    ]
    assert [r.line_number for r in first[1:]] == list(range(1, 25_001))
    assert [len(b) for b in batches] == [10_000, 10_000, 5_001]
    assert [r for batch in batches for r in batch] == first
    with pytest.raises(FileNotFoundError):
        list(parsed.rejected)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux's peak RSS reset")
def test_a_gzip_bomb_and_a_gigantic_line_are_read_in_bounded_memory(tmp_path):
    """About 200 MB of junk lines and one 128 MiB line in a gzip file of well under 1 MB: parsing
    it may raise the process's peak RSS by at most 64 MiB over what it holds before. What the
    reader holds at once: a block of 8 MiB and the decompressor's output buffer of as much, the
    carried start of a line up to the 1 MiB limit, a spool batch of 4 Mi characters, and their
    copies while they are handed on; about 30 MiB."""
    landing, warm_up = tmp_path / "landing", tmp_path / "warm-up"
    landing.mkdir()
    warm_up.mkdir()
    path = landing / f"{NAME}.gz"
    junk = b"\xff junk that is not JSON and never was, not at all; padding\n" * 10_000
    with gzip.open(path, "wb", compresslevel=6) as handle:
        handle.write(lines(event()))
        for _ in range(110):  # 1.1 million junk lines, 68 MB
            handle.write(junk)
        for _ in range(16):  # one line of 128 MiB
            handle.write(b"a" * (8 << 20))
        handle.write(b"\n" + lines(event(session="after")))
    (warm_up / NAME).write_bytes(lines(b"junk", event(), b"a" * (2 << 20)))
    # Peak RSS from /proc: the process's ru_maxrss starts at its parent's RSS, which the exec
    # carries over; VmHWM can be reset to the current RSS once imports and a first parse are done.
    script = textwrap.dedent(
        f"""
        import datetime as dt, json
        from pathlib import Path
        from asn_pipeline.cowrie import files_for_day, parse_day

        def parse(landing):
            files = files_for_day(Path(landing), dt.date.fromisoformat("{DAY}")).files
            with parse_day(files) as parsed:
                long = [r.line_bytes for r in parsed.rejected if r.reason == "line_too_long"]
                return parsed.events_read, len(parsed.rejected), long

        def kib(field):
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith(field))

        parse({str(warm_up)!r})
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # VmHWM := VmRSS
        before = kib("VmRSS:")
        result = parse({str(landing)!r})
        print(json.dumps([before, kib("VmHWM:"), result]))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, check=True, env=env, text=True
    ).stdout
    before, peak, (events, rejected, long_lines) = json.loads(output)

    growth_mib = (peak - before) / 1024
    print(f"RSS {before / 1024:.0f} MiB before the parse, peak {peak / 1024:.0f} MiB during it")
    assert path.stat().st_size < 1 << 20
    assert (events, rejected, long_lines) == (2, 1_100_001, [128 << 20])
    assert growth_mib < 64


def test_the_line_limit_is_a_validated_setting():
    assert max_line_bytes({}) == 1 << 20 == Settings.from_environ({}).max_line_bytes
    assert max_line_bytes({"ASN_PIPELINE_MAX_LINE_BYTES": "4096"}) == 4096
    for value in ("1023", "1073741825", "1e6", "-5", "١٠٢٤٠"):
        with pytest.raises(ConfigurationError, match="ASN_PIPELINE_MAX_LINE_BYTES"):
            max_line_bytes({"ASN_PIPELINE_MAX_LINE_BYTES": value})
