"""The daily schedule and the landing sensor, evaluated as the daemon does, on real files."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
import zoneinfo
from pathlib import Path

import dagster as dg
import pytest

from asn_pipeline.cowrie import LandingDirectoryError, files_for_day, landing_files
from asn_pipeline.defs.automation.jobs import DAILY_JOB
from asn_pipeline.defs.automation.schedules import DAILY_SCHEDULE, daily_schedule
from asn_pipeline.defs.automation.sensors import LANDING_SENSOR
from asn_pipeline.resources import LandingDirectory
from asn_pipeline.settings import ConfigurationError, ScheduleTime, schedule_time
from asn_pipeline_tests.conftest import configure
from asn_pipeline_tests.conftest import cowrie_event as event

# Mid-morning (UTC) of 2026-11-21: the last partition is 2026-11-20.
NOW = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def definitions(monkeypatch, tmp_path, mmdb_files, logs) -> dg.Definitions:
    """The project's Definitions on a SQLite inventory in the test's directory."""
    configure(monkeypatch, f"sqlite:///{tmp_path / 'inventory.sqlite'}", logs, mmdb_files)
    from asn_pipeline.definitions import defs

    return defs()


def at(moment: str, zone: str = "UTC") -> dt.datetime:
    return dt.datetime.fromisoformat(moment).replace(tzinfo=zoneinfo.ZoneInfo(zone))


# The schedule


@pytest.mark.parametrize(
    ("zone", "tick", "day"),
    [
        ("UTC", "2026-11-21T02:00", "2026-11-20"),
        ("UTC", "2026-11-21T00:00", "2026-11-20"),  # midnight: the day has just ended
        ("UTC", "2026-11-20T23:59", "2026-11-19"),  # a minute before, it has not
        ("UTC", "2027-01-01T02:00", "2026-12-31"),  # across the year
        ("America/Los_Angeles", "2026-11-20T23:30", "2026-11-20"),  # 07:30 UTC on the 21st
        ("America/Los_Angeles", "2026-11-20T15:00", "2026-11-19"),  # 23:00 UTC on the 20th
        ("Asia/Tokyo", "2026-11-21T02:00", "2026-11-19"),  # 17:00 UTC on the 20th
        ("Europe/Amsterdam", "2026-03-29T03:30", "2026-03-28"),  # the first hour of summer time
    ],
)
def test_a_tick_targets_the_last_utc_day_that_has_ended_by_its_scheduled_time(
    definitions, zone, tick, day
):
    when = at(tick, zone)
    schedule = daily_schedule(ScheduleTime(when.hour, when.minute, zone))
    context = dg.build_schedule_context(
        scheduled_execution_time=when, repository_def=definitions.get_repository_def()
    )

    result = schedule.evaluate_tick(context)

    [request] = result.run_requests
    assert (request.partition_key, request.run_key) == (day, day)
    assert request.tags["dagster/schedule_name"] == DAILY_SCHEDULE


def test_a_tick_before_the_first_partition_has_ended_is_skipped(definitions):
    schedule = daily_schedule(ScheduleTime())
    context = dg.build_schedule_context(scheduled_execution_time=at("2020-01-01T02:00"))

    result = schedule.evaluate_tick(context)

    assert result.run_requests == []
    assert "first is 2020-01-01" in result.skip_message


def test_the_schedule_is_stopped_by_default_and_ticks_when_the_environment_says(
    monkeypatch, definitions
):
    default = definitions.get_schedule_def(DAILY_SCHEDULE)
    assert (default.cron_schedule, default.execution_timezone) == ("0 2 * * *", "UTC")
    assert default.default_status == dg.DefaultScheduleStatus.STOPPED
    assert default.job_name == DAILY_JOB

    monkeypatch.setenv("ASN_PIPELINE_SCHEDULE_HOUR", "23")
    monkeypatch.setenv("ASN_PIPELINE_SCHEDULE_MINUTE", "30")
    monkeypatch.setenv("ASN_PIPELINE_SCHEDULE_TIMEZONE", "America/Los_Angeles")
    from asn_pipeline.definitions import defs

    configured = defs()
    dg.Definitions.validate_loadable(configured)
    schedule = configured.get_schedule_def(DAILY_SCHEDULE)
    assert (schedule.cron_schedule, schedule.execution_timezone) == (
        "30 23 * * *",
        "America/Los_Angeles",
    )


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("ASN_PIPELINE_SCHEDULE_HOUR", "24", "hour of the day, 0 to 23"),
        ("ASN_PIPELINE_SCHEDULE_HOUR", "two", "hour of the day, 0 to 23"),
        ("ASN_PIPELINE_SCHEDULE_HOUR", "-1", "hour of the day, 0 to 23"),
        ("ASN_PIPELINE_SCHEDULE_MINUTE", "60", "minute of the hour, 0 to 59"),
        ("ASN_PIPELINE_SCHEDULE_MINUTE", "1.5", "minute of the hour, 0 to 59"),
        ("ASN_PIPELINE_SCHEDULE_TIMEZONE", "Mars/Olympus_Mons", "unknown time zone"),
        ("ASN_PIPELINE_SCHEDULE_TIMEZONE", "../../etc/passwd", "unknown time zone"),
        ("ASN_PIPELINE_SCHEDULE_TIMEZONE", "+02:00", "unknown time zone"),
    ],
)
def test_a_bad_schedule_time_names_its_variable_and_value(variable, value, problem):
    with pytest.raises(ConfigurationError) as raised:
        schedule_time({variable: value})
    message = str(raised.value)
    assert message.startswith(f"{variable}={value!r}") and problem in message


def test_the_schedule_time_defaults_to_early_utc():
    assert schedule_time({}) == ScheduleTime(2, 0, "UTC")
    assert schedule_time({"ASN_PIPELINE_SCHEDULE_HOUR": " 7 "}).hour == 7


# The landing sensor


class Landing:
    """A real landing directory and the sensor ticking over it, its cursor kept between ticks
    as the daemon keeps it."""

    def __init__(self, root: Path, definitions: dg.Definitions, instance: dg.DagsterInstance):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.definitions = definitions
        self.instance = instance
        self.cursor: str | None = None

    def write(
        self, name: str, *sessions: str, mtime: dt.datetime | None = None, gz: bool = False
    ) -> Path:
        """Write (or overwrite) ``name``, optionally gzip-compressed and with an old mtime."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        body = b"".join(event(session=s) + b"\n" for s in sessions or ("s1",))
        path.write_bytes(gzip.compress(body) if gz else body)
        if mtime is not None:
            os.utime(path, (mtime.timestamp(), mtime.timestamp()))
        return path

    def tick(self, now: dt.datetime = NOW) -> dg.SensorExecutionData:
        sensor = self.definitions.get_sensor_def(LANDING_SENSOR)
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            repository_def=self.definitions.get_repository_def(),
            resources={"landing": LandingDirectory(path=str(self.root))},
        )
        with dg.partition_loading_context(effective_dt=now):
            result = sensor.evaluate_tick(context)
        self.cursor = result.cursor
        return result

    def requested(self, now: dt.datetime = NOW) -> dict[str, str]:
        """Tick; the run keys requested, by partition."""
        result = self.tick(now)
        keys = {r.partition_key: r.run_key for r in result.run_requests}
        assert len(keys) == len(result.run_requests)
        return keys


