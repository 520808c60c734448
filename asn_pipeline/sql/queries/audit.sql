-- Invariant audits of one day, or of the days of a range (the asset checks; first_day to
-- last_day, equal for one day). Each asset's checks read the rows of those days once, in one read
-- transaction: one statement gathers what several checks need.
-- A derived value may lag its facts only while its key is queued in stale_* (another run's write
-- committed after this run's recomputation): an address counter or a daily statistic that
-- differs with its key queued is not a violation. ASN counters are held to more: their queued
-- difference (stale_asn_deltas) applied to them must give the recomputation.

-- name: day_source_files
-- The files the days were read from: status, lines read and lines rejected.
SELECT source_file, status, lines_read, rejected_lines
FROM source_files
WHERE ingest_date BETWEEN :first_day AND :last_day
ORDER BY ingest_date, source_file;

-- name: split_sessions
-- Sessions owned by the days or the day after them whose (sensor, session_id) has a part on the
-- day before their first day (a session owned by that day, or a fragment of one spanning it):
-- one session spanning midnight stored as two rows. The first rows found, and how many there are.
SELECT s.sensor, s.session_id, s.ingest_date, count(*) OVER () AS found
FROM sessions AS s
WHERE s.ingest_date BETWEEN :first_day AND :day_after
  AND (EXISTS (
           SELECT 1 FROM sessions AS p
           WHERE p.sensor = s.sensor AND p.session_id = s.session_id
             AND p.ingest_date = date(s.ingest_date, '-1 day'))
       OR EXISTS (
           SELECT 1 FROM session_fragments AS f
           WHERE f.sensor = s.sensor AND f.session_id = s.session_id
             AND f.fragment_date = date(s.ingest_date, '-1 day')))
ORDER BY s.ingest_date, s.sensor, s.session_id
LIMIT :examples;

-- name: day_address_audit
-- One row per address of the days' sessions and fragments that has an ip_inventory row: what the address
-- checks look at. counters_differ: session_count / first_seen / last_seen differ from what its
-- sessions say; queued: it is in stale_ips; asn_missing: its current_asn has no asn_inventory
-- row; session_asns_missing: its sessions whose asn_number has none. A session's ASN is nearly
-- always its address's current one, whose row is looked up once per address: asn_inventory is
-- probed per session only for the others. Grouped by the address alone (ip_inventory's key).
SELECT i.ip_address, i.ip_class, i.asn_source, i.current_asn, i.build_epoch,
       CASE WHEN i.session_count <> count(s.src_ip)
                 OR i.first_seen IS DISTINCT FROM min(s.first_event_at)
                 OR i.last_seen IS DISTINCT FROM max(s.last_event_at)
            THEN 1 ELSE 0 END AS counters_differ,
       CASE WHEN EXISTS (SELECT 1 FROM stale_ips AS q WHERE q.ip_address = i.ip_address)
            THEN 1 ELSE 0 END AS queued,
       CASE WHEN i.current_asn IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM asn_inventory AS a
                                 WHERE a.asn_number = i.current_asn)
            THEN 1 ELSE 0 END AS asn_missing,
       sum(CASE WHEN s.asn_number IS NOT NULL AND s.asn_number IS DISTINCT FROM i.current_asn
                     AND NOT EXISTS (SELECT 1 FROM asn_inventory AS a
                                     WHERE a.asn_number = s.asn_number)
                THEN 1 ELSE 0 END)
       + CASE WHEN i.current_asn IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM asn_inventory AS a
                                   WHERE a.asn_number = i.current_asn)
              THEN sum(CASE WHEN s.asn_number = i.current_asn THEN 1 ELSE 0 END)
              ELSE 0 END AS session_asns_missing
FROM (SELECT src_ip FROM sessions WHERE ingest_date BETWEEN :first_day AND :last_day
      UNION
      SELECT src_ip FROM session_fragments WHERE fragment_date BETWEEN :first_day AND :last_day)
     AS d
CROSS JOIN ip_inventory AS i
LEFT JOIN sessions AS s ON s.src_ip = i.ip_address
WHERE i.ip_address = d.src_ip
GROUP BY i.ip_address;

