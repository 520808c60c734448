"""Configuration from the environment (DESIGN §2), validated before any data is touched."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import re
import sqlite3
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

PACKAGE_DIR = Path(__file__).resolve().parent


def _project_root() -> Path:
    """The source checkout this package runs from, or, installed as a wheel, the working
    directory: the embedded defaults (``data/``) live under it."""
    checkout = PACKAGE_DIR.parent
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()


PROJECT_ROOT = _project_root()
DEFAULT_DB_URL = f"sqlite:///{PROJECT_ROOT / 'data' / 'inventory.sqlite'}"
DEMO_DIR = PROJECT_ROOT / "data" / "demo"
DEFAULT_LANDING_DIR = DEMO_DIR / "landing"
DEFAULT_ASN_DB = DEMO_DIR / "demo-asn.mmdb"
DEFAULT_START_DATE = "2020-01-01"
SUPPORTED_DRIVERS = ("sqlite", "postgresql+psycopg2")
MIN_SQLITE = (3, 39, 0)
DEFAULT_MAX_LINE_BYTES = 1 << 20
DEFAULT_CYMRU_TTL_DAYS = 90
# Team Cymru publishes no rate for its DNS service and asks clients to cache and stay small: 10
# queries a second for all runs together (the README says what that means for a day).
DEFAULT_CYMRU_QPS = 10.0
MAX_CYMRU_QPS = 1000.0
# The daily schedule runs early in the UTC morning, once every sensor's file of the day before
# has had time to land.
DEFAULT_SCHEDULE_HOUR = 2
DEFAULT_SCHEDULE_MINUTE = 0
DEFAULT_SCHEDULE_TIMEZONE = "UTC"
# Where a run's steps execute: all in the run's process (the default), a process each, or on
# Celery workers that take them from a broker (docs/deployment.md, "Beyond one machine").
EXECUTORS = ("in_process", "multiprocess", "celery")
DEFAULT_EXECUTOR = "in_process"
DEFAULT_CELERY_BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
DEFAULT_CELERY_BACKEND = "rpc://"
DEFAULT_CELERY_QUEUE = "dagster"  # dagster-celery's own default


class ConfigurationError(ValueError):
    """A configuration variable has a value the pipeline cannot use."""

    def __init__(self, variable: str, value: str, problem: str):
        super().__init__(f"{variable}={value!r}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class Nameserver:
    host: str
    port: int = 53

    def __str__(self) -> str:
        """``host:port`` (``[host]:port`` for IPv6), as ``parse_nameservers`` reads it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ScheduleTime:
    """When the daily schedule ticks: ``hour:minute`` in the IANA time zone ``timezone``."""

    hour: int = DEFAULT_SCHEDULE_HOUR
    minute: int = DEFAULT_SCHEDULE_MINUTE
    timezone: str = DEFAULT_SCHEDULE_TIMEZONE

    @property
    def cron(self) -> str:
        return f"{self.minute} {self.hour} * * *"


@dataclass(frozen=True)
class ExecutorSettings:
    """``ASN_PIPELINE_EXECUTOR`` and, for Celery, the broker and result backend the run's
    process and every worker use."""

    kind: str = DEFAULT_EXECUTOR
    celery_broker: str = DEFAULT_CELERY_BROKER
    celery_backend: str = DEFAULT_CELERY_BACKEND
    celery_queue: str = DEFAULT_CELERY_QUEUE


@dataclass(frozen=True)
class Settings:
    db_url: str
    landing_dir: Path
    maxmind_asn_db: Path
    maxmind_city_db: Path | None
    cymru: str
    cymru_nameservers: tuple[Nameserver, ...]
    start_date: str
    parse_workers: int | None = None
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    cymru_ttl_days: int = DEFAULT_CYMRU_TTL_DAYS
    cymru_qps: float = DEFAULT_CYMRU_QPS
    schedule: ScheduleTime = field(default_factory=ScheduleTime)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every ``ASN_PIPELINE_*`` variable; raise ``ConfigurationError``.

        The data files and the landing directory are only named here: whether they exist and
        can be read is checked where they are used (``require_file``, ``require_directory``),
        so that the definitions load on a machine that has none of them yet.
        """
        env = os.environ if environ is None else environ
        get = partial(_setting, env)

        return cls(
            db_url=_db_url(get("ASN_PIPELINE_DB_URL")),
            landing_dir=_path(get("ASN_PIPELINE_LANDING_DIR")) or DEFAULT_LANDING_DIR,
            maxmind_asn_db=_path(get("ASN_PIPELINE_MAXMIND_ASN_DB")) or DEFAULT_ASN_DB,
            maxmind_city_db=_path(get("ASN_PIPELINE_MAXMIND_CITY_DB")),
            cymru=_cymru(get("ASN_PIPELINE_CYMRU")),
            cymru_nameservers=parse_nameservers(get("ASN_PIPELINE_CYMRU_NAMESERVERS")),
            cymru_ttl_days=_cymru_ttl_days(get("ASN_PIPELINE_CYMRU_TTL_DAYS")),
            cymru_qps=_cymru_qps(get("ASN_PIPELINE_CYMRU_QPS")),
            start_date=_date("ASN_PIPELINE_START_DATE", get("ASN_PIPELINE_START_DATE")),
            parse_workers=parse_workers(env),
            max_line_bytes=max_line_bytes(env),
            schedule=schedule_time(env),
            executor=executor_settings(env),
        )


def _setting(env: Mapping[str, str], name: str) -> str | None:
    """A variable's value without surrounding blanks; ``None`` when unset or empty."""
    return env.get(name, "").strip() or None


