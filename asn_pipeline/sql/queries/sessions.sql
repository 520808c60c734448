-- Replacing one day's sessions (asset cowrie_sessions). The day's new parts are in w_fragments.
-- A part is what one day's files say about one (sensor, session_id). A session seen on one day
-- alone is stored as its sessions row; a session spanning days as its row plus one
-- session_fragments row per part. A sessions row is a part of its own when no fragment of its id
-- holds its ingest_date (a day written before fragments were kept for spanning sessions only
-- holds a fragment for every session, until it is written again): view session_parts.
-- Work sets are built once from the tables and every later statement reads them, so the cost
-- follows the day's sessions, not the size of the history. `w_x CROSS JOIN table WHERE ...` makes
-- SQLite loop over the (small) work set and probe the table's index, whatever its statistics say.

-- name: collect_early_sessions
-- The day's sessions that are written before the write lock, under the day's (PostgreSQL): the
-- new parts whose id has no session on any day, so no part anywhere else (a session of the day
-- alone), whose address this write looks up (w_lookups gives the ASN snapshot) and whose ASN
-- has a row already (new ASN rows are inserted under the lock). A write of a neighbouring day
-- that commits a session of the same id meanwhile is found under the lock
-- (collect_late_sessions). Nothing but this write of the day writes a row of these keys: a
-- neighbour's write writes a session owned by this day only for an id with a part here.
INSERT INTO w_early
    (sensor, session_id, src_ip, first_event_at, last_event_at, event_count, asn_number)
SELECT f.sensor, f.session_id, f.src_ip, f.first_event_at, f.last_event_at, f.event_count,
       l.asn_number
FROM w_fragments AS f
JOIN w_lookups AS l ON l.ip_address = f.src_ip
WHERE NOT EXISTS (
          SELECT 1 FROM sessions AS s
          WHERE s.sensor = f.sensor AND s.session_id = f.session_id)
  AND (l.asn_number IS NULL
       OR EXISTS (SELECT 1 FROM asn_inventory AS a WHERE a.asn_number = l.asn_number));

-- name: insert_early_sessions
-- In the order of sessions_day_ip, as insert_merged_sessions.
INSERT INTO sessions
    (sensor, session_id, src_ip, ingest_date, first_event_at, last_event_at, event_count,
     asn_number)
SELECT sensor, session_id, src_ip, :day, first_event_at, last_event_at, event_count, asn_number
FROM w_early
ORDER BY src_ip;

