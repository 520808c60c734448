-- 002: a session is the fragments of one (sensor, session_id) on consecutive days, so the key of
-- sessions takes its first day; the files each day was read from; bounded rejected lines.

ALTER TABLE sessions DROP CONSTRAINT sessions_pkey;
ALTER TABLE sessions ADD PRIMARY KEY (sensor, session_id, ingest_date);

-- Sessions the previous rule merged across a gap of days (a reused session id) are split into
-- one session per run of consecutive days. The fragments of those ids, with their run's key:
CREATE TEMP TABLE m_fragments ON COMMIT DROP AS
SELECT sensor, session_id, fragment_date, src_ip, first_event_at, last_event_at, event_count,
       fragment_date
         - CAST(row_number() OVER (PARTITION BY sensor, session_id ORDER BY fragment_date)
                AS integer) AS run
FROM session_fragments
WHERE (sensor, session_id) IN (
    SELECT sensor, session_id
    FROM session_fragments
    GROUP BY sensor, session_id
    HAVING max(fragment_date) - min(fragment_date) + 1 > count(*)
);
CREATE TEMP TABLE m_old ON COMMIT DROP AS
SELECT s.sensor, s.session_id, s.src_ip, s.ingest_date, s.asn_number
FROM sessions AS s
WHERE (s.sensor, s.session_id) IN (SELECT sensor, session_id FROM m_fragments);
CREATE TEMP TABLE m_new ON COMMIT DROP AS
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
SELECT src_ip FROM m_old UNION SELECT src_ip FROM m_new
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

-- The files each day was read from, by their name without ".gz" (a file compressed after it was
-- read is the same file). A re-run that lost one of them is refused (asn_pipeline.store.sessions).
CREATE TABLE source_files (
    ingest_date     date NOT NULL,
    logical_name    text NOT NULL,
    source_file     text NOT NULL,
    size_bytes      bigint NOT NULL,
    lines_read      bigint NOT NULL,
    events_read     bigint NOT NULL,
    rejected_lines  bigint NOT NULL,
    status          text NOT NULL,
    ingested_at     timestamptz NOT NULL,
    ingested_by_run text,
    PRIMARY KEY (ingest_date, logical_name)
);

-- A rejected line's full length in bytes, and its SHA-256 where raw_line holds only a prefix.
ALTER TABLE rejected_events ADD COLUMN line_bytes bigint;
ALTER TABLE rejected_events ADD COLUMN line_sha256 text;
