"""What the UI shows of the tables the assets write: their columns (``dagster/column_schema``)
and, where it is true, which upstream column each is made from (``dagster/column_lineage``).

The DDL in ``sql/`` is the schema; this is its description, and the tests compare the two column
by column on a freshly migrated inventory. Types are PostgreSQL's; SQLite keeps dates and times
as UTC text and ``jsonb`` as checked JSON text (docs/data-model.md).
"""

from __future__ import annotations

import dagster as dg

# Bump by hand when what an asset writes, or how, changes: Dagster then shows its partitions as
# materialised by older code.
CODE_VERSION = "2026-12-01"
OWNERS = ["team:honeypot-data"]

# name, type, nullable, description
Column = tuple[str, str, bool, str]

COLUMNS: dict[str, list[Column]] = {
    "sessions": [
        ("sensor", "text", False, "Cowrie's sensor field, or the sensor folder of the file"),
        ("session_id", "text", False, "Cowrie's session id"),
        ("src_ip", "text", False, "canonical source address of the session's first event"),
        ("ingest_date", "date", False, "the session's first day (the partition that owns it)"),
        ("first_event_at", "timestamptz", False, "earliest event time over the session's days"),
        ("last_event_at", "timestamptz", False, "latest event time over the session's days"),
        ("event_count", "integer", False, "events of the session, over all its days"),
        ("asn_number", "bigint", True, "snapshot of its address's current_asn (ip_inventory)"),
    ],
    "ip_inventory": [
        ("ip_address", "text", False, "canonical form; IPv4-mapped IPv6 unwrapped"),
        ("ip_version", "smallint", False, "4 or 6"),
        ("ip_class", "text", False, "global, or the special-purpose class of a bogon"),
        ("current_asn", "bigint", True, "MaxMind's ASN, else Team Cymru's; NULL without one"),
        ("asn_source", "text", False, "maxmind, cymru, none or bogon"),
        ("asn_network", "text", True, "network of the MaxMind answer or Cymru prefix"),
        ("country_code", "text", True, "ISO country from the City/Country database"),
        ("first_seen", "timestamptz", True, "min first_event_at of the address's sessions"),
        ("last_seen", "timestamptz", True, "max last_event_at of the address's sessions"),
        ("session_count", "bigint", False, "number of sessions of the address"),
        ("build_epoch", "bigint", True, "MaxMind build_epoch of the ASN database that answered"),
        ("enriched_at", "timestamptz", False, "time of the upsert"),
        ("enriched_by_run", "text", True, "Dagster run id of the upsert"),
        ("enrichment", "jsonb", False, "the raw answers: MaxMind, City, Cymru, bogon"),
        ("cymru_status", "text", True, "found, unrouted or pending; NULL: Cymru not asked"),
    ],
    "asn_inventory": [
        ("asn_number", "bigint", False, "the autonomous system number"),
        ("organization_name", "text", True, "MaxMind's AS organisation, else Cymru's AS name"),
        ("organization_country", "text", True, "most common country of its addresses"),
        ("rir_registry", "text", True, "registry of the Cymru AS-name record"),
        ("first_seen", "timestamptz", True, "min first_seen of its addresses"),
        ("last_seen", "timestamptz", True, "max last_seen of its addresses"),
        ("unique_ip_count", "bigint", False, "addresses whose current_asn is this ASN"),
        ("total_session_count", "bigint", False, "sum of their session_count"),
        ("name_source", "text", True, "maxmind or cymru: where the name came from"),
        ("updated_at", "timestamptz", True, "when the row was inserted or its name changed"),
        ("updated_by_run", "text", True, "the run that did it"),
    ],
    "asn_daily_stats": [
        ("stat_date", "date", False, "the day (sessions' ingest_date)"),
        ("asn_number", "bigint", False, "the ASN of the sessions' snapshot"),
        ("session_count", "bigint", False, "sessions of the day with this ASN"),
        ("unique_ip_count", "bigint", False, "distinct addresses of those sessions"),
        ("new_ip_count", "bigint", False, "of those, addresses whose first session day it is"),
    ],
}
PRIMARY_KEYS = {
    "sessions": ("sensor", "session_id", "ingest_date"),
    "ip_inventory": ("ip_address",),
    "asn_inventory": ("asn_number",),
    "asn_daily_stats": ("stat_date", "asn_number"),
}
# The fields of the inputs that columns come from, shown as the sources' column schemas.
SOURCE_COLUMNS: dict[str, list[Column]] = {
    "cowrie_landing": [
        ("eventid", "text", False, "Cowrie event type"),
        ("session", "text", False, "Cowrie session id"),
        ("sensor", "text", True, "honeypot name (else the sensor folder)"),
        ("src_ip", "text", False, "attacker address"),
        ("timestamp", "text", False, "ISO 8601 event time"),
    ],
    "maxmind_asn_db": [
        ("network", "text", False, "the record's network"),
        ("autonomous_system_number", "integer", False, "the network's ASN"),
        ("autonomous_system_organization", "text", True, "the ASN's organisation"),
    ],
    "maxmind_city_db": [
        ("network", "text", False, "the record's network"),
        ("country.iso_code", "text", True, "ISO country code"),
    ],
}


