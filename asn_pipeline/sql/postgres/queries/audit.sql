-- PostgreSQL's forms of queries in sql/queries/audit.sql, where its dialect differs.

-- name: split_sessions
-- The same with PostgreSQL's date arithmetic (date - integer is a date), as a join of the two
-- days' ranges of sessions and fragments: one hash join instead of a probe per session.
SELECT s.sensor, s.session_id, s.ingest_date, count(*) OVER () AS found
FROM sessions AS s
JOIN session_fragments AS f
  ON f.sensor = s.sensor AND f.session_id = s.session_id
 AND f.fragment_date = s.ingest_date - 1
WHERE s.ingest_date BETWEEN :first_day AND :day_after
  AND f.fragment_date BETWEEN :day_before AND :last_day
ORDER BY s.ingest_date, s.sensor, s.session_id
LIMIT :examples;