@pytest.fixture
def landing(tmp_path, definitions) -> Landing:
    return Landing(tmp_path / "watched", definitions, dg.DagsterInstance.ephemeral())


def test_new_files_request_their_days_once_and_an_unchanged_tick_requests_nothing(landing):
    landing.write("sensor-a/cowrie.json.2026-11-19")
    landing.write("sensor-a/cowrie.json.2026-11-20")
    landing.write("sensor-b/cowrie.json.2026-11-20")

    first = landing.requested()
    second = landing.tick()

    assert sorted(first) == ["2026-11-19", "2026-11-20"]
    assert all(run_key.startswith(f"{day}:") for day, run_key in first.items())
    assert second.run_requests == []
    assert second.skip_message.startswith("No new or changed daily file")
    assert "3 files of 2 days" in second.skip_message


def test_a_changed_file_requests_its_day_again_under_a_new_run_key(landing):
    landing.write("sensor-a/cowrie.json.2026-11-19")
    path = landing.write("sensor-a/cowrie.json.2026-11-20")
    first = landing.requested()

    with path.open("ab") as handle:
        handle.write(event(session="s2") + b"\n")
    again = landing.requested()

    assert list(again) == ["2026-11-20"]
    assert again["2026-11-20"] != first["2026-11-20"]
    assert landing.requested() == {}


