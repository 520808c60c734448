"""MaxMind DB lookups (GeoLite2-ASN or DB-IP ASN Lite, optionally GeoLite2-City/Country)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geoip2.database
import geoip2.errors
import maxminddb

from asn_pipeline.settings import DEFAULT_ASN_DB, ConfigurationError

ASN_DB_VARIABLE = "ASN_PIPELINE_MAXMIND_ASN_DB"
CITY_DB_VARIABLE = "ASN_PIPELINE_MAXMIND_CITY_DB"


@dataclass(frozen=True)
class DatabaseBuild:
    """Which database answered: its type and MaxMind ``build_epoch`` (provenance)."""

    path: str
    database_type: str
    build_epoch: int


@dataclass(frozen=True)
class AsnAnswer:
    asn_number: int
    organization_name: str | None
    network: str


def open_reader(path: Path, variable: str, kinds: tuple[str, ...]) -> geoip2.database.Reader:
    """Open a ``.mmdb`` and check its type; raise ``ConfigurationError`` naming the variable."""
    if not path.is_file():
        hint = "; run `make demo` or set the variable" if path == DEFAULT_ASN_DB else ""
        raise ConfigurationError(variable, str(path), f"no such file{hint}")
    try:
        reader = geoip2.database.Reader(str(path))
    except (maxminddb.InvalidDatabaseError, ValueError, OSError) as error:
        raise ConfigurationError(variable, str(path), f"not a MaxMind DB file ({error})") from None
    database_type = reader.metadata().database_type
    if not any(kind in database_type for kind in kinds):
        reader.close()
        raise ConfigurationError(
            variable,
            str(path),
            f"database type {database_type!r} is not a {'/'.join(kinds)} database",
        )
    return reader


class MaxMindLookup:
    """ASN (and optionally country) of global addresses from MaxMind DB files."""

    def __init__(self, asn_db: Path, city_db: Path | None = None):
        self._asn = open_reader(asn_db, ASN_DB_VARIABLE, ("ASN",))
        self._city = (
            open_reader(city_db, CITY_DB_VARIABLE, ("City", "Country")) if city_db else None
        )
        self._city_method = None
        if self._city is not None:
            is_city = "City" in self._city.metadata().database_type
            self._city_method = self._city.city if is_city else self._city.country
        self.asn_build = _build(asn_db, self._asn)
        self.city_build = _build(city_db, self._city) if city_db and self._city else None

    def asn(self, ip: str) -> AsnAnswer | None:
        """The ASN record covering ``ip``, or ``None`` when the database has none."""
        try:
            record = self._asn.asn(ip)
        except geoip2.errors.AddressNotFoundError:
            return None
        if record.autonomous_system_number is None:
            return None
        return AsnAnswer(
            record.autonomous_system_number,
            record.autonomous_system_organization,
            str(record.network),
        )

    def country(self, ip: str) -> str | None:
        """ISO country code of ``ip`` from the City/Country database, if one is configured."""
        if self._city_method is None:
            return None
        try:
            return self._city_method(ip).country.iso_code
        except geoip2.errors.AddressNotFoundError:
            return None

    def close(self) -> None:
        self._asn.close()
        if self._city is not None:
            self._city.close()


def _build(path: Path, reader: geoip2.database.Reader) -> DatabaseBuild:
    meta = reader.metadata()
    return DatabaseBuild(str(path), meta.database_type, int(meta.build_epoch))
