"""Bad configuration fails at start, in one line naming the variable and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from asn_pipeline.demo import write_city_mmdb
from asn_pipeline.settings import (
    ConfigurationError,
    Nameserver,
    Settings,
    redact_url,
    require_sqlite,
)
from asn_pipeline_tests.conftest import NETWORKS


def settings(**env: str) -> Settings:
    return Settings.from_environ(env)


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("ASN_PIPELINE_DB_URL", "not a url", "not a SQLAlchemy URL"),
        ("ASN_PIPELINE_DB_URL", "mysql://root@localhost/inventory", "unsupported driver"),
        ("ASN_PIPELINE_DB_URL", "sqlite://", "needs a file path"),
        ("ASN_PIPELINE_LANDING_DIR", "/no/such/landing", "no such directory"),
        ("ASN_PIPELINE_MAXMIND_ASN_DB", "/no/such/asn.mmdb", "no such file"),
        ("ASN_PIPELINE_MAXMIND_CITY_DB", "/no/such/city.mmdb", "no such file"),
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


@pytest.fixture
def environment(pipeline, monkeypatch):
    """A working environment (see conftest's ``pipeline``) to break one variable of."""
    return monkeypatch


def load_definitions():
    from asn_pipeline.definitions import defs

    return defs()


def assert_fails_before_writing(pipeline, variable: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_definitions()
    message = str(raised.value)
    assert message.startswith(f"{variable}={value!r}") and problem in message
    assert "\n" not in message
    assert not Path(pipeline.db_url.removeprefix("sqlite:///")).exists()


def test_a_corrupt_asn_database_stops_the_code_location(pipeline, environment, tmp_path):
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"\x00" * 64 + b"definitely not a MaxMind database" * 10)
    environment.setenv("ASN_PIPELINE_MAXMIND_ASN_DB", str(corrupt))

    assert_fails_before_writing(
        pipeline, "ASN_PIPELINE_MAXMIND_ASN_DB", str(corrupt), "not a MaxMind DB file"
    )


def test_a_city_database_in_the_asn_variable_is_refused(pipeline, environment, tmp_path):
    city = tmp_path / "city-as-asn.mmdb"
    write_city_mmdb(city, NETWORKS)
    environment.setenv("ASN_PIPELINE_MAXMIND_ASN_DB", str(city))

    assert_fails_before_writing(
        pipeline, "ASN_PIPELINE_MAXMIND_ASN_DB", str(city), "'GeoLite2-City' is not a ASN"
    )


def test_an_asn_database_in_the_city_variable_is_refused(pipeline, environment, mmdb_files):
    environment.setenv("ASN_PIPELINE_MAXMIND_CITY_DB", str(mmdb_files["asn"]))

    assert_fails_before_writing(
        pipeline, "ASN_PIPELINE_MAXMIND_CITY_DB", str(mmdb_files["asn"]), "GeoLite2-ASN"
    )


def test_a_missing_database_path_stops_the_code_location(pipeline, environment, tmp_path):
    missing = str(tmp_path / "gone.mmdb")
    environment.setenv("ASN_PIPELINE_MAXMIND_ASN_DB", missing)

    assert_fails_before_writing(pipeline, "ASN_PIPELINE_MAXMIND_ASN_DB", missing, "no such file")


def test_the_ui_shows_the_database_variable_not_its_value(pipeline):
    definitions = load_definitions()
    resource = definitions.resources["inventory_db"]
    assert "ASN_PIPELINE_DB_URL" in repr(resource.url)
    assert pipeline.db_url not in repr(resource.url)
