-- PostgreSQL's forms of queries in sql/queries/sessions.sql, where its dialect differs.

-- name: collect_islands
-- The same with PostgreSQL's date arithmetic (date - date is a number of days).
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
               CASE WHEN f.fragment_date - lag(f.fragment_date) OVER (
                        PARTITION BY f.sensor, f.session_id ORDER BY f.fragment_date) = 1
                    THEN 0 ELSE 1 END AS starts_run
        FROM (
            SELECT sensor, session_id, fragment_date, src_ip, first_event_at, last_event_at,
                   event_count, from_session
            FROM w_other_parts
            UNION ALL
            SELECT n.sensor, n.session_id, CAST(:day AS date), n.src_ip, n.first_event_at,
                   n.last_event_at, n.event_count, 0
            FROM w_fragments AS n
            WHERE EXISTS (
                SELECT 1 FROM w_other_parts AS o
                WHERE o.sensor = n.sensor AND o.session_id = n.session_id
            )
        ) AS f
    ) AS runs
) AS islands;
