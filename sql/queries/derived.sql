-- Derived values: recomputed from facts for the keys in stale_*, never incremented.

-- name: claim_stale_ips
INSERT INTO w_ips (ip_address) SELECT ip_address FROM stale_ips WHERE true ON CONFLICT DO NOTHING;

-- name: release_stale_ips
DELETE FROM stale_ips WHERE ip_address IN (SELECT ip_address FROM w_ips);

-- name: mark_asns_of_claimed_ips
INSERT INTO stale_asns (asn_number)
SELECT i.current_asn
FROM ip_inventory AS i
JOIN w_ips AS w ON w.ip_address = i.ip_address
WHERE i.current_asn IS NOT NULL
ON CONFLICT DO NOTHING;

-- name: refresh_ip_counters
-- session_count, first_seen and last_seen of an address: what its sessions say (attack time).
UPDATE ip_inventory SET
    session_count = c.session_count,
    first_seen = c.first_seen,
    last_seen = c.last_seen
FROM (
    SELECT s.src_ip, count(*) AS session_count,
           min(s.first_event_at) AS first_seen, max(s.last_event_at) AS last_seen
    FROM sessions AS s
    JOIN w_ips AS w ON w.ip_address = s.src_ip
    GROUP BY s.src_ip
) AS c
WHERE ip_inventory.ip_address = c.src_ip
  AND (ip_inventory.session_count <> c.session_count
       OR ip_inventory.first_seen IS DISTINCT FROM c.first_seen
       OR ip_inventory.last_seen IS DISTINCT FROM c.last_seen);

-- name: delete_ips_without_sessions
DELETE FROM ip_inventory
WHERE ip_address IN (SELECT ip_address FROM w_ips)
  AND NOT EXISTS (SELECT 1 FROM sessions AS s WHERE s.src_ip = ip_inventory.ip_address);

-- name: mark_days_of_snapshot_changes
-- The day's sessions whose ASN snapshot is about to change: old and new ASN statistics.
INSERT INTO stale_days (stat_date, asn_number)
SELECT DISTINCT :day, asn_number FROM (
    SELECT s.asn_number AS asn_number
    FROM sessions AS s
    LEFT JOIN ip_inventory AS i ON i.ip_address = s.src_ip
    WHERE s.ingest_date = :day AND s.asn_number IS DISTINCT FROM i.current_asn
    UNION
    SELECT i.current_asn
    FROM sessions AS s
    JOIN ip_inventory AS i ON i.ip_address = s.src_ip
    WHERE s.ingest_date = :day AND s.asn_number IS DISTINCT FROM i.current_asn
) AS changed
WHERE asn_number IS NOT NULL
ON CONFLICT DO NOTHING;

-- name: snapshot_session_asns
-- asn_number of the day's sessions := their address's ASN now (the backfill step).
UPDATE sessions SET asn_number = (
    SELECT i.current_asn FROM ip_inventory AS i WHERE i.ip_address = sessions.src_ip
)
WHERE ingest_date = :day
  AND asn_number IS DISTINCT FROM (
    SELECT i.current_asn FROM ip_inventory AS i WHERE i.ip_address = sessions.src_ip
);

-- name: claim_stale_asns
INSERT INTO w_asns (asn_number) SELECT asn_number FROM stale_asns WHERE true ON CONFLICT DO NOTHING;

-- name: release_stale_asns
DELETE FROM stale_asns WHERE asn_number IN (SELECT asn_number FROM w_asns);

-- name: refresh_asn_counters
-- Counters of an ASN: what the addresses currently mapped to it say. Its country, when a City
-- database is configured: the most common country of those addresses.
UPDATE asn_inventory SET
    unique_ip_count = c.unique_ip_count,
    total_session_count = c.total_session_count,
    first_seen = c.first_seen,
    last_seen = c.last_seen,
    organization_country = c.country
FROM (
    SELECT w.asn_number,
           count(i.ip_address) AS unique_ip_count,
           coalesce(sum(i.session_count), 0) AS total_session_count,
           min(i.first_seen) AS first_seen,
           max(i.last_seen) AS last_seen,
           (SELECT m.country_code
              FROM ip_inventory AS m
             WHERE m.current_asn = w.asn_number AND m.country_code IS NOT NULL
             GROUP BY m.country_code
             ORDER BY count(*) DESC, m.country_code
             LIMIT 1) AS country
    FROM w_asns AS w
    LEFT JOIN ip_inventory AS i ON i.current_asn = w.asn_number
    GROUP BY w.asn_number
) AS c
WHERE asn_inventory.asn_number = c.asn_number;

-- name: claim_stale_days
INSERT INTO w_days (stat_date, asn_number)
SELECT stat_date, asn_number FROM stale_days WHERE true
ON CONFLICT DO NOTHING;

-- name: release_stale_days
DELETE FROM stale_days
WHERE EXISTS (
    SELECT 1 FROM w_days AS w
    WHERE w.stat_date = stale_days.stat_date AND w.asn_number = stale_days.asn_number
);

-- name: delete_stale_day_stats
DELETE FROM asn_daily_stats
WHERE EXISTS (
    SELECT 1 FROM w_days AS w
    WHERE w.stat_date = asn_daily_stats.stat_date AND w.asn_number = asn_daily_stats.asn_number
);

-- name: insert_stale_day_stats
-- What the sessions of that day say; an address is new on the first day it has a session.
INSERT INTO asn_daily_stats (stat_date, asn_number, session_count, unique_ip_count, new_ip_count)
SELECT s.ingest_date, s.asn_number, count(*), count(DISTINCT s.src_ip),
       count(DISTINCT CASE WHEN NOT EXISTS (
                               SELECT 1 FROM sessions AS p
                               WHERE p.src_ip = s.src_ip AND p.ingest_date < s.ingest_date)
                           THEN s.src_ip END)
FROM sessions AS s
JOIN w_days AS w ON w.stat_date = s.ingest_date AND w.asn_number = s.asn_number
GROUP BY s.ingest_date, s.asn_number;

-- name: day_statistics
SELECT d.asn_number, a.organization_name, d.session_count, d.unique_ip_count, d.new_ip_count
FROM asn_daily_stats AS d
JOIN asn_inventory AS a ON a.asn_number = d.asn_number
WHERE d.stat_date = :day
ORDER BY d.session_count DESC, d.asn_number;

-- name: day_unattributed_sessions
SELECT count(*) FROM sessions WHERE ingest_date = :day AND asn_number IS NULL;
