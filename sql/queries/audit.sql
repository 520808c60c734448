-- Invariant audits for one day, or the days of a range (asset checks; the range is :first_day
-- to :last_day, equal for one day). Each returns the number of offending rows.
-- A derived value may lag its facts only while its key is queued in stale_* (another run's write
-- committed after this run's recomputation); a mismatch with no queued key is a violation.

-- name: ip_counter_mismatches
-- ip_inventory.session_count / first_seen / last_seen against the days' addresses' sessions.
SELECT count(*) FROM (
    SELECT i.ip_address
    FROM (SELECT DISTINCT src_ip FROM session_fragments WHERE fragment_date BETWEEN :first_day AND :last_day) AS d
    CROSS JOIN ip_inventory AS i
    LEFT JOIN sessions AS s ON s.src_ip = i.ip_address
    WHERE i.ip_address = d.src_ip
      AND NOT EXISTS (SELECT 1 FROM stale_ips AS q WHERE q.ip_address = i.ip_address)
    GROUP BY i.ip_address, i.session_count, i.first_seen, i.last_seen
    HAVING i.session_count <> count(s.src_ip)
        OR i.first_seen IS DISTINCT FROM min(s.first_event_at)
        OR i.last_seen IS DISTINCT FROM max(s.last_event_at)
) AS wrong;

-- name: asn_counter_mismatches
-- asn_inventory counters of the ASNs the days' addresses map to, against ip_inventory.
WITH day_asns AS (
    SELECT DISTINCT i.current_asn AS asn_number
    FROM ip_inventory AS i
    JOIN (SELECT DISTINCT src_ip FROM session_fragments WHERE fragment_date BETWEEN :first_day AND :last_day) AS d
      ON d.src_ip = i.ip_address
    WHERE i.current_asn IS NOT NULL
), expected AS (
    SELECT i.current_asn AS asn_number, count(*) AS n, sum(i.session_count) AS s,
           min(i.first_seen) AS f, max(i.last_seen) AS l
    FROM ip_inventory AS i JOIN day_asns AS t ON t.asn_number = i.current_asn
    GROUP BY i.current_asn
)
SELECT count(*)
FROM asn_inventory AS a
JOIN day_asns AS t ON t.asn_number = a.asn_number
LEFT JOIN expected AS e ON e.asn_number = a.asn_number
WHERE (a.unique_ip_count <> coalesce(e.n, 0)
       OR a.total_session_count <> coalesce(e.s, 0)
       OR a.first_seen IS DISTINCT FROM e.f
       OR a.last_seen IS DISTINCT FROM e.l)
  AND NOT EXISTS (SELECT 1 FROM stale_asn_deltas AS q WHERE q.asn_number = a.asn_number);

-- name: day_statistics_mismatches
WITH per_address AS (
    SELECT s.ingest_date, s.asn_number, s.src_ip, count(*) AS sessions
    FROM sessions AS s
    WHERE s.ingest_date BETWEEN :first_day AND :last_day AND s.asn_number IS NOT NULL
    GROUP BY s.ingest_date, s.asn_number, s.src_ip
), expected AS (
    SELECT a.ingest_date AS stat_date, a.asn_number, sum(a.sessions) AS sc, count(*) AS uc,
           sum(CASE WHEN NOT EXISTS (
                       SELECT 1 FROM sessions AS p
                       WHERE p.src_ip = a.src_ip AND p.ingest_date < a.ingest_date)
                   THEN 1 ELSE 0 END) AS nc
    FROM per_address AS a
    GROUP BY a.ingest_date, a.asn_number
), actual AS (
    SELECT stat_date, asn_number, session_count AS sc, unique_ip_count AS uc,
           new_ip_count AS nc
    FROM asn_daily_stats
    WHERE stat_date BETWEEN :first_day AND :last_day
)
SELECT count(*)
FROM expected AS e
FULL OUTER JOIN actual AS a ON a.stat_date = e.stat_date AND a.asn_number = e.asn_number
WHERE (e.asn_number IS NULL OR a.asn_number IS NULL
       OR e.sc <> a.sc OR e.uc <> a.uc OR e.nc <> a.nc)
  AND NOT EXISTS (
      SELECT 1 FROM stale_days AS q
      WHERE q.stat_date = coalesce(e.stat_date, a.stat_date)
        AND q.asn_number = coalesce(e.asn_number, a.asn_number));

-- name: dangling_asn_references
SELECT
    (SELECT count(*) FROM ip_inventory AS i
      WHERE i.current_asn IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM asn_inventory AS a WHERE a.asn_number = i.current_asn))
  + (SELECT count(*) FROM sessions AS s
      WHERE s.asn_number IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM asn_inventory AS a WHERE a.asn_number = s.asn_number));

-- name: day_dangling_asn_references
-- The same for the days' sessions and addresses only: the check of one partition costs a day.
SELECT
    (SELECT count(*)
       FROM (SELECT DISTINCT src_ip FROM session_fragments WHERE fragment_date BETWEEN :first_day AND :last_day) AS d
       CROSS JOIN ip_inventory AS i
      WHERE i.ip_address = d.src_ip AND i.current_asn IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM asn_inventory AS a WHERE a.asn_number = i.current_asn))
  + (SELECT count(*) FROM sessions AS s
      WHERE s.ingest_date BETWEEN :first_day AND :last_day AND s.asn_number IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM asn_inventory AS a WHERE a.asn_number = s.asn_number));

-- name: day_address_classes
SELECT i.ip_address, i.ip_class, i.asn_source, i.current_asn
FROM (SELECT DISTINCT src_ip FROM session_fragments WHERE fragment_date BETWEEN :first_day AND :last_day) AS d
CROSS JOIN ip_inventory AS i
WHERE i.ip_address = d.src_ip;

-- name: pending_stale_keys
SELECT (SELECT count(*) FROM stale_ips) + (SELECT count(*) FROM stale_asn_deltas)
     + (SELECT count(*) FROM stale_days);

-- name: day_damaged_source_files
SELECT source_file, status FROM source_files
WHERE ingest_date BETWEEN :first_day AND :last_day AND status <> 'ok'
ORDER BY source_file;
