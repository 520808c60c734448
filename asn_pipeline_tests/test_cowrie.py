"""Bad input: every line read is either a session event or a rejected line with a reason."""

from __future__ import annotations

import datetime as dt
import gzip

import pandas as pd
import pytest

from asn_pipeline.cowrie import files_for_day, normalise_timestamp, parse_day
from asn_pipeline_tests.conftest import CowrieLogs, Pipeline, ts
from asn_pipeline_tests.conftest import cowrie_event as event

DAY = dt.date(2026, 11, 20)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"eventid": "cowrie.session.connect", "src_ip": "45.1', "invalid_json"),
        (b'{"eventid": "x", "src_ip": "45.10.0.1", "session": "\xff\xfe"}', "invalid_utf8"),
        (b"[1, 2, 3]", "not_an_object"),
        (event(src_ip=...), "missing_src_ip"),
        (event(session=...), "missing_session"),
        (event(timestamp=...), "missing_timestamp"),
        (event(session=""), "missing_session"),
        (event(src_ip="999.1.2.3"), "invalid_src_ip"),
        (event(src_ip="not an address"), "invalid_src_ip"),
        (event(src_ip=12345), "invalid_src_ip"),
        (event(session=42), "invalid_session"),
        (event(timestamp="yesterday"), "invalid_timestamp"),
        (event(timestamp="2026-13-40T10:00:00.000000Z"), "invalid_timestamp"),
        (event(sensor=...), "missing_sensor"),
    ],
)
def test_an_unusable_line_is_rejected_with_its_reason(tmp_path, line, reason):
    path = tmp_path / f"cowrie.json.{DAY}"
    path.write_bytes(event() + b"\n" + line + b"\n" + event(session="other") + b"\n")

    with parse_day(files_for_day(tmp_path, DAY).files) as parsed:
        rejected = list(parsed.rejected)

    assert parsed.events_read == 2
    assert [(r.line_number, r.reason) for r in rejected] == [(2, reason)]
    assert rejected[0].source_file == path.name
    assert rejected[0].raw_line == line.decode("utf-8", errors="backslashreplace")
    assert (rejected[0].line_bytes, rejected[0].line_sha256) == (len(line), None)
    assert sorted(parsed.fragments["session_id"]) == ["abc123", "other"]


def test_sessions_fold_events_of_plain_and_gzip_files_in_sensor_folders(tmp_path):
    logs = CowrieLogs(tmp_path)
    logs.session("sensor-a", "s1", "45.10.0.1", ts(DAY, 10), events=4)
    logs.session("sensor-b", "s1", "45.10.0.2", ts(DAY, 11), events=2)  # same id, other sensor
    logs.session("sensor-b", "s2", "2a01:1000::5", ts(DAY, 12), events=1)
    logs.write()
    gz = tmp_path / "sensor-b" / f"cowrie.json.{DAY}"
    gz.with_name(gz.name + ".gz").write_bytes(gzip.compress(gz.read_bytes()))
    gz.unlink()
    (tmp_path / "sensor-a" / "cowrie.json").write_text("today's unrotated file is ignored\n")
    (tmp_path / "sensor-a" / f"cowrie.json.{DAY + dt.timedelta(days=1)}").write_text("other day\n")

    files = files_for_day(tmp_path, DAY).files
    parsed = parse_day(files)

    assert [f.name for f in files] == [
        f"sensor-a/cowrie.json.{DAY}",
        f"sensor-b/cowrie.json.{DAY}.gz",
    ]
    frame = parsed.fragments.set_index(["sensor", "session_id"]).sort_index()
    assert frame["event_count"].to_dict() == {
        ("sensor-a", "s1"): 4,
        ("sensor-b", "s1"): 2,
        ("sensor-b", "s2"): 1,
    }
    assert frame.loc[("sensor-a", "s1"), "first_event_at"] == "2026-11-20T10:00:00.000000Z"
    assert frame.loc[("sensor-a", "s1"), "last_event_at"] == "2026-11-20T10:01:00.000000Z"
    assert frame.loc[("sensor-b", "s2"), "src_ip"] == "2a01:1000::5"
    assert len(parsed.rejected) == 0 and list(parsed.rejected) == []