-- name: collect_touched_sessions
-- Sessions the write touches: those with an old part on the day and those in the new parts,
-- but for the ones written early. Only a write of the day changes which ids have a part on it
-- (a neighbour's write may turn its row into a fragment or back, never add or drop a part), so
-- this is read under the day's lock.
INSERT INTO w_sessions (sensor, session_id)
SELECT sensor, session_id FROM session_fragments WHERE fragment_date = :day
UNION
SELECT sensor, session_id FROM sessions WHERE ingest_date = :day
UNION
SELECT f.sensor, f.session_id
FROM w_fragments AS f
WHERE NOT EXISTS (
    SELECT 1 FROM w_early AS e WHERE e.sensor = f.sensor AND e.session_id = f.session_id);

-- name: collect_late_sessions
-- Under the write lock: the sessions written early whose id a write of another day has given a
-- session since (committed while this one waited). They are written again as every other
-- session of the day: their early rows deleted, their ids touched (their part is in
-- w_fragments).
INSERT INTO w_late (sensor, session_id)
SELECT DISTINCT e.sensor, e.session_id
FROM w_early AS e
CROSS JOIN sessions AS s
WHERE s.sensor = e.sensor AND s.session_id = e.session_id AND s.ingest_date <> :day;

-- name: delete_late_sessions
DELETE FROM sessions
WHERE ingest_date = :day
  AND (sensor, session_id) IN (SELECT sensor, session_id FROM w_late);

-- name: touch_late_sessions
INSERT INTO w_sessions (sensor, session_id)
SELECT sensor, session_id FROM w_late;

-- name: forget_late_sessions
DELETE FROM w_early WHERE (sensor, session_id) IN (SELECT sensor, session_id FROM w_late);

-- name: collect_id_sessions
-- Every session of the touched ids: one probe per id. An id without one has no part on another
-- day (every part belongs to a session, which has a row).
INSERT INTO w_id_sessions
    (sensor, session_id, ingest_date, src_ip, first_event_at, last_event_at, event_count,
     asn_number)
SELECT s.sensor, s.session_id, s.ingest_date, s.src_ip, s.first_event_at, s.last_event_at,
       s.event_count, s.asn_number
FROM w_sessions AS k
CROSS JOIN sessions AS s
WHERE s.sensor = k.sensor AND s.session_id = k.session_id;

-- name: collect_other_parts
-- The parts of those ids on other days: their fragments, and the sessions stored as their row
-- alone (from_session). A session spanning midnight, or the same id reused on another day.
INSERT INTO w_other_parts
    (sensor, session_id, fragment_date, src_ip, first_event_at, last_event_at, event_count,
     from_session)
SELECT f.sensor, f.session_id, f.fragment_date, f.src_ip, f.first_event_at, f.last_event_at,
       f.event_count, 0
FROM (SELECT DISTINCT sensor, session_id FROM w_id_sessions) AS k
CROSS JOIN session_fragments AS f
WHERE f.sensor = k.sensor AND f.session_id = k.session_id AND f.fragment_date <> :day
UNION ALL
SELECT s.sensor, s.session_id, s.ingest_date, s.src_ip, s.first_event_at, s.last_event_at,
       s.event_count, 1
FROM w_id_sessions AS s
WHERE s.ingest_date <> :day
  AND NOT EXISTS (
      SELECT 1 FROM session_fragments AS f
      WHERE f.sensor = s.sensor AND f.session_id = s.session_id
        AND f.fragment_date = s.ingest_date);

-- name: collect_islands
-- Those ids' parts, the day's new ones included, each with the first day of its run of
-- consecutive days (an "island"): one session is one island. A run starts where the previous
-- part of the id is not from the day before. island_days: how many days its island holds.
INSERT INTO w_islands
    (sensor, session_id, fragment_date, src_ip, first_event_at, last_event_at, event_count,
     island_start, from_session, island_days)
SELECT sensor, session_id, fragment_date, src_ip, first_event_at, last_event_at, event_count,
       island_start, from_session,
       count(*) OVER (PARTITION BY sensor, session_id, island_start)
FROM (
    SELECT sensor, session_id, fragment_date, src_ip, first_event_at, last_event_at, event_count,
           max(CASE WHEN starts_run = 1 THEN fragment_date END) OVER (
               PARTITION BY sensor, session_id ORDER BY fragment_date ROWS UNBOUNDED PRECEDING)
               AS island_start,
           from_session
    FROM (
        SELECT f.*,
               CASE WHEN julianday(f.fragment_date) - julianday(lag(f.fragment_date) OVER (
                        PARTITION BY f.sensor, f.session_id ORDER BY f.fragment_date)) = 1
                    THEN 0 ELSE 1 END AS starts_run
        FROM (
            SELECT sensor, session_id, fragment_date, src_ip, first_event_at, last_event_at,
                   event_count, from_session
            FROM w_other_parts
            UNION ALL
            SELECT n.sensor, n.session_id, :day, n.src_ip, n.first_event_at, n.last_event_at,
                   n.event_count, 0
            FROM w_fragments AS n
            WHERE EXISTS (
                SELECT 1 FROM w_other_parts AS o
                WHERE o.sensor = n.sensor AND o.session_id = n.session_id
            )
        ) AS f
    ) AS runs
) AS islands;

-- name: collect_old_sessions
-- The sessions this write may change, as they are before it: of the touched ids, those owned by
-- the day or the next day (here), and by the first day of the island holding the previous day
-- (collect_old_island_sessions). Writing day D changes only the islands that hold D-1, D or D+1;
-- the island holding D-1 starts on the same day before and after the write, as that depends on
-- earlier days only.
INSERT INTO w_old_sessions (sensor, session_id, src_ip, ingest_date, asn_number)
SELECT sensor, session_id, src_ip, ingest_date, asn_number
FROM w_id_sessions
WHERE ingest_date IN (:day, :next_day);

-- name: collect_old_island_sessions
INSERT INTO w_old_sessions (sensor, session_id, src_ip, ingest_date, asn_number)
SELECT s.sensor, s.session_id, s.src_ip, s.ingest_date, s.asn_number
FROM w_islands AS w
CROSS JOIN w_id_sessions AS s
WHERE w.fragment_date = :previous_day
  AND s.sensor = w.sensor AND s.session_id = w.session_id AND s.ingest_date = w.island_start;

-- name: merge_single_day_sessions
-- An id with no part on another day is one session: its part of this day (unless written
-- early). asn_number snapshots the address's ASN: the one its lookup gives where the write
-- upserts the day's lookups too (w_lookups, empty otherwise), else its current one (probed only
-- then).
INSERT INTO w_merged
    (sensor, session_id, src_ip, ingest_date, first_event_at, last_event_at, event_count,
     asn_number)