def _masked(value: str) -> str:
    """A URL-ish string with anything between ``user:`` and the last ``@`` masked (a password
    may hold an unescaped ``@``)."""
    return re.sub(r"(//[^:/@]*:).*@", r"\1***@", value)


def redact_url(url: str) -> str:
    """The URL with any password masked, for logs and metadata."""
    parsed = make_url(url)
    if parsed.host and "@" in parsed.host:  # the password's unescaped "@" ended it early
        return _masked(url)
    return parsed.render_as_string(hide_password=True)


def require_sqlite(version: tuple[int, ...] = sqlite3.sqlite_version_info) -> None:
    """Refuse a SQLite library older than the inventory's SQL needs (``IS DISTINCT FROM`` and
    ``FULL OUTER JOIN`` came in 3.39)."""
    if version < MIN_SQLITE:
        found, needed = ".".join(map(str, version)), ".".join(map(str, MIN_SQLITE))
        raise ConfigurationError(
            "ASN_PIPELINE_DB_URL",
            "sqlite:...",
            f"this Python's SQLite library is {found}; the inventory needs {needed} or later "
            "(use a Python built with a newer SQLite, or PostgreSQL)",
        )


def normalise_db_url(value: str) -> str:
    """A validated SQLAlchemy URL whose PostgreSQL scheme names the psycopg2 driver."""
    return _db_url(value)


def _db_url(value: str | None) -> str:
    if value is None:
        require_sqlite()
        return DEFAULT_DB_URL
    variable = "ASN_PIPELINE_DB_URL"
    try:
        url = make_url(value)
        url.port  # noqa: B018 - parsed lazily; a bad port raises here
    except (ArgumentError, ValueError):
        raise ConfigurationError(variable, _masked(value), "not a SQLAlchemy URL") from None
    shown = url.render_as_string(hide_password=True)
    if url.host and "@" in url.host:
        raise ConfigurationError(
            variable, _masked(value), "the password holds an unescaped '@'; write it as %40"
        )
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")
    if url.drivername not in SUPPORTED_DRIVERS:
        raise ConfigurationError(
            variable, shown, f"unsupported driver; use one of {', '.join(SUPPORTED_DRIVERS)}"
        )
    if url.drivername == "sqlite" and url.database in (None, "", ":memory:"):
        raise ConfigurationError(variable, shown, "a SQLite inventory needs a file path")
    if url.drivername == "sqlite":
        require_sqlite()
    return url.render_as_string(hide_password=False)


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value).expanduser()


def _missing(problem: str, path: Path, default: Path) -> str:
    return f"{problem}; run `make demo` or set the variable" if path == default else problem


