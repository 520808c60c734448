-- Per-connection scratch tables for one transaction's work sets; emptied at the start of each write.
-- The day-sized ones (w_fragments, w_early, w_sessions, w_merged, w_snapshot) have no key:
-- keeping one costs about a second per 400,000 rows, PostgreSQL scans them or joins them by hash,
-- and their rows are unique by construction (a duplicate fragment or session would still fail on
-- the key of the table it is written to).

CREATE TEMP TABLE IF NOT EXISTS w_fragments (
    sensor         text NOT NULL,
    session_id     text NOT NULL,
    src_ip         text NOT NULL,
    first_event_at timestamptz NOT NULL,
    last_event_at  timestamptz NOT NULL,
    event_count    integer NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS w_sessions (
    sensor     text NOT NULL,
    session_id text NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS w_ips (ip_address text PRIMARY KEY);
CREATE TEMP TABLE IF NOT EXISTS w_first_dates (ip_address text PRIMARY KEY, first_date date NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS w_asn_deltas (
    asn_number    bigint PRIMARY KEY,
    ip_delta      bigint NOT NULL,
    session_delta bigint NOT NULL,
    first_seen    timestamptz,
    last_seen     timestamptz,
    recompute     bigint NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS w_ip_before (
    ip_address    text PRIMARY KEY,
    current_asn   bigint,
    session_count bigint NOT NULL,
    first_seen    timestamptz,
    last_seen     timestamptz,
    country_code  text
);
CREATE TEMP TABLE IF NOT EXISTS w_ip_counters (
    ip_address    text PRIMARY KEY,
    session_count bigint NOT NULL,
    first_seen    timestamptz,
    last_seen     timestamptz
);
CREATE TEMP TABLE IF NOT EXISTS w_old_sessions (
    sensor      text NOT NULL,
    session_id  text NOT NULL,
    src_ip      text NOT NULL,
    ingest_date date NOT NULL,
    asn_number  bigint,
    PRIMARY KEY (sensor, session_id, ingest_date)
);
CREATE TEMP TABLE IF NOT EXISTS w_id_sessions (
    sensor         text NOT NULL,
    session_id     text NOT NULL,
    ingest_date    date NOT NULL,
    src_ip         text NOT NULL,
    first_event_at timestamptz NOT NULL,
    last_event_at  timestamptz NOT NULL,
    event_count    bigint NOT NULL,
    asn_number     bigint,
    PRIMARY KEY (sensor, session_id, ingest_date)
);
-- from_session: the part is a sessions row without a fragment (a session of that day alone).
CREATE TEMP TABLE IF NOT EXISTS w_other_parts (
    sensor         text NOT NULL,
    session_id     text NOT NULL,
    fragment_date  date NOT NULL,
    src_ip         text NOT NULL,
    first_event_at timestamptz NOT NULL,
    last_event_at  timestamptz NOT NULL,
    event_count    bigint NOT NULL,
    from_session   bigint NOT NULL,
    PRIMARY KEY (sensor, session_id, fragment_date)
);
CREATE TEMP TABLE IF NOT EXISTS w_merged (
    sensor         text NOT NULL,
    session_id     text NOT NULL,
    src_ip         text NOT NULL,
    ingest_date    date NOT NULL,
    first_event_at timestamptz NOT NULL,
    last_event_at  timestamptz NOT NULL,
    event_count    bigint NOT NULL,
    asn_number     bigint
);
-- The day's sessions written before the write lock (PostgreSQL; store.sessions.write_day_rows),
-- and those of them whose id another write gave a session meanwhile (w_late).
CREATE TEMP TABLE IF NOT EXISTS w_early (
    sensor         text NOT NULL,
    session_id     text NOT NULL,
    src_ip         text NOT NULL,
    first_event_at timestamptz NOT NULL,
    last_event_at  timestamptz NOT NULL,
    event_count    bigint NOT NULL,
    asn_number     bigint
);
CREATE TEMP TABLE IF NOT EXISTS w_late (
    sensor     text NOT NULL,
    session_id text NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS w_snapshot (
    sensor      text NOT NULL,
    session_id  text NOT NULL,
    ingest_date date NOT NULL,
    src_ip      text NOT NULL,
    old_asn    bigint,
    new_asn    bigint
);
CREATE TEMP TABLE IF NOT EXISTS w_days (
    stat_date  date NOT NULL,
    asn_number bigint NOT NULL,
    generation bigint NOT NULL,
    computed   integer NOT NULL,
    PRIMARY KEY (stat_date, asn_number)
);
CREATE TEMP TABLE IF NOT EXISTS w_day_stats (
    stat_date       date NOT NULL,
    asn_number      bigint NOT NULL,
    session_count   bigint NOT NULL,
    unique_ip_count bigint NOT NULL,
    new_ip_count    bigint NOT NULL,
    PRIMARY KEY (stat_date, asn_number)
);
CREATE TEMP TABLE IF NOT EXISTS w_lookups (
    ip_address        text PRIMARY KEY,
    ip_version        smallint NOT NULL,
    ip_class          text NOT NULL,
    asn_number        bigint,
    organization_name text,
    asn_network       text,
    country_code      text,
    asn_source        text NOT NULL,
    build_epoch       bigint,
    enrichment        jsonb NOT NULL,
    cymru_status      text
);
-- The parts of the touched sessions that have parts on other days, each with the first
-- day of its run of consecutive days: one session per run (DESIGN §1).
CREATE TEMP TABLE IF NOT EXISTS w_islands (
    sensor         text NOT NULL,
    session_id     text NOT NULL,
    fragment_date  date NOT NULL,
    src_ip         text NOT NULL,
    first_event_at timestamptz NOT NULL,
    last_event_at  timestamptz NOT NULL,
    event_count    bigint NOT NULL,
    island_start   date NOT NULL,
    from_session   bigint NOT NULL,
    island_days    bigint NOT NULL,
    PRIMARY KEY (sensor, session_id, fragment_date)
);
-- The files a day's write read (asn_pipeline.cowrie.FileReport).
CREATE TEMP TABLE IF NOT EXISTS w_source_files (
    logical_name   text PRIMARY KEY,
    source_file    text NOT NULL,
    size_bytes     bigint NOT NULL,
    lines_read     bigint NOT NULL,
    events_read    bigint NOT NULL,
    rejected_lines bigint NOT NULL,
    status         text NOT NULL
);
-- Team Cymru answers a day's lookup fetched, written to the cache with the addresses
-- (asn_pipeline.lookup.cascade.CymruWrites).
CREATE TEMP TABLE IF NOT EXISTS w_cymru_prefixes (
    prefix       text PRIMARY KEY,
    ip_version   smallint NOT NULL,
    asn_number   bigint,
    asns         text,
    country_code text,
    rir_registry text,
    allocated    text,
    query_name   text NOT NULL,
    raw_answer   jsonb NOT NULL,
    fetched_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS w_cymru_unrouted (
    ip_address text PRIMARY KEY,
    query_name text NOT NULL,
    fetched_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS w_cymru_names (
    asn_number           bigint PRIMARY KEY,
    outcome              text NOT NULL,
    organization_name    text,
    organization_country text,
    rir_registry         text,
    allocated            text,
    query_name           text NOT NULL,
    raw_answer           jsonb,
    fetched_at           timestamptz NOT NULL,
    expires_at           timestamptz NOT NULL
);
-- The legacy import (asn_pipeline.store.legacy): each (address, ASN) a cowrieprocessor inventory
-- maps, with its earliest and latest time, and what it knows of each ASN and from where.
CREATE TEMP TABLE IF NOT EXISTS w_legacy_mappings (
    ip_address     text NOT NULL,
    asn_number     bigint NOT NULL,
    first_observed timestamptz NOT NULL,
    last_observed  timestamptz NOT NULL,
    PRIMARY KEY (ip_address, asn_number)
);
CREATE TEMP TABLE IF NOT EXISTS w_legacy_asns (
    asn_number           bigint PRIMARY KEY,
    organization_name    text,
    name_from            text,
    organization_country text,
    country_from         text,
    rir_registry         text,
    registry_from        text
);
-- The derived values before the repair recomputes them, to report what it corrected.
CREATE TEMP TABLE IF NOT EXISTS w_repair_ips (
    ip_address    text PRIMARY KEY,
    session_count bigint NOT NULL,
    first_seen    timestamptz,
    last_seen     timestamptz
);
CREATE TEMP TABLE IF NOT EXISTS w_repair_asns (
    asn_number           bigint PRIMARY KEY,
    unique_ip_count      bigint NOT NULL,
    total_session_count  bigint NOT NULL,
    first_seen           timestamptz,
    last_seen            timestamptz,
    organization_country text
);
CREATE TEMP TABLE IF NOT EXISTS w_repair_day_stats (
    stat_date       date NOT NULL,
    asn_number      bigint NOT NULL,
    session_count   bigint NOT NULL,
    unique_ip_count bigint NOT NULL,
    new_ip_count    bigint NOT NULL,
    PRIMARY KEY (stat_date, asn_number)
);
