-- asn_pipeline inventory schema for SQLite. Applied idempotently at start; times are UTC ISO-8601
-- text ('YYYY-MM-DDTHH:MM:SS.ffffffZ', sorts as time), dates are 'YYYY-MM-DD'. Tables read and
-- updated by their key are WITHOUT ROWID: one b-tree instead of a table and a key index. Tables
-- that mostly grow (sessions, fragments) keep a rowid: new rows append, only the index is random.

CREATE TABLE IF NOT EXISTS asn_inventory (
    asn_number           INTEGER PRIMARY KEY,
    organization_name    TEXT,
    organization_country TEXT,
    rir_registry         TEXT,
    first_seen           TEXT,
    last_seen            TEXT,
    unique_ip_count      INTEGER NOT NULL DEFAULT 0,
    total_session_count  INTEGER NOT NULL DEFAULT 0,
    name_source          TEXT,
    updated_at           TEXT,
    updated_by_run       TEXT
);

CREATE TABLE IF NOT EXISTS ip_inventory (
    ip_address      TEXT PRIMARY KEY,
    ip_version      INTEGER NOT NULL CHECK (ip_version IN (4, 6)),
    ip_class        TEXT NOT NULL,
    current_asn     INTEGER REFERENCES asn_inventory (asn_number),
    asn_source      TEXT NOT NULL CHECK (asn_source IN ('maxmind', 'cymru', 'none', 'bogon')),
    asn_network     TEXT,
    country_code    TEXT,
    first_seen      TEXT,
    last_seen       TEXT,
    session_count   INTEGER NOT NULL DEFAULT 0,
    build_epoch     INTEGER,
    enriched_at     TEXT NOT NULL,
    enriched_by_run TEXT,
    enrichment      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(enrichment)),
    CHECK (asn_source <> 'bogon' OR (ip_class <> 'global' AND current_asn IS NULL))
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ip_inventory_current_asn ON ip_inventory (current_asn);

CREATE TABLE IF NOT EXISTS session_fragments (
    sensor         TEXT NOT NULL,
    session_id     TEXT NOT NULL,
    fragment_date  TEXT NOT NULL,
    src_ip         TEXT NOT NULL,
    first_event_at TEXT NOT NULL,
    last_event_at  TEXT NOT NULL,
    event_count    INTEGER NOT NULL CHECK (event_count > 0),
    ingested_by_run TEXT,
    PRIMARY KEY (sensor, session_id, fragment_date)
);
CREATE INDEX IF NOT EXISTS session_fragments_date ON session_fragments (fragment_date);

CREATE TABLE IF NOT EXISTS sessions (
    sensor         TEXT NOT NULL,
    session_id     TEXT NOT NULL,
    src_ip         TEXT NOT NULL,
    ingest_date    TEXT NOT NULL,
    first_event_at TEXT NOT NULL,
    last_event_at  TEXT NOT NULL,
    event_count    INTEGER NOT NULL CHECK (event_count > 0),
    asn_number     INTEGER REFERENCES asn_inventory (asn_number),
    PRIMARY KEY (sensor, session_id)
);
CREATE INDEX IF NOT EXISTS sessions_src_ip ON sessions (src_ip, ingest_date);
-- A day's sessions are found by date; asn_number stays out of the indexes so the ASN snapshot
-- rewrites no index entry.
CREATE INDEX IF NOT EXISTS sessions_day_ip ON sessions (ingest_date, src_ip);

CREATE TABLE IF NOT EXISTS asn_daily_stats (
    stat_date       TEXT NOT NULL,
    asn_number      INTEGER NOT NULL REFERENCES asn_inventory (asn_number),
    session_count   INTEGER NOT NULL,
    unique_ip_count INTEGER NOT NULL,
    new_ip_count    INTEGER NOT NULL,
    PRIMARY KEY (stat_date, asn_number)
);

CREATE TABLE IF NOT EXISTS ip_asn_history (
    ip_address     TEXT NOT NULL,
    asn_number     INTEGER NOT NULL REFERENCES asn_inventory (asn_number),
    source         TEXT NOT NULL,
    first_observed TEXT NOT NULL,
    last_observed  TEXT NOT NULL,
    build_epoch    INTEGER,
    PRIMARY KEY (ip_address, asn_number, source)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS rejected_events (
    ingest_date     TEXT NOT NULL,
    source_file     TEXT NOT NULL,
    line_number     INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    raw_line        TEXT NOT NULL,
    ingested_by_run TEXT,
    PRIMARY KEY (ingest_date, source_file, line_number)
);

-- Keys whose derived values (counters, daily statistics) a committed write made stale. Writers add
-- them in the same transaction as the facts they change; asn_statistics recomputes and removes them.
CREATE TABLE IF NOT EXISTS stale_ips (ip_address TEXT PRIMARY KEY);
-- ASNs whose counters changed, with the exact change: the sum of the touched addresses' rows
-- after a write minus before it, and the earliest/latest times they brought. recompute = 1 when a
-- removed row may have held the ASN's first_seen/last_seen, which a difference cannot restore.
CREATE TABLE IF NOT EXISTS stale_asn_deltas (
    asn_number    INTEGER PRIMARY KEY,
    ip_delta      INTEGER NOT NULL,
    session_delta INTEGER NOT NULL,
    first_seen    TEXT,
    last_seen     TEXT,
    recompute     INTEGER NOT NULL
);
-- Addresses per (ASN, country): organization_country is the most common one, found without
-- reading every address of the ASN.
CREATE TABLE IF NOT EXISTS asn_country_counts (
    asn_number   INTEGER NOT NULL,
    country_code TEXT NOT NULL,
    ip_count     INTEGER NOT NULL,
    PRIMARY KEY (asn_number, country_code)
);
CREATE TABLE IF NOT EXISTS stale_days (
    stat_date  TEXT NOT NULL,
    asn_number INTEGER NOT NULL,
    PRIMARY KEY (stat_date, asn_number)
);