def require_directory(variable: str, path: Path) -> Path:
    """``path`` if it is a directory that can be listed; otherwise ``ConfigurationError``."""
    if not path.is_dir():
        raise ConfigurationError(
            variable, str(path), _missing("no such directory", path, DEFAULT_LANDING_DIR)
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConfigurationError(variable, str(path), "directory is not readable")
    return path


def require_file(variable: str, path: Path) -> Path:
    """``path`` if it is a file that can be read; otherwise ``ConfigurationError``."""
    if not path.is_file():
        raise ConfigurationError(
            variable, str(path), _missing("no such file", path, DEFAULT_ASN_DB)
        )
    if not os.access(path, os.R_OK):
        raise ConfigurationError(variable, str(path), "file is not readable")
    return path


def _cymru(value: str | None) -> str:
    mode = (value or "off").lower()
    if mode not in ("off", "dns"):
        raise ConfigurationError("ASN_PIPELINE_CYMRU", value or "", "expected 'off' or 'dns'")
    return mode


def _cymru_ttl_days(value: str | None) -> int:
    if value is None:
        return DEFAULT_CYMRU_TTL_DAYS
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 3650:
        raise ConfigurationError(
            "ASN_PIPELINE_CYMRU_TTL_DAYS", value, "expected a whole number of days, 1 to 3650"
        )
    return int(value)


def _cymru_qps(value: str | None) -> float:
    if value is None:
        return DEFAULT_CYMRU_QPS
    try:
        qps = float(value) if value.isascii() else float("nan")
    except ValueError:
        qps = float("nan")
    if not 0 < qps <= MAX_CYMRU_QPS:  # also refuses nan and inf
        raise ConfigurationError(
            "ASN_PIPELINE_CYMRU_QPS",
            value,
            f"expected queries per second, a number above 0 and at most {MAX_CYMRU_QPS:g}",
        )
    return qps


def parse_nameservers(value: str | None) -> tuple[Nameserver, ...]:
    """``ASN_PIPELINE_CYMRU_NAMESERVERS``: comma-separated ``host``, ``host:port`` or
    ``[ipv6]:port``; ``()`` when unset (the system resolver)."""
    if value is None:
        return ()
    servers = []
    for item in (part.strip() for part in value.split(",")):
        if item.startswith("["):  # [v6]:port
            host, _, rest = item[1:].partition("]")
            has_port, port = rest.startswith(":"), rest[1:]
            well_formed = rest in ("",) or has_port
        elif item.count(":") == 1:  # v4-or-name:port
            host, _, port = item.partition(":")
            has_port, well_formed = True, True
        else:  # bare name, IPv4 or IPv6
            host, port, has_port, well_formed = item, "", False, True
        valid_port = not has_port or (port.isdigit() and 0 < int(port) < 65536)
        if not host or not well_formed or not valid_port:
            raise ConfigurationError(
                "ASN_PIPELINE_CYMRU_NAMESERVERS",
                value,
                f"bad entry {item!r}; use host or host:port",
            )
        servers.append(Nameserver(host, int(port) if has_port else 53))
    return tuple(servers)


def _date(variable: str, value: str | None) -> str:
    if value is None:
        return DEFAULT_START_DATE
    try:
        if len(value) != 10:
            raise ValueError(value)
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise ConfigurationError(variable, value, "expected a date as YYYY-MM-DD") from None


def parse_workers(environ: Mapping[str, str] | None = None) -> int | None:
    """``ASN_PIPELINE_PARSE_WORKERS``, validated; ``None`` when unset (one per CPU)."""
    variable = "ASN_PIPELINE_PARSE_WORKERS"
    value = _setting(os.environ if environ is None else environ, variable)
    if value is None:
        return None
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise ConfigurationError(variable, value, "expected a whole number of processes, 1 to 256")
    return int(value)


def max_line_bytes(environ: Mapping[str, str] | None = None) -> int:
    """``ASN_PIPELINE_MAX_LINE_BYTES``, validated: longer log lines are rejected, kept in part."""
    variable = "ASN_PIPELINE_MAX_LINE_BYTES"
    value = _setting(os.environ if environ is None else environ, variable)
    if value is None:
        return DEFAULT_MAX_LINE_BYTES
    if not (value.isascii() and value.isdigit()) or not 1024 <= int(value) <= 1 << 30:
        raise ConfigurationError(
            variable, value, "expected a whole number of bytes, 1024 to 1073741824"
        )
    return int(value)


def executor_settings(environ: Mapping[str, str] | None = None) -> ExecutorSettings:
    """``ASN_PIPELINE_EXECUTOR`` (one of ``EXECUTORS``), ``ASN_PIPELINE_CELERY_BROKER`` /
    ``ASN_PIPELINE_CELERY_BACKEND`` (Celery URLs) and ``ASN_PIPELINE_CELERY_QUEUE``, validated;
    defaults for those unset."""
    get = partial(_setting, os.environ if environ is None else environ)

    kind = get("ASN_PIPELINE_EXECUTOR") or DEFAULT_EXECUTOR
    if kind not in EXECUTORS:
        raise ConfigurationError(
            "ASN_PIPELINE_EXECUTOR", kind, f"expected one of {', '.join(EXECUTORS)}"
        )
    if kind == "celery" and importlib.util.find_spec("dagster_celery") is None:
        raise ConfigurationError(
            "ASN_PIPELINE_EXECUTOR",
            kind,
            "dagster-celery is not installed; install the package with its extra: "
            "pip install 'asn_pipeline[celery]'",
        )
    urls = {}
    for variable, default in (
        ("ASN_PIPELINE_CELERY_BROKER", DEFAULT_CELERY_BROKER),
        ("ASN_PIPELINE_CELERY_BACKEND", DEFAULT_CELERY_BACKEND),
    ):
        value = get(variable) or default
        if not re.fullmatch(r"[a-z][a-z0-9+.-]*://\S*", value):
            raise ConfigurationError(
                variable, _masked(value), "expected a Celery URL such as pyamqp://host:5672//"
            )
        urls[variable] = value
    queue = get("ASN_PIPELINE_CELERY_QUEUE") or DEFAULT_CELERY_QUEUE
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", queue):
        raise ConfigurationError(
            "ASN_PIPELINE_CELERY_QUEUE", queue, "expected a queue name: letters, digits, . _ -"
        )
    return ExecutorSettings(
        kind, urls["ASN_PIPELINE_CELERY_BROKER"], urls["ASN_PIPELINE_CELERY_BACKEND"], queue
    )


def schedule_time(environ: Mapping[str, str] | None = None) -> ScheduleTime:
    """``ASN_PIPELINE_SCHEDULE_HOUR`` (0-23), ``ASN_PIPELINE_SCHEDULE_MINUTE`` (0-59) and
    ``ASN_PIPELINE_SCHEDULE_TIMEZONE`` (an IANA name), validated; defaults for those unset."""
    get = partial(_setting, os.environ if environ is None else environ)

    def whole(variable: str, value: str | None, default: int, top: int, unit: str) -> int:
        if value is None:
            return default
        if not (value.isascii() and value.isdigit()) or not 0 <= int(value) <= top:
            raise ConfigurationError(variable, value, f"expected the {unit}, 0 to {top}")
        return int(value)

    hour = whole(
        "ASN_PIPELINE_SCHEDULE_HOUR",
        get("ASN_PIPELINE_SCHEDULE_HOUR"),
        DEFAULT_SCHEDULE_HOUR,
        23,
        "hour of the day",
    )
    minute = whole(
        "ASN_PIPELINE_SCHEDULE_MINUTE",
        get("ASN_PIPELINE_SCHEDULE_MINUTE"),
        DEFAULT_SCHEDULE_MINUTE,
        59,
        "minute of the hour",
    )
    timezone = get("ASN_PIPELINE_SCHEDULE_TIMEZONE") or DEFAULT_SCHEDULE_TIMEZONE
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            "ASN_PIPELINE_SCHEDULE_TIMEZONE",
            timezone,
            "unknown time zone; use an IANA name such as UTC or Europe/Amsterdam",
        ) from None
    return ScheduleTime(hour, minute, timezone)