def column_schema(table: str) -> dg.TableSchema:
    """The columns of ``table`` (or of a source's fields) as Dagster shows them."""
    columns = COLUMNS.get(table) or SOURCE_COLUMNS[table]
    key = PRIMARY_KEYS.get(table)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name,
                kind,
                description=description,
                constraints=dg.TableColumnConstraints(nullable=nullable),
            )
            for name, kind, nullable, description in columns
        ],
        constraints=dg.TableConstraints(other=[f"primary key ({', '.join(key)})"]) if key else None,
    )


def _from(*deps: tuple[str, str]) -> list[dg.TableColumnDep]:
    return [dg.TableColumnDep(asset_key=dg.AssetKey(asset), column_name=c) for asset, c in deps]


LANDING, SESSIONS, IPS = "cowrie_landing", "cowrie_sessions", "ip_inventory"
ASN_DB, CITY_DB = "maxmind_asn_db", "maxmind_city_db"
# Team Cymru, the fallback of current_asn, asn_network and organization_name, is no asset: the
# lineage names the MaxMind field, and asn_source says which of the two answered.
LINEAGE: dict[str, dict[str, list[dg.TableColumnDep]]] = {
    "sessions": {
        "sensor": _from((LANDING, "sensor")),
        "session_id": _from((LANDING, "session")),
        "src_ip": _from((LANDING, "src_ip")),
        "ingest_date": _from((LANDING, "timestamp")),
        "first_event_at": _from((LANDING, "timestamp")),
        "last_event_at": _from((LANDING, "timestamp")),
        "event_count": _from((LANDING, "eventid")),
    },
    "ip_inventory": {
        "ip_address": _from((SESSIONS, "src_ip")),
        "current_asn": _from((ASN_DB, "autonomous_system_number")),
        "asn_network": _from((ASN_DB, "network")),
        "country_code": _from((CITY_DB, "country.iso_code")),
        "first_seen": _from((SESSIONS, "first_event_at")),
        "last_seen": _from((SESSIONS, "last_event_at")),
        "session_count": _from((SESSIONS, "session_id")),
    },
    "asn_inventory": {
        "asn_number": _from((IPS, "current_asn")),
        "organization_name": _from((ASN_DB, "autonomous_system_organization")),
        "organization_country": _from((IPS, "country_code")),
        "first_seen": _from((IPS, "first_seen")),
        "last_seen": _from((IPS, "last_seen")),
        "unique_ip_count": _from((IPS, "ip_address"), (IPS, "current_asn")),
        "total_session_count": _from((IPS, "session_count"), (IPS, "current_asn")),
    },
    "asn_daily_stats": {
        "stat_date": _from((SESSIONS, "ingest_date")),
        "asn_number": _from((SESSIONS, "asn_number")),
        "session_count": _from((SESSIONS, "session_id")),
        "unique_ip_count": _from((SESSIONS, "src_ip")),
        "new_ip_count": _from((SESSIONS, "src_ip"), (SESSIONS, "ingest_date")),
    },
}


def table_metadata(table: str) -> dict[str, object]:
    """The definition metadata of an asset that writes ``table``: its column schema."""
    return {"dagster/column_schema": column_schema(table)}


def column_lineage(table: str) -> dict[str, dg.TableColumnLineage]:
    """The materialisation metadata that says where ``table``'s columns come from."""
    return {"dagster/column_lineage": dg.TableColumnLineage(deps_by_column=LINEAGE[table])}