def test_a_second_sensors_late_file_with_an_old_mtime_reruns_the_day(landing):
    landing.write("sensor-a/cowrie.json.2026-11-20")
    first = landing.requested()

    # Copied late with `cp -p` / `rsync -a`: its mtime is older than anything seen so far.
    old = dt.datetime(2026, 11, 20, 23, 59, tzinfo=dt.UTC)
    landing.write("sensor-b/cowrie.json.2026-11-20", "s9", mtime=old)
    landing.write("sensor-a/cowrie.json.2026-11-18", mtime=old - dt.timedelta(days=2))
    late = landing.requested()

    assert sorted(late) == ["2026-11-18", "2026-11-20"]
    assert late["2026-11-20"] != first["2026-11-20"]
    assert landing.requested() == {}


def test_a_gzip_file_is_an_input_and_a_gzip_copy_of_a_plain_file_changes_nothing(landing):
    landing.write("sensor-a/cowrie.json.2026-11-18", gz=True)
    plain = landing.write("sensor-a/cowrie.json.2026-11-20")
    assert sorted(landing.requested()) == ["2026-11-18", "2026-11-20"]

    # `gzip -k`, then the plain file removed: the same lines, which the day has already read.
    copy = plain.with_name(plain.name + ".gz")
    copy.write_bytes(gzip.compress(plain.read_bytes()))
    assert landing.requested() == {}
    plain.unlink()
    assert landing.requested() == {}

    copy.write_bytes(gzip.compress(event(session="s2") + b"\n"))  # a new version of the day
    assert list(landing.requested()) == ["2026-11-20"]


def test_names_that_are_no_daily_file_are_named_once_and_never_requested(landing):
    landing.write("sensor-a/cowrie.json")  # the live log
    landing.write("sensor-a/cowrie.json.2026-13-45")
    landing.write("sensor-a/cowrie.json.20261120")
    landing.write("sensor-a/cowrie.json.2026-11-20.bak")
    landing.write("notes.txt")
    landing.write("sensor-a/archive/cowrie.json.2026-11-20")  # below a sensor folder
    landing.write("sensor-a/cowrie.json.2019-12-31")  # before the first partition
    landing.write("sensor-a/cowrie.json.2027-01-01")  # not a partition for a month yet
    landing.write("sensor-a/cowrie.json.9999-12-31")
    landing.write(".partial/cowrie.json.2026-11-20")  # hidden: not looked at
    with open(os.path.join(os.fsencode(landing.root / "sensor-a"), b"cowrie.json.\xff"), "wb"):
        pass  # a name that is not UTF-8

    first = landing.tick()
    second = landing.tick()

    assert first.run_requests == [] and second.run_requests == []
    for named in (
        "sensor-a/cowrie.json: Cowrie's live log",
        "sensor-a/cowrie.json.2026-13-45: not named",
        "sensor-a/cowrie.json.20261120: not named",
        "sensor-a/cowrie.json.2026-11-20.bak: not named",
        "notes.txt: not named",
        "sensor-a/archive: nothing below a sensor folder is read",
        "sensor-a/cowrie.json.2019-12-31: before the first partition 2020-01-01",
        "sensor-a/cowrie.json.2027-01-01: the day is in the future",
        "sensor-a/cowrie.json.9999-12-31: the day is in the future",
        "sensor-a/cowrie.json.\\xff: not named",
    ):
        assert named in first.skip_message
    assert ".partial" not in first.skip_message
    assert "Not requested" not in second.skip_message
    assert "3 files of 3 days" in second.skip_message  # 2019-12-31, 2027-01-01, 9999-12-31
    assert json.loads(landing.cursor)["waiting"] == []