-- name: asn_counter_audit
-- The ASNs of the list asns whose counters, with their queued difference applied as the next drain
-- applies it, differ from a recomputation over all their addresses. Where the drain recomputes
-- first_seen/last_seen (recompute = 1), only the counts are compared.
WITH expected AS (
    SELECT i.current_asn AS asn_number, count(*) AS n, sum(i.session_count) AS s,
           min(i.first_seen) AS f, max(i.last_seen) AS l
    FROM ip_inventory AS i
    WHERE i.current_asn IN :asns
    GROUP BY i.current_asn
)
SELECT a.asn_number
FROM asn_inventory AS a
LEFT JOIN expected AS e ON e.asn_number = a.asn_number
LEFT JOIN stale_asn_deltas AS q ON q.asn_number = a.asn_number
WHERE a.asn_number IN :asns
  AND (a.unique_ip_count + coalesce(q.ip_delta, 0) <> coalesce(e.n, 0)
       OR a.total_session_count + coalesce(q.session_delta, 0) <> coalesce(e.s, 0)
       OR (coalesce(q.recompute, 0) = 0
           AND ((CASE WHEN q.first_seen IS NULL THEN a.first_seen
                      WHEN a.first_seen IS NULL OR q.first_seen < a.first_seen THEN q.first_seen
                      ELSE a.first_seen END) IS DISTINCT FROM e.f
                OR (CASE WHEN q.last_seen IS NULL THEN a.last_seen
                         WHEN a.last_seen IS NULL OR q.last_seen > a.last_seen THEN q.last_seen
                         ELSE a.last_seen END) IS DISTINCT FROM e.l)))
ORDER BY a.asn_number;

-- name: day_statistics_mismatches
-- asn_daily_stats rows of the days that differ from what the days' sessions say, missing and
-- extra rows included, unless (day, ASN) is queued in stale_days. Both sides hold one row per
-- key: a key with one row, or two that differ, is a mismatch. (A FULL OUTER JOIN of the two
-- has no index on SQLite, which then compares every row of one with every row of the other.)
WITH per_address AS (
    SELECT s.ingest_date, s.asn_number, s.src_ip, count(*) AS sessions
    FROM sessions AS s
    WHERE s.ingest_date BETWEEN :first_day AND :last_day AND s.asn_number IS NOT NULL
    GROUP BY s.ingest_date, s.src_ip, s.asn_number  -- sessions_day_ip's order, then the ASN
), both_sides AS (
    SELECT a.ingest_date AS stat_date, a.asn_number, sum(a.sessions) AS sc, count(*) AS uc,
           sum(CASE WHEN NOT EXISTS (
                       SELECT 1 FROM sessions AS p
                       WHERE p.src_ip = a.src_ip AND p.ingest_date < a.ingest_date)
                   THEN 1 ELSE 0 END) AS nc
    FROM per_address AS a
    GROUP BY a.ingest_date, a.asn_number
    UNION ALL
    SELECT stat_date, asn_number, session_count, unique_ip_count, new_ip_count
    FROM asn_daily_stats
    WHERE stat_date BETWEEN :first_day AND :last_day
), differing AS (
    SELECT stat_date, asn_number
    FROM both_sides
    GROUP BY stat_date, asn_number
    HAVING count(*) <> 2 OR min(sc) <> max(sc) OR min(uc) <> max(uc) OR min(nc) <> max(nc)
)
SELECT count(*)
FROM differing AS d
WHERE NOT EXISTS (
    SELECT 1 FROM stale_days AS q
    WHERE q.stat_date = d.stat_date AND q.asn_number = d.asn_number);

-- name: pending_stale_keys
SELECT (SELECT count(*) FROM stale_ips) + (SELECT count(*) FROM stale_asn_deltas)
     + (SELECT count(*) FROM stale_days);

-- name: dangling_asn_references
-- current_asn and sessions.asn_number values of the whole inventory missing from asn_inventory.
SELECT
    (SELECT count(*) FROM ip_inventory AS i
      WHERE i.current_asn IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM asn_inventory AS a WHERE a.asn_number = i.current_asn))
  + (SELECT count(*) FROM sessions AS s
      WHERE s.asn_number IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM asn_inventory AS a WHERE a.asn_number = s.asn_number));