# Where the asset checks of severity WARN warn (docs/checks.md). Cowrie writes whole lines, so
# more than one line in twenty rejected means damage or a changed format; GeoLite2-ASN covers
# nearly every routed address, so below 90% the database is a wrong or truncated one; it is
# rebuilt twice a week (DB-IP's Lite monthly), so a build 35 days old means updates stopped.
DEFAULT_CHECK_MAX_REJECTED_RATIO = 0.05
DEFAULT_CHECK_MIN_ASN_COVERAGE = 0.9
DEFAULT_CHECK_MAXMIND_MAX_AGE_DAYS = 35


@dataclass(frozen=True)
class CheckThresholds:
    max_rejected_ratio: float = DEFAULT_CHECK_MAX_REJECTED_RATIO
    min_asn_coverage: float = DEFAULT_CHECK_MIN_ASN_COVERAGE
    maxmind_max_age_days: int = DEFAULT_CHECK_MAXMIND_MAX_AGE_DAYS


def check_thresholds(environ: Mapping[str, str] | None = None) -> CheckThresholds:
    """``ASN_PIPELINE_CHECK_MAX_REJECTED_RATIO`` and ``ASN_PIPELINE_CHECK_MIN_ASN_COVERAGE``
    (shares, 0 to 1) and ``ASN_PIPELINE_CHECK_MAXMIND_MAX_AGE_DAYS`` (1 to 3650), validated;
    defaults for those unset."""
    env = os.environ if environ is None else environ

    def share(variable: str, default: float) -> float:
        value = env.get(variable, "").strip()
        if not value:
            return default
        try:
            number = float(value) if value.isascii() else float("nan")
        except ValueError:
            number = float("nan")
        if not 0 <= number <= 1:  # also refuses nan and inf
            raise ConfigurationError(variable, value, "expected a share from 0 to 1, such as 0.05")
        return number

    variable = "ASN_PIPELINE_CHECK_MAXMIND_MAX_AGE_DAYS"
    days = env.get(variable, "").strip()
    if days and (not (days.isascii() and days.isdigit()) or not 1 <= int(days) <= 3650):
        raise ConfigurationError(variable, days, "expected a whole number of days, 1 to 3650")
    return CheckThresholds(
        share("ASN_PIPELINE_CHECK_MAX_REJECTED_RATIO", DEFAULT_CHECK_MAX_REJECTED_RATIO),
        share("ASN_PIPELINE_CHECK_MIN_ASN_COVERAGE", DEFAULT_CHECK_MIN_ASN_COVERAGE),
        int(days) if days else DEFAULT_CHECK_MAXMIND_MAX_AGE_DAYS,
    )
