-- 002: a session is the fragments of one (sensor, session_id) on consecutive days, so the key of
-- sessions takes its first day; the files each day was read from; bounded rejected lines.

-- SQLite cannot change a primary key in place: the table is rebuilt with the same rows.
CREATE TABLE sessions_v2 (
    sensor         TEXT NOT NULL,
    session_id     TEXT NOT NULL,
    src_ip         TEXT NOT NULL,
    ingest_date    TEXT NOT NULL,
    first_event_at TEXT NOT NULL,
    last_event_at  TEXT NOT NULL,
    event_count    INTEGER NOT NULL CHECK (event_count > 0),
    asn_number     INTEGER REFERENCES asn_inventory (asn_number),
    PRIMARY KEY (sensor, session_id, ingest_date)
);
INSERT INTO sessions_v2
    (sensor, session_id, src_ip, ingest_date, first_event_at, last_event_at, event_count,
     asn_number)
SELECT sensor, session_id, src_ip, ingest_date, first_event_at, last_event_at, event_count,
       asn_number
FROM sessions
ORDER BY ingest_date, src_ip;
DROP TABLE sessions;
ALTER TABLE sessions_v2 RENAME TO sessions;
CREATE INDEX sessions_src_ip ON sessions (src_ip, ingest_date);
CREATE INDEX sessions_day_ip ON sessions (ingest_date, src_ip);

-- Sessions the previous rule merged across a gap of days (a reused session id) are split into
-- one session per run of consecutive days. The fragments of those ids, with their run's first day:
CREATE TEMP TABLE m_fragments AS
SELECT sensor, session_id, fragment_date, src_ip, first_event_at, last_event_at, event_count,
       CAST(julianday(fragment_date) AS INTEGER)
         - row_number() OVER (PARTITION BY sensor, session_id ORDER BY fragment_date) AS run
FROM session_fragments
WHERE (sensor, session_id) IN (
    SELECT sensor, session_id
    FROM session_fragments
    GROUP BY sensor, session_id
    HAVING CAST(julianday(max(fragment_date)) - julianday(min(fragment_date)) AS INTEGER) + 1
           > count(*)
);
CREATE TEMP TABLE m_old AS
SELECT s.sensor, s.session_id, s.src_ip, s.ingest_date, s.asn_number
FROM sessions AS s
WHERE (s.sensor, s.session_id) IN (SELECT sensor, session_id FROM m_fragments);
CREATE TEMP TABLE m_new AS
SELECT g.sensor, g.session_id, f.src_ip, g.ingest_date, g.first_event_at, g.last_event_at,
       g.event_count,
       CASE WHEN f.src_ip = o.src_ip THEN o.asn_number ELSE i.current_asn END AS asn_number
FROM (
    SELECT sensor, session_id, run, min(fragment_date) AS ingest_date,
           min(first_event_at) AS first_event_at, max(last_event_at) AS last_event_at,
           sum(event_count) AS event_count
    FROM m_fragments
    GROUP BY sensor, session_id, run
) AS g
JOIN m_fragments AS f
  ON f.sensor = g.sensor AND f.session_id = g.session_id AND f.fragment_date = g.ingest_date
LEFT JOIN m_old AS o ON o.sensor = g.sensor AND o.session_id = g.session_id
LEFT JOIN ip_inventory AS i ON i.ip_address = f.src_ip;
-- Their addresses' counters and every day statistic of those addresses are recomputed (queued
-- here, drained right after the upgrade).
INSERT INTO stale_ips (ip_address)
SELECT src_ip FROM m_old UNION SELECT src_ip FROM m_new WHERE true
ON CONFLICT DO NOTHING;
INSERT INTO stale_days (stat_date, asn_number)
SELECT DISTINCT s.ingest_date, s.asn_number
FROM sessions AS s
WHERE s.src_ip IN (SELECT src_ip FROM m_old UNION SELECT src_ip FROM m_new)
  AND s.asn_number IS NOT NULL
ON CONFLICT DO NOTHING;
DELETE FROM sessions WHERE (sensor, session_id) IN (SELECT sensor, session_id FROM m_old);
INSERT INTO sessions
    (sensor, session_id, src_ip, ingest_date, first_event_at, last_event_at, event_count,
     asn_number)
SELECT sensor, session_id, src_ip, ingest_date, first_event_at, last_event_at, event_count,
       asn_number
FROM m_new;
INSERT INTO stale_days (stat_date, asn_number)
SELECT DISTINCT s.ingest_date, s.asn_number
FROM sessions AS s
WHERE s.src_ip IN (SELECT src_ip FROM m_new) AND s.asn_number IS NOT NULL
ON CONFLICT DO NOTHING;
DROP TABLE m_fragments;
DROP TABLE m_old;
DROP TABLE m_new;

-- The files each day was read from, by their name without ".gz" (a file compressed after it was
-- read is the same file). A re-run that lost one of them is refused (asn_pipeline.store.sessions).
CREATE TABLE source_files (
    ingest_date     TEXT NOT NULL,
    logical_name    TEXT NOT NULL,
    source_file     TEXT NOT NULL,
    size_bytes      INTEGER NOT NULL,
    lines_read      INTEGER NOT NULL,
    events_read     INTEGER NOT NULL,
    rejected_lines  INTEGER NOT NULL,
    status          TEXT NOT NULL,
    ingested_at     TEXT NOT NULL,
    ingested_by_run TEXT,
    PRIMARY KEY (ingest_date, logical_name)
);

-- A rejected line's full length in bytes, and its SHA-256 where raw_line holds only a prefix.
ALTER TABLE rejected_events ADD COLUMN line_bytes INTEGER;
ALTER TABLE rejected_events ADD COLUMN line_sha256 TEXT;
