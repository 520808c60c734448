"""Malformed configuration fails at start, in one line naming the variable and the value; a data
file or directory that is missing or unusable fails the first step of a run that needs it, with
the same line, and leaves nothing written."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from asn_pipeline.demo import write_city_mmdb
from asn_pipeline.resources import MaxMindDatabases
from asn_pipeline.settings import (
    ConfigurationError,
    Nameserver,
    Settings,
    redact_url,
    require_sqlite,
)
from asn_pipeline_tests.conftest import NETWORKS, ts

D = dt.date(2026, 11, 20)


def settings(**env: str) -> Settings:
    return Settings.from_environ(env)


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("ASN_PIPELINE_DB_URL", "not a url", "not a SQLAlchemy URL"),
        ("ASN_PIPELINE_DB_URL", "mysql://root@localhost/inventory", "unsupported driver"),
        ("ASN_PIPELINE_DB_URL", "sqlite://", "needs a file path"),
        ("ASN_PIPELINE_CYMRU", "sometimes", "expected 'off' or 'dns'"),
        ("ASN_PIPELINE_CYMRU_NAMESERVERS", "127.0.0.1:99999", "bad entry"),
        ("ASN_PIPELINE_CYMRU_NAMESERVERS", "127.0.0.1:,8.8.8.8", "bad entry"),
        ("ASN_PIPELINE_CYMRU_TTL_DAYS", "0", "whole number of days"),
        ("ASN_PIPELINE_CYMRU_TTL_DAYS", "ninety", "whole number of days"),
        ("ASN_PIPELINE_CYMRU_QPS", "0", "queries per second"),
        ("ASN_PIPELINE_CYMRU_QPS", "-5", "queries per second"),
        ("ASN_PIPELINE_CYMRU_QPS", "nan", "queries per second"),
        ("ASN_PIPELINE_CYMRU_QPS", "fast", "queries per second"),
        ("ASN_PIPELINE_CYMRU_QPS", "5000", "queries per second"),
        ("ASN_PIPELINE_START_DATE", "2020-13-01", "YYYY-MM-DD"),
        ("ASN_PIPELINE_START_DATE", "20200101", "YYYY-MM-DD"),
        ("ASN_PIPELINE_PARSE_WORKERS", "0", "whole number of processes"),
        ("ASN_PIPELINE_PARSE_WORKERS", "two", "whole number of processes"),
        ("ASN_PIPELINE_EXECUTOR", "kubernetes", "expected one of in_process, multiprocess, celery"),
        ("ASN_PIPELINE_CELERY_BROKER", "127.0.0.1:5672", "expected a Celery URL"),
        ("ASN_PIPELINE_CELERY_BACKEND", "rpc", "expected a Celery URL"),
        ("ASN_PIPELINE_CELERY_QUEUE", "steps of asn", "expected a queue name"),
    ],
)
def test_a_bad_value_names_its_variable_and_value(variable, value, problem):
    with pytest.raises(ConfigurationError) as raised:
        settings(**{variable: value})
    message = str(raised.value)
    assert message.startswith(f"{variable}={value!r}")
    assert problem in message
    assert "\n" not in message


def test_a_password_never_appears_in_an_error_or_a_display_url():
    with pytest.raises(ConfigurationError) as raised:
        settings(ASN_PIPELINE_DB_URL="mysql://admin:hunter2@db.example/inventory")
    assert "hunter2" not in str(raised.value)
    shown = redact_url("postgresql+psycopg2://admin:hunter2@db.example/inventory")
    assert "hunter2" not in shown and "admin" in shown


def test_a_password_with_an_unescaped_at_sign_is_masked_whole():
    url = "postgresql://writer:s3cr@t-p@ss@db.example:5432/inventory"
    with pytest.raises(ConfigurationError, match="unescaped '@'") as error:
        Settings.from_environ({"ASN_PIPELINE_DB_URL": url})
    for shown in (str(error.value), redact_url(url)):
        assert "s3cr" not in shown and "t-p" not in shown and "ss@" not in shown, shown
        assert "writer:***@db.example" in shown


def test_a_sqlite_library_older_than_3_39_is_refused_at_start():
    with pytest.raises(ConfigurationError, match="SQLite library is 3.38.5; .* 3.39.0 or later"):
        require_sqlite((3, 38, 5))
    require_sqlite((3, 39, 0))
    require_sqlite()  # this machine's


def test_defaults_and_good_values_are_accepted(tmp_path):
    assert settings().cymru == "off"
    assert settings().cymru_ttl_days == 90 and settings().cymru_qps == 10.0
    assert settings(ASN_PIPELINE_CYMRU_QPS="2.5", ASN_PIPELINE_CYMRU_TTL_DAYS="7").cymru_qps == 2.5
    assert settings(ASN_PIPELINE_CYMRU_TTL_DAYS="7").cymru_ttl_days == 7
    assert settings().start_date == "2020-01-01"
    assert settings().db_url.startswith("sqlite:///")
    parsed = settings(
        ASN_PIPELINE_DB_URL="postgresql://u:p@127.0.0.1/test",
        ASN_PIPELINE_LANDING_DIR=str(tmp_path),
        ASN_PIPELINE_CYMRU="DNS",
        ASN_PIPELINE_CYMRU_NAMESERVERS="127.0.0.1:5353, [::1]:53, ns.example",
        ASN_PIPELINE_START_DATE="2024-02-29",
    )
    assert parsed.db_url.startswith("postgresql+psycopg2://")
    assert parsed.landing_dir == tmp_path
    assert parsed.cymru == "dns"
    assert parsed.cymru_nameservers == (
        Nameserver("127.0.0.1", 5353),
        Nameserver("::1", 53),
        Nameserver("ns.example", 53),
    )
    shown = [str(server) for server in parsed.cymru_nameservers]
    assert shown == ["127.0.0.1:5353", "[::1]:53", "ns.example:53"]


def test_data_paths_are_read_not_checked_when_the_settings_load(tmp_path):
    parsed = settings(
        ASN_PIPELINE_LANDING_DIR=str(tmp_path / "not-mounted-yet"),
        ASN_PIPELINE_MAXMIND_ASN_DB=str(tmp_path / "GeoLite2-ASN.mmdb"),
        ASN_PIPELINE_MAXMIND_CITY_DB=str(tmp_path / "GeoLite2-City.mmdb"),
    )
    assert parsed.landing_dir == tmp_path / "not-mounted-yet"
    assert parsed.maxmind_asn_db == tmp_path / "GeoLite2-ASN.mmdb"
    assert parsed.maxmind_city_db == tmp_path / "GeoLite2-City.mmdb"


@pytest.fixture
def environment(pipeline, monkeypatch, logs):
    """A working environment (see conftest's ``pipeline``) with a day of logs, to break one
    variable of."""
    logs.session("sensor-a", "s1", "45.10.0.1", ts(D, 9))
    logs.write()
    return monkeypatch


def load_definitions():
    from asn_pipeline.definitions import defs

    return defs()


def assert_first_step_fails_and_nothing_is_written(
    pipeline, variable: str, value: str, problem: str
) -> None:
    """The definitions load; the daily run fails at its first step, once (no retry), with the
    one-line message; no row is written."""
    load_definitions()
    [result] = pipeline.run(D, raise_on_error=False)

    assert not result.success
    started = [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]
    assert started == ["cowrie_sessions"]
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.user_failure_data.description
    assert message == f"ConfigurationError: {variable}={value!r}: {problem}"
    assert all(not rows for rows in pipeline.snapshot().values())


def test_a_missing_landing_directory_fails_the_first_step(pipeline, environment, tmp_path):
    missing = str(tmp_path / "not-mounted")
    environment.setenv("ASN_PIPELINE_LANDING_DIR", missing)

    assert_first_step_fails_and_nothing_is_written(
        pipeline, "ASN_PIPELINE_LANDING_DIR", missing, "no such directory"
    )


def test_a_missing_asn_database_fails_the_first_step(pipeline, environment, tmp_path):
    missing = str(tmp_path / "gone.mmdb")
    environment.setenv("ASN_PIPELINE_MAXMIND_ASN_DB", missing)

    assert_first_step_fails_and_nothing_is_written(
        pipeline, "ASN_PIPELINE_MAXMIND_ASN_DB", missing, "no such file"
    )


def test_a_missing_city_database_fails_the_first_step(pipeline, environment, tmp_path):
    missing = str(tmp_path / "gone-city.mmdb")
    environment.setenv("ASN_PIPELINE_MAXMIND_CITY_DB", missing)

    assert_first_step_fails_and_nothing_is_written(
        pipeline, "ASN_PIPELINE_MAXMIND_CITY_DB", missing, "no such file"
    )


def test_a_corrupt_asn_database_fails_the_first_step(pipeline, environment, tmp_path):
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"\x00" * 64 + b"definitely not a MaxMind database" * 10)
    environment.setenv("ASN_PIPELINE_MAXMIND_ASN_DB", str(corrupt))

    with pytest.raises(ConfigurationError, match="not a MaxMind DB file") as raised:
        MaxMindDatabases(asn_db_path=str(corrupt)).check()
    problem = str(raised.value).split(": ", 1)[1]
    assert_first_step_fails_and_nothing_is_written(
        pipeline, "ASN_PIPELINE_MAXMIND_ASN_DB", str(corrupt), problem
    )


def test_a_city_database_in_the_asn_variable_is_refused(pipeline, environment, tmp_path):
    city = tmp_path / "city-as-asn.mmdb"
    write_city_mmdb(city, NETWORKS)
    environment.setenv("ASN_PIPELINE_MAXMIND_ASN_DB", str(city))

    assert_first_step_fails_and_nothing_is_written(
        pipeline,
        "ASN_PIPELINE_MAXMIND_ASN_DB",
        str(city),
        "database type 'GeoLite2-City' is not a ASN database",
    )


def test_an_asn_database_in_the_city_variable_is_refused(pipeline, environment, mmdb_files):
    environment.setenv("ASN_PIPELINE_MAXMIND_CITY_DB", str(mmdb_files["asn"]))

    assert_first_step_fails_and_nothing_is_written(
        pipeline,
        "ASN_PIPELINE_MAXMIND_CITY_DB",
        str(mmdb_files["asn"]),
        "database type 'GeoLite2-ASN' is not a City/Country database",
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads whatever the permissions say")
def test_an_unreadable_asn_database_fails_the_first_step(pipeline, environment, mmdb_files):
    mmdb_files["asn"].chmod(0)
    try:
        assert_first_step_fails_and_nothing_is_written(
            pipeline, "ASN_PIPELINE_MAXMIND_ASN_DB", str(mmdb_files["asn"]), "file is not readable"
        )
    finally:
        mmdb_files["asn"].chmod(0o600)


def test_a_run_without_the_lookups_does_not_need_the_databases(pipeline, environment, tmp_path):
    environment.setenv("ASN_PIPELINE_MAXMIND_ASN_DB", str(tmp_path / "gone.mmdb"))

    [result] = pipeline.run(D, assets=["cowrie_sessions"])

    assert result.success
    assert pipeline.table("sessions")["session_id"].tolist() == ["s1"]


def test_a_malformed_value_still_stops_the_code_location(pipeline, environment):
    environment.setenv("ASN_PIPELINE_CYMRU", "sometimes")

    with pytest.raises(ConfigurationError) as raised:
        load_definitions()
    assert str(raised.value) == "ASN_PIPELINE_CYMRU='sometimes': expected 'off' or 'dns'"
    assert not Path(pipeline.db_url.removeprefix("sqlite:///")).exists()


def test_the_ui_shows_the_database_variable_not_its_value(pipeline):
    definitions = load_definitions()
    resource = definitions.resources["inventory_db"]
    assert "ASN_PIPELINE_DB_URL" in repr(resource.url)
    assert pipeline.db_url not in repr(resource.url)


def test_the_executor_follows_asn_pipeline_executor(monkeypatch):
    from asn_pipeline.definitions import defs

    for kind, name in (
        ("in_process", "in_process"),
        ("multiprocess", "multiprocess"),
        ("celery", "celery"),
    ):
        monkeypatch.setenv("ASN_PIPELINE_EXECUTOR", kind)
        assert defs().resolve_job_def("daily_asn_inventory").executor_def.name == name


def test_a_celery_broker_password_stays_in_its_variable(monkeypatch):
    from asn_pipeline.execution import celery_config
    from asn_pipeline.settings import executor_settings

    monkeypatch.setenv("ASN_PIPELINE_CELERY_BROKER", "pyamqp://dagster:hunter2@mq.example:5672//")
    config = celery_config(executor_settings())
    assert config["broker"] == {"env": "ASN_PIPELINE_CELERY_BROKER"}
    assert "hunter2" not in repr(config)
    assert config["config_source"]["task_acks_late"] is True