SELECT f.sensor, f.session_id, f.src_ip, :day, f.first_event_at, f.last_event_at, f.event_count,
       CASE WHEN l.ip_address IS NOT NULL THEN l.asn_number
            ELSE (SELECT i.current_asn FROM ip_inventory AS i WHERE i.ip_address = f.src_ip) END
FROM w_fragments AS f
LEFT JOIN w_lookups AS l ON l.ip_address = f.src_ip
WHERE NOT EXISTS (
          SELECT 1 FROM w_other_parts AS o
          WHERE o.sensor = f.sensor AND o.session_id = f.session_id)
  AND NOT EXISTS (
          SELECT 1 FROM w_early AS e
          WHERE e.sensor = f.sensor AND e.session_id = f.session_id);

-- name: merge_island_sessions
-- One session per island that holds the previous day, the day or the next day, from all of its
-- parts. Its first day owns it and gives its source address. The ASN snapshot as in
-- merge_single_day_sessions for the day's own sessions; a session another day owns takes its
-- address's current ASN (before this write's lookups, which are the day's).
INSERT INTO w_merged
    (sensor, session_id, src_ip, ingest_date, first_event_at, last_event_at, event_count,
     asn_number)
SELECT m.sensor, m.session_id, f.src_ip, m.island_start, m.first_event_at, m.last_event_at,
       m.event_count,
       CASE WHEN m.island_start = :day AND l.ip_address IS NOT NULL THEN l.asn_number
            ELSE i.current_asn END
FROM (
    SELECT sensor, session_id, island_start, min(first_event_at) AS first_event_at,
           max(last_event_at) AS last_event_at, sum(event_count) AS event_count
    FROM w_islands
    GROUP BY sensor, session_id, island_start
    HAVING max(fragment_date) >= :previous_day AND island_start <= :next_day
) AS m
JOIN w_islands AS f
  ON f.sensor = m.sensor AND f.session_id = m.session_id AND f.fragment_date = m.island_start
LEFT JOIN w_lookups AS l ON l.ip_address = f.src_ip
LEFT JOIN ip_inventory AS i ON i.ip_address = f.src_ip;

-- name: collect_touched_ips
INSERT INTO w_ips (ip_address)
SELECT src_ip FROM w_old_sessions
UNION
SELECT src_ip FROM w_merged
UNION
SELECT src_ip FROM w_early;

-- name: mark_days_of_old_sessions
-- The daily statistics of the touched sessions' old owner days ...
INSERT INTO stale_days (stat_date, asn_number)
SELECT DISTINCT ingest_date, asn_number FROM w_old_sessions WHERE asn_number IS NOT NULL
ON CONFLICT (stat_date, asn_number) DO UPDATE SET generation = excluded.generation;

-- name: mark_days_of_merged_sessions
-- ... and of their new owner days.
INSERT INTO stale_days (stat_date, asn_number)
SELECT DISTINCT ingest_date, asn_number FROM w_merged WHERE asn_number IS NOT NULL
ON CONFLICT (stat_date, asn_number) DO UPDATE SET generation = excluded.generation;

-- name: remember_first_dates
-- The touched addresses' first days before this write: their sessions of other days, and their
-- sessions the day owned before it, all of which are in w_old_sessions (its sessions written
-- early are not). Only first days from the day on: a session owned by an earlier day keeps its
-- day and its address (its island starts with a part this write does not change), so an address
-- with a session before the day keeps its first day; only the day's and the next day's sessions
-- come and go. Each address's sessions after the day are one index range, and whether it has one
-- before the day is one probe.
INSERT INTO w_first_dates (ip_address, first_date)
SELECT b.src_ip, min(b.first_date)
FROM (
    SELECT s.src_ip, min(s.ingest_date) AS first_date
    FROM w_ips AS i
    CROSS JOIN sessions AS s
    WHERE s.src_ip = i.ip_address AND s.ingest_date > :day
    GROUP BY s.src_ip
    UNION ALL
    SELECT src_ip, ingest_date FROM w_old_sessions WHERE ingest_date = :day
) AS b
WHERE NOT EXISTS (
    SELECT 1 FROM sessions AS p WHERE p.src_ip = b.src_ip AND p.ingest_date < :day)
GROUP BY b.src_ip;

-- name: delete_day_fragments
DELETE FROM session_fragments WHERE fragment_date = :day;

-- name: insert_day_fragments
-- The day's parts of sessions spanning days; a session of this day alone is its row only.
INSERT INTO session_fragments
    (sensor, session_id, fragment_date, src_ip, first_event_at, last_event_at, event_count,
     ingested_by_run)
