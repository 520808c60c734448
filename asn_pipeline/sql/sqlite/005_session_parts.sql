-- 005: session_fragments keeps a row only for a part of a session spanning days; a session seen
-- on one day alone is its sessions row. Rows written before this release keep their fragment (a
-- day's are replaced when the day is written again): a sessions row is a part of its own when no
-- fragment of its id holds its ingest_date. session_parts shows every part either way: one row
-- per (sensor, session_id, day) with what that day's files say, and the run that read them (the
-- run that wrote the day's files, for a session stored as its row alone). No data changes.
CREATE VIEW session_parts AS
SELECT f.sensor, f.session_id, f.fragment_date, f.src_ip, f.first_event_at, f.last_event_at,
       f.event_count, f.ingested_by_run
FROM session_fragments AS f
UNION ALL
SELECT s.sensor, s.session_id, s.ingest_date, s.src_ip, s.first_event_at, s.last_event_at,
       s.event_count,
       (SELECT max(r.ingested_by_run) FROM source_files AS r WHERE r.ingest_date = s.ingest_date)
FROM sessions AS s
WHERE NOT EXISTS (
    SELECT 1 FROM session_fragments AS f
    WHERE f.sensor = s.sensor AND f.session_id = s.session_id AND f.fragment_date = s.ingest_date
);