def test_todays_file_waits_for_its_partition_and_is_requested_the_next_day(landing):
    landing.write("sensor-a/cowrie.json.2026-11-20")
    landing.write("sensor-a/cowrie.json.2026-11-21")  # today, UTC: no partition yet
    landing.write("sensor-b/cowrie.json.2026-11-22")  # a sensor ahead of UTC

    assert list(landing.requested()) == ["2026-11-20"]
    waiting = landing.tick()
    assert waiting.run_requests == []
    assert "Waiting for their partition: 2026-11-21, 2026-11-22" in waiting.skip_message

    next_day = dt.datetime(2026, 11, 22, 0, 5, tzinfo=dt.UTC)
    assert list(landing.requested(next_day)) == ["2026-11-21"]
    assert landing.requested(next_day) == {}
    assert list(landing.requested(next_day + dt.timedelta(days=1))) == ["2026-11-22"]
    assert json.loads(landing.cursor)["waiting"] == []


def test_a_restart_from_the_stored_cursor_requests_only_what_is_new(tmp_path, definitions):
    instance_dir = tmp_path / "dagster_home"
    instance_dir.mkdir()
    before = Landing(
        tmp_path / "watched", definitions, dg.DagsterInstance.local_temp(str(instance_dir))
    )
    before.write("sensor-a/cowrie.json.2026-11-19")
    before.write("sensor-a/cowrie.json.2026-11-20")
    first = before.requested()

    # A daemon restart: a new instance on the same storage, the cursor as the daemon stored it.
    after = Landing(before.root, definitions, dg.DagsterInstance.local_temp(str(instance_dir)))
    after.cursor = before.cursor
    assert after.requested() == {}
    after.write("sensor-b/cowrie.json.2026-11-20", "s5")
    assert list(after.requested()) == ["2026-11-20"]

    # A deleted cursor: every day again, each under the run key of its current files.
    after.cursor = None
    again = after.requested()
    assert again["2026-11-19"] == first["2026-11-19"]
    assert again["2026-11-20"] != first["2026-11-20"]


def test_five_years_of_files_are_requested_once_and_the_cursor_stays_small(landing):
    days = [dt.date(2021, 11, 21) + dt.timedelta(days=n) for n in range(5 * 365 + 1)]
    for sensor in ("sensor-a", "sensor-b"):
        folder = landing.root / sensor
        folder.mkdir()
        for day in days:
            (folder / f"cowrie.json.{day}").touch()

    first = landing.requested()
    second = landing.tick()

    assert len(first) == len(days) and days[-1].isoformat() == "2026-11-20"
    assert second.run_requests == []
    # The cursor: per folder, the highest ctime and a tag of each file that has exactly that
    # ctime (those written within the same tick of the file system's clock), no history.
    state = json.loads(landing.cursor)
    for sensor, (ctime_ns, tags) in state["folders"].items():
        ctimes = [path.stat().st_ctime_ns for path in (landing.root / sensor).iterdir()]
        assert ctime_ns == max(ctimes) and len(tags) == ctimes.count(ctime_ns)
    assert "cowrie.json" not in landing.cursor


def test_a_cursor_set_to_a_landing_time_skips_what_landed_before(landing):
    old = landing.write("sensor-a/cowrie.json.2026-11-19")
    landed = dt.datetime.fromtimestamp(old.stat().st_ctime_ns / 1e9 + 0.001, dt.UTC)
    landing.cursor = json.dumps({"landed_after": landed.isoformat()})

    assert landing.requested() == {}
    landing.write("sensor-a/cowrie.json.2026-11-20")
    landing.write("sensor-b/cowrie.json.2026-11-20")  # a folder the cursor has not seen yet
    assert list(landing.requested()) == ["2026-11-20"]


