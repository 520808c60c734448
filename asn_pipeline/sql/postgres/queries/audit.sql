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

-- name: day_address_audit
-- The same as one probe per address: the days' distinct addresses, each address's row, and the
-- aggregate of its sessions in a LATERAL subquery (sessions_src_ip). Planned as joins, the shared
-- form expected as many distinct addresses as the days' sessions and merged the whole of
-- ip_inventory and sessions in address order. For a day of 100,000 addresses in a history of
-- 1,000,000: 1.4-1.5 s against 1.2-1.3 s for the probes with warm caches, 5.8 s against 1.1 s
-- on a cold copy (docs/checks.md).
SELECT i.ip_address, i.ip_class, i.asn_source, i.current_asn, i.build_epoch,
       CASE WHEN i.session_count <> c.sessions
                 OR i.first_seen IS DISTINCT FROM c.first_seen
                 OR i.last_seen IS DISTINCT FROM c.last_seen
            THEN 1 ELSE 0 END AS counters_differ,
       CASE WHEN EXISTS (SELECT 1 FROM stale_ips AS q WHERE q.ip_address = i.ip_address)
            THEN 1 ELSE 0 END AS queued,
       CASE WHEN i.current_asn IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM asn_inventory AS a
                                 WHERE a.asn_number = i.current_asn)
            THEN 1 ELSE 0 END AS asn_missing,
       c.other_asns_missing
       + CASE WHEN i.current_asn IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM asn_inventory AS a
                                   WHERE a.asn_number = i.current_asn)
              THEN c.current_asn_sessions
              ELSE 0 END AS session_asns_missing
FROM (SELECT DISTINCT src_ip
      FROM (SELECT src_ip FROM sessions WHERE ingest_date BETWEEN :first_day AND :last_day
            UNION ALL
            SELECT src_ip FROM session_fragments
            WHERE fragment_date BETWEEN :first_day AND :last_day) AS p)
     AS d
JOIN ip_inventory AS i ON i.ip_address = d.src_ip
CROSS JOIN LATERAL (
    SELECT count(*) AS sessions, min(s.first_event_at) AS first_seen,
           max(s.last_event_at) AS last_seen,
           coalesce(sum(CASE WHEN s.asn_number IS NOT NULL
                                  AND s.asn_number IS DISTINCT FROM i.current_asn
                                  AND NOT EXISTS (SELECT 1 FROM asn_inventory AS a
                                                  WHERE a.asn_number = s.asn_number)
                             THEN 1 ELSE 0 END), 0) AS other_asns_missing,
           coalesce(sum(CASE WHEN s.asn_number = i.current_asn THEN 1 ELSE 0 END), 0)
               AS current_asn_sessions
    FROM sessions AS s
    WHERE s.src_ip = i.ip_address
) AS c;
