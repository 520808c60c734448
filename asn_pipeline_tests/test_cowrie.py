"""Bad input: every line read is either a session event or a rejected line with a reason."""

from __future__ import annotations

import datetime as dt
import gzip

import orjson
import pytest

from asn_pipeline.cowrie import files_for_day, normalise_timestamp, parse_day
from asn_pipeline_tests.conftest import CowrieLogs, Pipeline, ts

DAY = dt.date(2026, 11, 20)


def event(**fields) -> bytes:
    base = {
        "eventid": "cowrie.login.failed",
        "src_ip": "45.10.0.1",
        "session": "abc123",
        "sensor": "sensor-a",
        "timestamp": "2026-11-20T10:00:00.000000Z",
    }
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


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

    parsed = parse_day(files_for_day(tmp_path, DAY))

    assert parsed.events_read == 2
    assert [(r.line_number, r.reason) for r in parsed.rejected] == [(2, reason)]
    assert parsed.rejected[0].source_file == path.name
    assert parsed.rejected[0].raw_line == line.decode("utf-8", errors="backslashreplace")
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

    files = files_for_day(tmp_path, DAY)
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
    assert parsed.rejected == []


def test_addresses_are_stored_in_canonical_form(tmp_path):
    path = tmp_path / f"cowrie.json.{DAY}"
    lines = [
        event(session="mapped", src_ip="::ffff:45.10.0.1"),
        event(session="long-v6", src_ip="2A01:1000:0000:0000:0000:0000:0000:0005"),
        event(session="spaces", src_ip=" 45.10.0.3 "),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")

    frame = parse_day(files_for_day(tmp_path, DAY)).fragments.set_index("session_id")

    assert frame["src_ip"].to_dict() == {
        "mapped": "45.10.0.1",
        "long-v6": "2a01:1000::5",
        "spaces": "45.10.0.3",
    }


def test_a_truncated_gzip_keeps_what_was_read_and_rejects_the_rest(tmp_path):
    body = b"".join(event(session=f"s{i}") + b"\n" for i in range(2000))
    data = gzip.compress(body)
    (tmp_path / f"cowrie.json.{DAY}.gz").write_bytes(data[: len(data) * 2 // 3])

    parsed = parse_day(files_for_day(tmp_path, DAY))

    assert 0 < parsed.events_read < 2000
    assert [r.reason for r in parsed.rejected] == ["truncated_gzip"]
    assert parsed.rejected[0].line_number == parsed.lines_read + 1


def test_a_corrupt_gzip_is_rejected_not_fatal(tmp_path):
    (tmp_path / f"cowrie.json.{DAY}.gz").write_bytes(b"this is not gzip at all")

    parsed = parse_day(files_for_day(tmp_path, DAY))

    assert parsed.events_read == 0
    assert [r.reason for r in parsed.rejected] == ["corrupt_gzip"]


def test_an_empty_file_and_blank_lines_give_no_rows_and_no_rejects(tmp_path):
    (tmp_path / "sensor-a").mkdir()
    (tmp_path / "sensor-a" / f"cowrie.json.{DAY}").write_bytes(b"")
    (tmp_path / f"cowrie.json.{DAY}").write_bytes(b"\n   \n" + event() + b"\n\n")

    parsed = parse_day(files_for_day(tmp_path, DAY))

    assert len(parsed.files) == 2
    assert parsed.events_read == 1 and parsed.blank_lines == 3 and parsed.rejected == []


def test_a_session_with_two_source_addresses_keeps_the_earliest(tmp_path):
    path = tmp_path / f"cowrie.json.{DAY}"
    path.write_bytes(
        event(src_ip="45.10.0.9", timestamp="2026-11-20T10:00:05.000000Z")
        + b"\n"
        + event(src_ip="45.10.0.1", timestamp="2026-11-20T10:00:01.000000Z")
        + b"\n"
    )

    parsed = parse_day(files_for_day(tmp_path, DAY))

    assert parsed.fragments.loc[0, "src_ip"] == "45.10.0.1"
    assert parsed.src_ip_conflicts == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T10:00:00.123456Z", "2026-11-20T10:00:00.123456Z"),
        ("2026-11-20T10:00:00Z", "2026-11-20T10:00:00.000000Z"),
        ("2026-11-20T12:00:00.5+02:00", "2026-11-20T10:00:00.500000Z"),
        ("2026-11-20T10:00:00", "2026-11-20T10:00:00.000000Z"),
        ("2026-11-20T25:00:00.000000Z", None),
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
    metadata = result.asset_materializations_for_node("cowrie_sessions")[0].metadata
    assert metadata["file_count"].value == 0
    assert metadata["sessions_owned_by_day"].value == 0
    assert len(pipeline.table("sessions")) == 0
    stats = result.asset_materializations_for_node("asn_statistics")[0].metadata
    assert stats["asns_active"].value == 0