@pytest.mark.parametrize("cursor", ["not json", '{"version": 99}', '{"landed_after": "today"}'])
def test_a_cursor_the_sensor_cannot_read_is_an_error_that_says_how_to_reset_it(landing, cursor):
    landing.write("sensor-a/cowrie.json.2026-11-20")
    landing.cursor = cursor
    with pytest.raises(ValueError, match="cannot read its cursor.*--delete"):
        landing.tick()


def test_a_landing_directory_that_cannot_be_listed_is_a_sensor_error_naming_it(landing):
    landing.write("sensor-a/cowrie.json.2026-11-20")
    landing.requested()
    cursor = landing.cursor
    shutil.rmtree(landing.root)  # unmounted

    with pytest.raises(LandingDirectoryError) as raised:
        landing.tick()
    assert str(raised.value) == (
        f"ASN_PIPELINE_LANDING_DIR={str(landing.root)!r}: "
        f"landing directory {landing.root} does not exist"
    )
    assert landing.cursor == cursor

    landing.root.write_text("")
    with pytest.raises(LandingDirectoryError, match="ASN_PIPELINE_LANDING_DIR=.*not a directory"):
        landing.tick()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads whatever the permissions say")
def test_an_unreadable_sensor_folder_is_a_sensor_error(landing):
    landing.write("sensor-a/cowrie.json.2026-11-20")
    (landing.root / "sensor-a").chmod(0)
    try:
        with pytest.raises(LandingDirectoryError, match="ASN_PIPELINE_LANDING_DIR=.*sensor-a"):
            landing.tick()
    finally:
        (landing.root / "sensor-a").chmod(0o700)


def test_the_sensor_is_stopped_by_default_and_watches_for_the_daily_job(definitions):
    dg.Definitions.validate_loadable(definitions)
    sensor = definitions.get_sensor_def(LANDING_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.minimum_interval_seconds == 60
    assert sensor.job_name == DAILY_JOB
    assert "landing" in sensor.required_resource_keys


def test_landing_files_give_each_day_what_files_for_day_gives(tmp_path):
    landing, outside = tmp_path / "landing", tmp_path / "outside"
    for folder in ("sensor-a", "sensor-b", "archive/old", ".snapshot"):
        (landing / folder).mkdir(parents=True)
    (outside / "sensor-x").mkdir(parents=True)
    for day in ("2026-11-19", "2026-11-20"):
        (landing / "sensor-a" / f"cowrie.json.{day}").write_bytes(event() + b"\n")
        (outside / "sensor-x" / f"cowrie.json.{day}").write_bytes(event() + b"\n")
    name = "cowrie.json.2026-11-20"
    (landing / "sensor-a" / f"{name}.gz").write_bytes(b"partial")
    (landing / "sensor-b" / f"{name}.gz").write_bytes(gzip.compress(event() + b"\n"))
    (landing / "sensor-b" / "cowrie.json.2026-11-19").symlink_to("../archive/old")
    (landing / "archive" / "old" / "kept").write_bytes(event() + b"\n")
    (landing / "sensor-c").symlink_to("sensor-a")
    (landing / "sensor-x").symlink_to(outside / "sensor-x")
    (landing / ".snapshot" / name).write_bytes(event() + b"\n")
    os.mkfifo(landing / "cowrie.json.2026-11-18")
    (landing / "cowrie.json").write_bytes(b"")

    listing = landing_files(landing)

    assert sorted(listing.days) == [dt.date(2026, 11, d) for d in (18, 19, 20)]
    for day, found in listing.days.items():
        assert found == files_for_day(landing, day)
    assert sorted((e.name, e.reason) for e in listing.not_inputs) == [
        ("archive/old", "folder_in_sensor_folder"),
        ("cowrie.json", "live_log"),
        ("sensor-x", "symlink_outside_landing"),
    ]
