-- Replacing one day's sessions (asset cowrie_sessions). The day's new fragments are in w_fragments.

-- name: collect_touched_sessions
-- Sessions the write touches: those with an old fragment of the day and those in the new ones.
INSERT INTO w_sessions (sensor, session_id)
SELECT sensor, session_id FROM session_fragments WHERE fragment_date = :day
UNION
SELECT sensor, session_id FROM w_fragments;

-- name: collect_touched_ips
INSERT INTO w_ips (ip_address)
SELECT s.src_ip
FROM sessions AS s
JOIN w_sessions AS k ON k.sensor = s.sensor AND k.session_id = s.session_id
UNION
SELECT src_ip FROM w_fragments;

-- name: mark_days_of_touched_sessions
-- Run before and after the change: the daily statistics of both the old and the new owner day.
INSERT INTO stale_days (stat_date, asn_number)
SELECT DISTINCT s.ingest_date, s.asn_number
FROM sessions AS s
JOIN w_sessions AS k ON k.sensor = s.sensor AND k.session_id = s.session_id
WHERE s.asn_number IS NOT NULL
ON CONFLICT DO NOTHING;

-- name: remember_first_dates
INSERT INTO w_first_dates (ip_address, first_date)
SELECT s.src_ip, min(s.ingest_date)
FROM sessions AS s
JOIN w_ips AS i ON i.ip_address = s.src_ip
GROUP BY s.src_ip;

-- name: delete_day_fragments
DELETE FROM session_fragments WHERE fragment_date = :day;

-- name: insert_day_fragments
INSERT INTO session_fragments
    (sensor, session_id, fragment_date, src_ip, first_event_at, last_event_at, event_count,
     ingested_by_run)
SELECT sensor, session_id, :day, src_ip, first_event_at, last_event_at, event_count, :run_id
FROM w_fragments;

-- name: delete_touched_sessions
DELETE FROM sessions
WHERE EXISTS (
    SELECT 1 FROM w_sessions AS k
    WHERE k.sensor = sessions.sensor AND k.session_id = sessions.session_id
);

-- name: merge_touched_sessions
-- One row per session from all of its fragments. The earliest day owns it and gives its source
-- address; asn_number snapshots the address's current ASN.
INSERT INTO sessions
    (sensor, session_id, src_ip, ingest_date, first_event_at, last_event_at, event_count,
     asn_number)
SELECT m.sensor, m.session_id, f.src_ip, m.ingest_date, m.first_event_at, m.last_event_at,
       m.event_count, i.current_asn
FROM (
    SELECT f.sensor, f.session_id,
           min(f.fragment_date) AS ingest_date,
           min(f.first_event_at) AS first_event_at,
           max(f.last_event_at) AS last_event_at,
           sum(f.event_count) AS event_count
    FROM session_fragments AS f
    JOIN w_sessions AS k ON k.sensor = f.sensor AND k.session_id = f.session_id
    GROUP BY f.sensor, f.session_id
) AS m
JOIN session_fragments AS f
  ON f.sensor = m.sensor AND f.session_id = m.session_id AND f.fragment_date = m.ingest_date
LEFT JOIN ip_inventory AS i ON i.ip_address = f.src_ip;

-- name: mark_days_of_first_date_changes
-- new_ip_count of a day counts addresses first seen that day: when an address's first day moves
-- (a backfill of an earlier day), both the old and the new first day change.
INSERT INTO stale_days (stat_date, asn_number)
SELECT DISTINCT s.ingest_date, s.asn_number
FROM w_first_dates AS b
JOIN (
    SELECT s.src_ip, min(s.ingest_date) AS first_date
    FROM sessions AS s
    JOIN w_first_dates AS b ON b.ip_address = s.src_ip
    GROUP BY s.src_ip
) AS a ON a.src_ip = b.ip_address
JOIN sessions AS s ON s.src_ip = b.ip_address AND s.ingest_date IN (b.first_date, a.first_date)
WHERE a.first_date <> b.first_date AND s.asn_number IS NOT NULL
ON CONFLICT DO NOTHING;

-- name: mark_touched_ips
INSERT INTO stale_ips (ip_address)
SELECT ip_address FROM w_ips WHERE true
ON CONFLICT DO NOTHING;

-- name: delete_day_rejects
DELETE FROM rejected_events WHERE ingest_date = :day;

-- name: day_session_summary
SELECT
    (SELECT count(*) FROM sessions WHERE ingest_date = :day) AS sessions_owned,
    (SELECT count(*) FROM session_fragments WHERE fragment_date = :day) AS fragments,
    (SELECT count(*) FROM w_sessions AS k
      WHERE EXISTS (SELECT 1 FROM session_fragments AS f
                     WHERE f.sensor = k.sensor AND f.session_id = k.session_id
                       AND f.fragment_date <> :day)) AS sessions_spanning_days;