def test_addresses_are_stored_in_canonical_form(tmp_path):
    path = tmp_path / f"cowrie.json.{DAY}"
    lines = [
        event(session="mapped", src_ip="::ffff:45.10.0.1"),
        event(session="long-v6", src_ip="2A01:1000:0000:0000:0000:0000:0000:0005"),
        event(session="spaces", src_ip=" 45.10.0.3 "),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")

    frame = parse_day(files_for_day(tmp_path, DAY).files).fragments.set_index("session_id")

    assert frame["src_ip"].to_dict() == {
        "mapped": "45.10.0.1",
        "long-v6": "2a01:1000::5",
        "spaces": "45.10.0.3",
    }


def test_an_empty_file_and_blank_lines_give_no_rows_and_no_rejects(tmp_path):
    (tmp_path / "sensor-a").mkdir()
    (tmp_path / "sensor-a" / f"cowrie.json.{DAY}").write_bytes(b"")
    (tmp_path / f"cowrie.json.{DAY}").write_bytes(b"\n   \n" + event() + b"\n\n")

    parsed = parse_day(files_for_day(tmp_path, DAY).files)

    assert len(parsed.files) == 2
    assert parsed.events_read == 1 and parsed.blank_lines == 3 and len(parsed.rejected) == 0
    assert [r.status for r in parsed.file_reports] == ["ok", "no_events"]


def test_a_session_with_two_source_addresses_keeps_the_earliest(tmp_path):
    path = tmp_path / f"cowrie.json.{DAY}"
    path.write_bytes(
        event(src_ip="45.10.0.9", timestamp="2026-11-20T10:00:05.000000Z")
        + b"\n"
        + event(src_ip="45.10.0.1", timestamp="2026-11-20T10:00:01.000000Z")
        + b"\n"
    )

    parsed = parse_day(files_for_day(tmp_path, DAY).files)

    assert parsed.fragments.loc[0, "src_ip"] == "45.10.0.1"
    assert parsed.src_ip_conflicts == 1


@pytest.mark.parametrize(
    ("workers", "part_bytes"), [(1, 1 << 20), (2, 1)], ids=["one-pass", "a-part-per-line"]
)
def test_the_earliest_event_gives_the_address_and_every_other_address_is_a_conflict(
    tmp_path, workers, part_bytes
):
    moves = [  # (second, address, conflicts so far)
        (5, "45.10.0.1", 0),
        (7, "45.10.0.2", 1),
        (1, "45.10.0.2", 2),  # earlier: its address is now the session's
        (1, "45.10.0.3", 3),  # as early, but later in the file: keeps 45.10.0.2
        (9, "45.10.0.2", 3),
        (9, "45.10.0.1", 4),
        (10, "45.10.0.1", 5),
    ]
    path = tmp_path / f"cowrie.json.{DAY}"
    path.write_bytes(
        b"".join(
            event(src_ip=ip, timestamp=f"2026-11-20T10:00:{second:02d}.000000Z") + b"\n"
            for second, ip, _ in moves
        )
    )

    parsed = parse_day(
        files_for_day(tmp_path, DAY).files,
        workers=workers,
        part_bytes=part_bytes,
        in_process_bytes=0,
    )

    [row] = parsed.fragments.to_dict("records")
    assert (row["src_ip"], row["event_count"]) == ("45.10.0.2", 7)
    assert (row["first_event_at"], row["last_event_at"]) == (
        "2026-11-20T10:00:01.000000Z",
        "2026-11-20T10:00:10.000000Z",
    )
    assert parsed.src_ip_conflicts == moves[-1][2]


def test_reading_in_parallel_parts_gives_exactly_the_result_of_one_pass(tmp_path):
    at = "2026-11-20T{:02d}:{:02d}:00.000000Z".format
    lines = []
    for i in range(1200):
        # "long" comes back all day, out of time order and from three addresses, so its events
        # and address conflicts fall in every part; the short sessions start and end in between.
        lines.append(
            event(session="long", src_ip=f"45.10.0.{i % 3 + 1}", timestamp=at(i % 23, i % 59))
        )
        lines.append(
            event(session=f"s{i // 4}", src_ip=f"45.11.0.{i % 200}", timestamp=at(i % 24, 0))
        )
        if i % 100 == 0:
            lines += [b'{"truncated": ', b"", b"[1, 2]", event(timestamp="2026-11-20T25:00:00Z")]
            lines.append(event(session="long", timestamp="2026-11-20T00:00:00.5+02:00"))
    (tmp_path / "sensor-a").mkdir()
    plain = tmp_path / "sensor-a" / f"cowrie.json.{DAY}"
    plain.write_bytes(b"\n".join(lines))  # no newline after the last line
    gzipped = [event(session=f"g{i}", src_ip="2a01:1000::5") for i in range(50)]
    gzipped += [event(session="long", src_ip="45.12.0.1", timestamp=at(0, 0)), b"\xff"]
    (tmp_path / "sensor-b").mkdir()
    (tmp_path / "sensor-b" / f"cowrie.json.{DAY}.gz").write_bytes(
        gzip.compress(b"\n".join(gzipped) + b"\n")
    )
    (tmp_path / f"cowrie.json.{DAY}").write_bytes(event(sensor="sensor-c") + b"\n{\n")
    files = files_for_day(tmp_path, DAY).files
    part_bytes = 4096
    assert plain.stat().st_size > 50 * part_bytes

    one_pass = parse_day(files, workers=1, part_bytes=plain.stat().st_size)
    in_parts = parse_day(files, workers=2, part_bytes=part_bytes, in_process_bytes=0)

    pd.testing.assert_frame_equal(in_parts.fragments, one_pass.fragments)
    assert list(in_parts.rejected) == list(one_pass.rejected)
    assert in_parts.file_reports == one_pass.file_reports
    assert in_parts.reasons.most_common() == one_pass.reasons.most_common()
    for counter in ("events_read", "lines_read", "blank_lines", "src_ip_conflicts"):
        assert getattr(in_parts, counter) == getattr(one_pass, counter), counter
    # The properties the parts had to get right, on the one-pass result they match:
    long = one_pass.fragments.set_index(["sensor", "session_id"]).loc[("sensor-a", "long")]
    assert long["event_count"] == 1200 + 12 + 1
    assert (long["src_ip"], long["first_event_at"]) == ("45.10.0.1", "2026-11-19T22:00:00.500000Z")
    assert one_pass.src_ip_conflicts > 1000
    assert {r.source_file for r in one_pass.rejected} == {f.name for f in files}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T10:00:00.123456Z", "2026-11-20T10:00:00.123456Z"),
        ("2026-11-20T10:00:00Z", "2026-11-20T10:00:00.000000Z"),
        ("2026-11-20T12:00:00.5+02:00", "2026-11-20T10:00:00.500000Z"),
        ("2026-11-20T10:00:00", "2026-11-20T10:00:00.000000Z"),
        ("2026-11-20T25:00:00.000000Z", None),
        ("0001-01-01T00:30:00+01:00", None),  # before year 1 in UTC
        ("0999-12-31T23:59:59.000000Z", None),  # three-digit year: no longer sorts as time
        ("", None),
    ],
)
def test_timestamps_are_normalised_to_fixed_width_utc(text, expected):
    assert normalise_timestamp(text) == expected


