-- Per-connection scratch tables for one transaction's work sets; emptied at the start of each write.
-- The day-sized ones that are only scanned (w_fragments, w_early, w_sessions, w_merged,
-- w_snapshot) have no key: keeping one costs about a second per 400,000 rows, and their rows are
-- unique by construction (a duplicate would still fail on the key of the table they are written
-- to).

CREATE TEMP TABLE IF NOT EXISTS w_fragments (
    sensor         TEXT NOT NULL,
    session_id     TEXT NOT NULL,
    src_ip         TEXT NOT NULL,
    first_event_at TEXT NOT NULL,
    last_event_at  TEXT NOT NULL,
    event_count    INTEGER NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS w_sessions (
    sensor     TEXT NOT NULL,
    session_id TEXT NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS w_ips (ip_address TEXT PRIMARY KEY);
CREATE TEMP TABLE IF NOT EXISTS w_first_dates (ip_address TEXT PRIMARY KEY, first_date TEXT NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS w_asn_deltas (
    asn_number    INTEGER PRIMARY KEY,
    ip_delta      INTEGER NOT NULL,
    session_delta INTEGER NOT NULL,
    first_seen    TEXT,
    last_seen     TEXT,
    recompute     INTEGER NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS w_ip_before (
    ip_address    TEXT PRIMARY KEY,
    current_asn   INTEGER,
    session_count INTEGER NOT NULL,
    first_seen    TEXT,
    last_seen     TEXT,
    country_code  TEXT
);
CREATE TEMP TABLE IF NOT EXISTS w_ip_counters (
    ip_address    TEXT PRIMARY KEY,
    session_count INTEGER NOT NULL,
    first_seen    TEXT,
    last_seen     TEXT
);
CREATE TEMP TABLE IF NOT EXISTS w_old_sessions (
    sensor      TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    src_ip      TEXT NOT NULL,
    ingest_date TEXT NOT NULL,
    asn_number  INTEGER,
    PRIMARY KEY (sensor, session_id, ingest_date)
);
CREATE TEMP TABLE IF NOT EXISTS w_id_sessions (
    sensor         TEXT NOT NULL,
    session_id     TEXT NOT NULL,
    ingest_date    TEXT NOT NULL,
    src_ip         TEXT NOT NULL,
    first_event_at TEXT NOT NULL,
    last_event_at  TEXT NOT NULL,
    event_count    INTEGER NOT NULL,
    asn_number     INTEGER,
    PRIMARY KEY (sensor, session_id, ingest_date)
);
-- from_session: the part is a sessions row without a fragment (a session of that day alone).
CREATE TEMP TABLE IF NOT EXISTS w_other_parts (
    sensor         TEXT NOT NULL,
    session_id     TEXT NOT NULL,
    fragment_date  TEXT NOT NULL,
    src_ip         TEXT NOT NULL,
    first_event_at TEXT NOT NULL,
    last_event_at  TEXT NOT NULL,
    event_count    INTEGER NOT NULL,
    from_session   INTEGER NOT NULL,
    PRIMARY KEY (sensor, session_id, fragment_date)
);
CREATE TEMP TABLE IF NOT EXISTS w_merged (
    sensor         TEXT NOT NULL,
    session_id     TEXT NOT NULL,
    src_ip         TEXT NOT NULL,
    ingest_date    TEXT NOT NULL,
    first_event_at TEXT NOT NULL,
    last_event_at  TEXT NOT NULL,
    event_count    INTEGER NOT NULL,
    asn_number     INTEGER
);
-- The day's sessions written before the write lock (PostgreSQL; store.sessions.write_day_rows),
-- and those of them whose id another write gave a session meanwhile (w_late).
CREATE TEMP TABLE IF NOT EXISTS w_early (
    sensor         TEXT NOT NULL,
    session_id     TEXT NOT NULL,
    src_ip         TEXT NOT NULL,
    first_event_at TEXT NOT NULL,
    last_event_at  TEXT NOT NULL,
    event_count    INTEGER NOT NULL,
    asn_number     INTEGER
);
CREATE TEMP TABLE IF NOT EXISTS w_late (
    sensor     TEXT NOT NULL,
    session_id TEXT NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS w_snapshot (
    sensor      TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    ingest_date TEXT NOT NULL,
    src_ip      TEXT NOT NULL,
    old_asn    INTEGER,
    new_asn    INTEGER
);
CREATE TEMP TABLE IF NOT EXISTS w_days (
    stat_date  TEXT NOT NULL,
    asn_number INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    computed   INTEGER NOT NULL,
    PRIMARY KEY (stat_date, asn_number)
);
CREATE TEMP TABLE IF NOT EXISTS w_day_stats (
    stat_date       TEXT NOT NULL,
    asn_number      INTEGER NOT NULL,
    session_count   INTEGER NOT NULL,
    unique_ip_count INTEGER NOT NULL,
    new_ip_count    INTEGER NOT NULL,
    PRIMARY KEY (stat_date, asn_number)
);
CREATE TEMP TABLE IF NOT EXISTS w_lookups (
    ip_address        TEXT PRIMARY KEY,
    ip_version        INTEGER NOT NULL,
    ip_class          TEXT NOT NULL,
    asn_number        INTEGER,
    organization_name TEXT,
    asn_network       TEXT,
    country_code      TEXT,
    asn_source        TEXT NOT NULL,
    build_epoch       INTEGER,
    enrichment        TEXT NOT NULL,
    cymru_status      TEXT
);
-- The parts of the touched sessions that have parts on other days, each with the first
-- day of its run of consecutive days: one session per run (DESIGN §1).
CREATE TEMP TABLE IF NOT EXISTS w_islands (
    sensor         TEXT NOT NULL,
    session_id     TEXT NOT NULL,
    fragment_date  TEXT NOT NULL,
    src_ip         TEXT NOT NULL,
    first_event_at TEXT NOT NULL,
    last_event_at  TEXT NOT NULL,
    event_count    INTEGER NOT NULL,
    island_start   TEXT NOT NULL,
    from_session   INTEGER NOT NULL,
    island_days    INTEGER NOT NULL,
    PRIMARY KEY (sensor, session_id, fragment_date)
);
-- The files a day's write read (asn_pipeline.cowrie.FileReport).
CREATE TEMP TABLE IF NOT EXISTS w_source_files (
    logical_name   TEXT PRIMARY KEY,
    source_file    TEXT NOT NULL,
    size_bytes     INTEGER NOT NULL,
    lines_read     INTEGER NOT NULL,
    events_read    INTEGER NOT NULL,
    rejected_lines INTEGER NOT NULL,
    status         TEXT NOT NULL
);
-- Team Cymru answers a day's lookup fetched, written to the cache with the addresses
-- (asn_pipeline.lookup.cascade.CymruWrites).
CREATE TEMP TABLE IF NOT EXISTS w_cymru_prefixes (
    prefix       TEXT PRIMARY KEY,
    ip_version   INTEGER NOT NULL,
    asn_number   INTEGER,
    asns         TEXT,
    country_code TEXT,
    rir_registry TEXT,
    allocated    TEXT,
    query_name   TEXT NOT NULL,
    raw_answer   TEXT NOT NULL,
    fetched_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS w_cymru_unrouted (
    ip_address TEXT PRIMARY KEY,
    query_name TEXT NOT NULL,
    fetched_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS w_cymru_names (
    asn_number           INTEGER PRIMARY KEY,
    outcome              TEXT NOT NULL,
    organization_name    TEXT,
    organization_country TEXT,
    rir_registry         TEXT,
    allocated            TEXT,
    query_name           TEXT NOT NULL,
    raw_answer           TEXT,
    fetched_at           TEXT NOT NULL,
    expires_at           TEXT NOT NULL
);
-- The legacy import (asn_pipeline.store.legacy): each (address, ASN) a cowrieprocessor inventory
-- maps, with its earliest and latest time, and what it knows of each ASN and from where.
CREATE TEMP TABLE IF NOT EXISTS w_legacy_mappings (
    ip_address     TEXT NOT NULL,
    asn_number     INTEGER NOT NULL,
    first_observed TEXT NOT NULL,
    last_observed  TEXT NOT NULL,
    PRIMARY KEY (ip_address, asn_number)
);
CREATE TEMP TABLE IF NOT EXISTS w_legacy_asns (
    asn_number           INTEGER PRIMARY KEY,
    organization_name    TEXT,
    name_from            TEXT,
    organization_country TEXT,
    country_from         TEXT,
    rir_registry         TEXT,
    registry_from        TEXT
);
-- The derived values before the repair recomputes them, to report what it corrected.
CREATE TEMP TABLE IF NOT EXISTS w_repair_ips (
    ip_address    TEXT PRIMARY KEY,
    session_count INTEGER NOT NULL,
    first_seen    TEXT,
    last_seen     TEXT
);
CREATE TEMP TABLE IF NOT EXISTS w_repair_asns (
    asn_number           INTEGER PRIMARY KEY,
    unique_ip_count      INTEGER NOT NULL,
    total_session_count  INTEGER NOT NULL,
    first_seen           TEXT,
    last_seen            TEXT,
    organization_country TEXT
);
CREATE TEMP TABLE IF NOT EXISTS w_repair_day_stats (
    stat_date       TEXT NOT NULL,
    asn_number      INTEGER NOT NULL,
    session_count   INTEGER NOT NULL,
    unique_ip_count INTEGER NOT NULL,
    new_ip_count    INTEGER NOT NULL,
    PRIMARY KEY (stat_date, asn_number)
);
