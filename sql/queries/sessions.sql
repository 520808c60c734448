-- Replacing one day's sessions (asset cowrie_sessions). The day's new fragments are in w_fragments.
-- Work sets are built once from the tables and every later statement reads them, so the cost
-- follows the day's sessions, not the size of the history. `w_x CROSS JOIN table WHERE ...` makes
-- SQLite loop over the (small) work set and probe the table's index, whatever its statistics say.

-- name: collect_touched_sessions
-- Sessions the write touches: those with an old fragment of the day and those in the new ones.
INSERT INTO w_sessions (sensor, session_id)
SELECT sensor, session_id FROM session_fragments WHERE fragment_date = :day
UNION
SELECT sensor, session_id FROM w_fragments;

-- name: collect_old_sessions
-- The touched sessions as they are before the write.
INSERT INTO w_old_sessions (sensor, session_id, src_ip, ingest_date, asn_number)
SELECT s.sensor, s.session_id, s.src_ip, s.ingest_date, s.asn_number
FROM w_sessions AS k
CROSS JOIN sessions AS s
WHERE s.sensor = k.sensor AND s.session_id = k.session_id;

-- name: collect_other_fragments
-- Fragments of the touched sessions from other days (sessions that span midnight).
INSERT INTO w_other_fragments
    (sensor, session_id, fragment_date, src_ip, first_event_at, last_event_at, event_count)
SELECT f.sensor, f.session_id, f.fragment_date, f.src_ip, f.first_event_at, f.last_event_at,
       f.event_count
FROM w_sessions AS k
CROSS JOIN session_fragments AS f
WHERE f.sensor = k.sensor AND f.session_id = k.session_id AND f.fragment_date <> :day;

-- name: merge_single_day_sessions
-- A session with no fragment on another day is its fragment of this day. asn_number snapshots
-- the address's current ASN.
INSERT INTO w_merged
    (sensor, session_id, src_ip, ingest_date, first_event_at, last_event_at, event_count,
     asn_number)
SELECT f.sensor, f.session_id, f.src_ip, :day, f.first_event_at, f.last_event_at, f.event_count,
       i.current_asn
FROM w_fragments AS f
LEFT JOIN ip_inventory AS i ON i.ip_address = f.src_ip
WHERE NOT EXISTS (
    SELECT 1 FROM w_other_fragments AS o
    WHERE o.sensor = f.sensor AND o.session_id = f.session_id
);

-- name: merge_spanning_sessions
-- One row per session from all of its fragments. The earliest day owns it and gives its source
-- address.
INSERT INTO w_merged
    (sensor, session_id, src_ip, ingest_date, first_event_at, last_event_at, event_count,
     asn_number)
SELECT m.sensor, m.session_id, f.src_ip, m.ingest_date, m.first_event_at, m.last_event_at,
       m.event_count, i.current_asn
FROM (
    SELECT sensor, session_id, min(fragment_date) AS ingest_date,
           min(first_event_at) AS first_event_at, max(last_event_at) AS last_event_at,
           sum(event_count) AS event_count
    FROM (
        SELECT sensor, session_id, fragment_date, first_event_at, last_event_at, event_count
        FROM w_other_fragments
        UNION ALL
        SELECT sensor, session_id, :day, first_event_at, last_event_at, event_count
        FROM w_fragments AS n
        WHERE EXISTS (
            SELECT 1 FROM w_other_fragments AS o
            WHERE o.sensor = n.sensor AND o.session_id = n.session_id
        )
    ) AS all_fragments
    GROUP BY sensor, session_id
) AS m
JOIN (
    SELECT sensor, session_id, fragment_date, src_ip FROM w_other_fragments
    UNION ALL
    SELECT sensor, session_id, :day, src_ip
    FROM w_fragments AS n
    WHERE EXISTS (
        SELECT 1 FROM w_other_fragments AS o
        WHERE o.sensor = n.sensor AND o.session_id = n.session_id
    )
) AS f
  ON f.sensor = m.sensor AND f.session_id = m.session_id AND f.fragment_date = m.ingest_date
LEFT JOIN ip_inventory AS i ON i.ip_address = f.src_ip;

-- name: collect_touched_ips
INSERT INTO w_ips (ip_address)
SELECT src_ip FROM w_old_sessions
UNION
SELECT src_ip FROM w_merged;

-- name: mark_days_of_old_sessions
-- The daily statistics of the touched sessions' old owner days ...
INSERT INTO stale_days (stat_date, asn_number)
SELECT DISTINCT ingest_date, asn_number FROM w_old_sessions WHERE asn_number IS NOT NULL
ON CONFLICT DO NOTHING;

-- name: mark_days_of_merged_sessions
-- ... and of their new owner days.
INSERT INTO stale_days (stat_date, asn_number)
SELECT DISTINCT ingest_date, asn_number FROM w_merged WHERE asn_number IS NOT NULL
ON CONFLICT DO NOTHING;

-- name: remember_first_dates
INSERT INTO w_first_dates (ip_address, first_date)
SELECT s.src_ip, min(s.ingest_date)
FROM w_ips AS i
CROSS JOIN sessions AS s
WHERE s.src_ip = i.ip_address
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
WHERE (sensor, session_id) IN (SELECT sensor, session_id FROM w_old_sessions);

-- name: insert_merged_sessions
-- In the order of sessions_day_ip: a day's rows then lie in the table in the order every later
-- read of the day (snapshot, statistics, checks) visits them through that index, and the two
-- address indexes are filled in key order.
INSERT INTO sessions
    (sensor, session_id, src_ip, ingest_date, first_event_at, last_event_at, event_count,
     asn_number)
SELECT sensor, session_id, src_ip, ingest_date, first_event_at, last_event_at, event_count,
       asn_number
FROM w_merged
ORDER BY ingest_date, src_ip;

-- name: mark_days_of_first_date_changes
-- new_ip_count of a day counts addresses first seen that day: when an address's first day moves
-- (a backfill of an earlier day), both the old and the new first day change.
INSERT INTO stale_days (stat_date, asn_number)
SELECT DISTINCT s.ingest_date, s.asn_number
FROM w_first_dates AS b
JOIN (
    SELECT s.src_ip, min(s.ingest_date) AS first_date
    FROM w_first_dates AS b
    CROSS JOIN sessions AS s
    WHERE s.src_ip = b.ip_address
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
    (SELECT count(*) FROM w_merged WHERE ingest_date = :day) AS sessions_owned,
    (SELECT count(*) FROM w_fragments) AS fragments,
    (SELECT count(*) FROM (SELECT DISTINCT sensor, session_id FROM w_other_fragments) AS o)
        AS sessions_spanning_days;