SELECT w.sensor, w.session_id, w.fragment_date, w.src_ip, w.first_event_at, w.last_event_at,
       w.event_count, :run_id
FROM w_islands AS w
WHERE w.fragment_date = :day AND w.island_days > 1;

-- name: insert_joined_fragments
-- A neighbour day's session stored as its row alone that now spans days with this one: its part
-- becomes a fragment, with the run that wrote that day's files.
INSERT INTO session_fragments
    (sensor, session_id, fragment_date, src_ip, first_event_at, last_event_at, event_count,
     ingested_by_run)
SELECT w.sensor, w.session_id, w.fragment_date, w.src_ip, w.first_event_at, w.last_event_at,
       w.event_count,
       (SELECT max(r.ingested_by_run) FROM source_files AS r WHERE r.ingest_date = w.fragment_date)
FROM w_islands AS w
WHERE w.from_session = 1 AND w.island_days > 1;

-- name: delete_split_fragments
-- ... and the other way: another day's part left alone (this day no longer holds its id, or a
-- fragment written before fragments were kept for spanning sessions only) becomes its session's
-- row alone, whose run session_parts finds in that day's files. A day written before files were
-- recorded keeps its fragments: they hold the run that read them.
DELETE FROM session_fragments
WHERE (sensor, session_id, fragment_date) IN (
    SELECT w.sensor, w.session_id, w.fragment_date
    FROM w_islands AS w
    WHERE w.from_session = 0 AND w.fragment_date <> :day AND w.island_days = 1
      AND EXISTS (SELECT 1 FROM source_files AS r WHERE r.ingest_date = w.fragment_date));

-- name: delete_touched_sessions
DELETE FROM sessions
WHERE (sensor, session_id, ingest_date) IN
    (SELECT sensor, session_id, ingest_date FROM w_old_sessions);

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

-- name: mark_day_of_early_sessions
-- ... and of the day, for its sessions written early.
INSERT INTO stale_days (stat_date, asn_number)
SELECT DISTINCT :day, asn_number FROM w_early WHERE asn_number IS NOT NULL
ON CONFLICT (stat_date, asn_number) DO UPDATE SET generation = excluded.generation;

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
ON CONFLICT (stat_date, asn_number) DO UPDATE SET generation = excluded.generation;

-- name: mark_touched_ips
INSERT INTO stale_ips (ip_address)
SELECT ip_address FROM w_ips WHERE true
ON CONFLICT DO NOTHING;

-- name: delete_day_rejects
DELETE FROM rejected_events WHERE ingest_date = :day;

-- name: delete_day_source_files
DELETE FROM source_files WHERE ingest_date = :day;

-- name: insert_day_source_files
INSERT INTO source_files
    (ingest_date, logical_name, source_file, size_bytes, lines_read, events_read, rejected_lines,
     status, ingested_at, ingested_by_run)
SELECT :day, logical_name, source_file, size_bytes, lines_read, events_read, rejected_lines,
       status, :now, :run_id
FROM w_source_files;

-- name: day_source_files
-- The files an earlier run of the day read (the shrinkage check compares them with the files now).
SELECT logical_name, source_file, lines_read, ingested_by_run
FROM source_files
WHERE ingest_date = :day
ORDER BY logical_name;

-- name: day_lines_held
-- The lines the day accounts for now: its events and its rejected lines, as its source files
-- say, or (a day written before files were recorded) as its parts and rejects say.
SELECT CASE
    WHEN EXISTS (SELECT 1 FROM source_files WHERE ingest_date = :day)
    THEN (SELECT sum(events_read + rejected_lines) FROM source_files WHERE ingest_date = :day)
    ELSE (SELECT coalesce(sum(event_count), 0) FROM session_parts WHERE fragment_date = :day)
         + (SELECT count(*) FROM rejected_events WHERE ingest_date = :day)
END;

-- name: day_session_summary
-- Sessions the day owns; parts it holds; of those, the ones in a session spanning days, and
-- the ones whose id has another session on a day not adjacent (a reused session id).
SELECT
    (SELECT count(*) FROM w_merged WHERE ingest_date = :day)
        + (SELECT count(*) FROM w_early) AS sessions_owned,
    (SELECT count(*) FROM w_fragments) AS fragments,
    (SELECT count(*) FROM w_islands WHERE fragment_date = :day AND island_days > 1)
        AS sessions_spanning_days,
    (SELECT count(*) FROM w_islands AS w
      WHERE w.fragment_date = :day
        AND EXISTS (SELECT 1 FROM w_islands AS o
                    WHERE o.sensor = w.sensor AND o.session_id = w.session_id
                      AND o.island_start <> w.island_start))
        AS reused_session_ids;