def test_rejected_lines_are_stored_and_replaced_on_rerun(pipeline: Pipeline, logs: CowrieLogs):
    logs.session("sensor-a", "good", "45.10.0.1", ts(DAY, 9))
    logs.raw("sensor-a", DAY, b'{"truncated": ')
    logs.raw("sensor-a", DAY, event(src_ip="300.1.1.1"))
    logs.write()

    [result] = pipeline.run(DAY)
    pipeline.run(DAY)

    rejected = pipeline.table("rejected_events")
    assert sorted(rejected["reason"]) == ["invalid_json", "invalid_src_ip"]
    assert set(rejected["source_file"]) == {f"sensor-a/cowrie.json.{DAY}"}
    assert (rejected["ingest_date"] == DAY.isoformat()).all()
    metadata = result.asset_materializations_for_node("cowrie_sessions")[0].metadata
    assert metadata["rejected_lines"].value == 2
    assert metadata["events_read"].value == 3
    assert "invalid_json" in metadata["rejected_by_reason"].value


def test_a_day_without_files_succeeds_with_zero_rows(pipeline: Pipeline):
    [result] = pipeline.run(DAY)

    assert result.success
    metadata = pipeline.latest_metadata("cowrie_sessions", DAY)
    assert metadata["file_count"].value == 0
    assert metadata["sessions_owned_by_day"].value == 0
    assert len(pipeline.table("sessions")) == 0
    stats = result.asset_materializations_for_node("asn_statistics")[0].metadata
    assert stats["asns_active"].value == 0
