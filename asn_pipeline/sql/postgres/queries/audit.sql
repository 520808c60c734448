-- PostgreSQL's forms of queries in sql/queries/audit.sql, where its dialect differs.

-- name: split_sessions
-- The same with PostgreSQL's date arithmetic (date - integer is a date), as a join of the
-- days' sessions with the parts of the days before them: one hash join instead of a probe per
-- session.
SELECT s.sensor, s.session_id, s.ingest_date, count(*) OVER () AS found
FROM sessions AS s
JOIN (
    SELECT sensor, session_id, ingest_date AS part_date
    FROM sessions
    WHERE ingest_date BETWEEN :day_before AND :last_day
    UNION
    SELECT sensor, session_id, fragment_date
    FROM session_fragments
    WHERE fragment_date BETWEEN :day_before AND :last_day
) AS p
  ON p.sensor = s.sensor AND p.session_id = s.session_id AND p.part_date = s.ingest_date - 1
WHERE s.ingest_date BETWEEN :first_day AND :day_after
ORDER BY s.ingest_date, s.sensor, s.session_id
LIMIT :examples;
