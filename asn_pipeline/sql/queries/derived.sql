-- Derived values. Address counters and daily statistics are recomputed from facts for the keys in
-- stale_ips / stale_days. ASN counters are sums and extremes over addresses: each write that
-- changes addresses (the set in w_ips) queues the exact difference it makes per ASN in
-- stale_asn_deltas (rows after minus rows before), so refreshing an ASN costs what changed, not
-- how many addresses it has; where a difference cannot give a min/max, the ASN is recomputed.

-- name: claim_stale_ips
INSERT INTO w_ips (ip_address) SELECT ip_address FROM stale_ips WHERE true ON CONFLICT DO NOTHING;

-- name: release_stale_ips
DELETE FROM stale_ips WHERE ip_address IN (SELECT ip_address FROM w_ips);

-- name: capture_ip_before
-- The touched addresses' rows before the write.
INSERT INTO w_ip_before
    (ip_address, current_asn, session_count, first_seen, last_seen, country_code)
SELECT i.ip_address, i.current_asn, i.session_count, i.first_seen, i.last_seen, i.country_code
FROM w_ips AS t
CROSS JOIN ip_inventory AS i
WHERE i.ip_address = t.ip_address;

-- name: collect_ip_counters
-- session_count, first_seen and last_seen of the touched addresses: what their sessions say
-- (attack time). Addresses without sessions have no row here.
INSERT INTO w_ip_counters (ip_address, session_count, first_seen, last_seen)
SELECT s.src_ip, count(*), min(s.first_event_at), max(s.last_event_at)
FROM w_ips AS w
CROSS JOIN sessions AS s
WHERE s.src_ip = w.ip_address
GROUP BY s.src_ip;

-- name: refresh_ip_counters
-- Rows whose counters differ from what their sessions say (an address inserted by this write
-- already got them with its row). The rows are found from the work set: SQLite plans
-- `UPDATE ... FROM` as a scan of the whole inventory.
UPDATE ip_inventory SET (session_count, first_seen, last_seen) = (
    SELECT c.session_count, c.first_seen, c.last_seen
    FROM w_ip_counters AS c
    WHERE c.ip_address = ip_inventory.ip_address
)
WHERE ip_address IN (
    SELECT c.ip_address
    FROM w_ip_counters AS c
    CROSS JOIN ip_inventory AS i
    WHERE i.ip_address = c.ip_address
      AND (i.session_count <> c.session_count
           OR i.first_seen IS DISTINCT FROM c.first_seen
           OR i.last_seen IS DISTINCT FROM c.last_seen)
);

-- name: delete_ips_without_sessions
DELETE FROM ip_inventory
WHERE ip_address IN (
    SELECT w.ip_address FROM w_ips AS w
    WHERE NOT EXISTS (SELECT 1 FROM w_ip_counters AS c WHERE c.ip_address = w.ip_address)
);

-- name: queue_asn_deltas
-- Per ASN: +1 and the counters of each touched address now in it, -1 and the counters of each
-- touched address that was in it. A removed row that may have held the ASN's first_seen or
-- last_seen (its value is at or beyond the ASN's, and the address left or moved inwards) makes
-- the ASN recompute those from its addresses.
INSERT INTO stale_asn_deltas
    (asn_number, ip_delta, session_delta, first_seen, last_seen, recompute)
SELECT asn_number, sum(ip_delta), sum(session_delta), min(first_seen), max(last_seen),
       max(recompute)
FROM (
    SELECT a.current_asn AS asn_number, 1 AS ip_delta, a.session_count AS session_delta,
           a.first_seen AS first_seen, a.last_seen AS last_seen, 0 AS recompute
    FROM w_ips AS t
    CROSS JOIN ip_inventory AS a
    WHERE a.ip_address = t.ip_address AND a.current_asn IS NOT NULL
    UNION ALL
    SELECT b.current_asn, -1, -b.session_count, NULL, NULL,
           CASE WHEN (b.first_seen IS NOT NULL
                      AND (n.first_seen IS NULL OR b.first_seen <= n.first_seen)
                      AND (a.current_asn IS DISTINCT FROM b.current_asn
                           OR a.first_seen IS NULL OR a.first_seen > b.first_seen))
                  OR (b.last_seen IS NOT NULL
                      AND (n.last_seen IS NULL OR b.last_seen >= n.last_seen)
                      AND (a.current_asn IS DISTINCT FROM b.current_asn
                           OR a.last_seen IS NULL OR a.last_seen < b.last_seen))
                THEN 1 ELSE 0 END
    FROM w_ip_before AS b
    JOIN asn_inventory AS n ON n.asn_number = b.current_asn
    LEFT JOIN ip_inventory AS a ON a.ip_address = b.ip_address
    WHERE b.current_asn IS NOT NULL
) AS d
GROUP BY asn_number
ON CONFLICT (asn_number) DO UPDATE SET
    ip_delta = stale_asn_deltas.ip_delta + excluded.ip_delta,
    session_delta = stale_asn_deltas.session_delta + excluded.session_delta,
    first_seen = CASE WHEN excluded.first_seen IS NULL THEN stale_asn_deltas.first_seen
                      WHEN stale_asn_deltas.first_seen IS NULL
                        OR excluded.first_seen < stale_asn_deltas.first_seen
                      THEN excluded.first_seen ELSE stale_asn_deltas.first_seen END,
    last_seen = CASE WHEN excluded.last_seen IS NULL THEN stale_asn_deltas.last_seen
                     WHEN stale_asn_deltas.last_seen IS NULL
                       OR excluded.last_seen > stale_asn_deltas.last_seen
                     THEN excluded.last_seen ELSE stale_asn_deltas.last_seen END,
    recompute = CASE WHEN excluded.recompute > stale_asn_deltas.recompute
                     THEN excluded.recompute ELSE stale_asn_deltas.recompute END;

-- name: count_asn_countries
INSERT INTO asn_country_counts (asn_number, country_code, ip_count)
SELECT asn_number, country_code, sum(delta)
FROM (
    SELECT a.current_asn AS asn_number, a.country_code AS country_code, 1 AS delta
    FROM w_ips AS t
    CROSS JOIN ip_inventory AS a
    WHERE a.ip_address = t.ip_address
      AND a.current_asn IS NOT NULL AND a.country_code IS NOT NULL
    UNION ALL
    SELECT current_asn, country_code, -1
    FROM w_ip_before
    WHERE current_asn IS NOT NULL AND country_code IS NOT NULL
) AS d
GROUP BY asn_number, country_code
ON CONFLICT (asn_number, country_code) DO UPDATE SET
    ip_count = asn_country_counts.ip_count + excluded.ip_count;

-- name: forget_empty_country_counts
DELETE FROM asn_country_counts
WHERE ip_count = 0
  AND asn_number IN (SELECT current_asn FROM w_ip_before WHERE country_code IS NOT NULL);

-- name: mark_days_of_snapshot_changes
-- The sessions whose ASN snapshot is about to change: old and new ASN statistics of their day.
INSERT INTO stale_days (stat_date, asn_number)
SELECT DISTINCT ingest_date, asn_number FROM (
    SELECT ingest_date, old_asn AS asn_number FROM w_snapshot
    UNION
    SELECT ingest_date, new_asn FROM w_snapshot
) AS changed
WHERE asn_number IS NOT NULL
ON CONFLICT (stat_date, asn_number) DO UPDATE SET generation = excluded.generation;

-- name: collect_snapshot_changes
-- The sessions of a day (or of the days of a range) whose asn_number differs from their
-- address's ASN now.
INSERT INTO w_snapshot (sensor, session_id, ingest_date, src_ip, old_asn, new_asn)
SELECT s.sensor, s.session_id, s.ingest_date, s.src_ip, s.asn_number, i.current_asn
FROM sessions AS s
LEFT JOIN ip_inventory AS i ON i.ip_address = s.src_ip
WHERE s.ingest_date BETWEEN :first_day AND :last_day
  AND s.asn_number IS DISTINCT FROM i.current_asn;

-- name: snapshot_session_asns
-- asn_number of the days' sessions := their address's ASN now (the backfill step), for every
-- address with a changed session. Reached by (day, address) through sessions_day_ip, in the
-- order the day's rows lie in the table (insert_merged_sessions); one probe of the session key
-- per row would visit them at random.
UPDATE sessions SET asn_number = (
    SELECT i.current_asn FROM ip_inventory AS i WHERE i.ip_address = sessions.src_ip
)
WHERE ingest_date BETWEEN :first_day AND :last_day
  AND src_ip IN (SELECT src_ip FROM w_snapshot);

-- name: claim_asn_deltas
INSERT INTO w_asn_deltas
    (asn_number, ip_delta, session_delta, first_seen, last_seen, recompute)
SELECT asn_number, ip_delta, session_delta, first_seen, last_seen, recompute
FROM stale_asn_deltas;

-- name: release_asn_deltas
DELETE FROM stale_asn_deltas WHERE asn_number IN (
    SELECT asn_number FROM w_asn_deltas UNION SELECT asn_number FROM w_cymru_names
);

-- name: apply_asn_deltas
UPDATE asn_inventory SET
    unique_ip_count = asn_inventory.unique_ip_count + d.ip_delta,
    total_session_count = asn_inventory.total_session_count + d.session_delta,
    first_seen = CASE WHEN d.first_seen IS NULL THEN asn_inventory.first_seen
                      WHEN asn_inventory.first_seen IS NULL OR d.first_seen < asn_inventory.first_seen
                      THEN d.first_seen ELSE asn_inventory.first_seen END,
    last_seen = CASE WHEN d.last_seen IS NULL THEN asn_inventory.last_seen
                     WHEN asn_inventory.last_seen IS NULL OR d.last_seen > asn_inventory.last_seen
                     THEN d.last_seen ELSE asn_inventory.last_seen END
FROM w_asn_deltas AS d
WHERE asn_inventory.asn_number = d.asn_number AND d.recompute = 0;

-- name: recompute_asn_counters
-- Counters of an ASN from all the addresses currently mapped to it.
UPDATE asn_inventory SET
    unique_ip_count = c.unique_ip_count,
    total_session_count = c.total_session_count,
    first_seen = c.first_seen,
    last_seen = c.last_seen
FROM (
    SELECT w.asn_number,
           count(i.ip_address) AS unique_ip_count,
           coalesce(sum(i.session_count), 0) AS total_session_count,
           min(i.first_seen) AS first_seen,
           max(i.last_seen) AS last_seen
    FROM w_asn_deltas AS w
    LEFT JOIN ip_inventory AS i ON i.current_asn = w.asn_number
    WHERE w.recompute = 1
    GROUP BY w.asn_number
) AS c
WHERE asn_inventory.asn_number = c.asn_number;

-- name: refresh_asn_countries
-- Its country: the most common country of its addresses when a City database gives them one,
-- else the country of its Team Cymru AS-name record; for the ASNs whose addresses changed and
-- those that got a Cymru AS name in this transaction.
UPDATE asn_inventory SET organization_country = coalesce(
    (SELECT c.country_code
     FROM asn_country_counts AS c
     WHERE c.asn_number = asn_inventory.asn_number AND c.ip_count > 0
     ORDER BY c.ip_count DESC, c.country_code
     LIMIT 1),
    (SELECT n.organization_country
     FROM cymru_asn_names AS n
     WHERE n.asn_number = asn_inventory.asn_number AND n.outcome = 'found')
)
WHERE asn_number IN (
    SELECT asn_number FROM w_asn_deltas UNION SELECT asn_number FROM w_cymru_names
);

-- name: forget_outdated_days
-- Under the write lock, the statistics computed before it stand for the keys still queued with
-- the same generation: a write that changed a key's sessions meanwhile queued it again, with a
-- new generation, and a drain that wrote it meanwhile released it.
DELETE FROM w_days
WHERE NOT EXISTS (
    SELECT 1 FROM stale_days AS q
    WHERE q.stat_date = w_days.stat_date AND q.asn_number = w_days.asn_number
      AND q.generation = w_days.generation
);

-- name: forget_outdated_day_stats
-- ... and their figures with them.
DELETE FROM w_day_stats
WHERE NOT EXISTS (
    SELECT 1 FROM w_days AS w
    WHERE w.stat_date = w_day_stats.stat_date AND w.asn_number = w_day_stats.asn_number
);

-- name: claim_stale_days
-- The (day, ASN) keys queued now, each with the generation that queued it last: before the write
-- lock (compute_queued_statistics), and under it every key, where those computed before the lock
-- and still standing are there already.
INSERT INTO w_days (stat_date, asn_number, generation, computed)
SELECT stat_date, asn_number, generation, 0 FROM stale_days WHERE true
ON CONFLICT DO NOTHING;

-- name: claimed_days
SELECT count(*) FROM w_days;

-- name: claimed_dates
SELECT DISTINCT stat_date FROM w_days ORDER BY stat_date;

-- name: release_stale_days
DELETE FROM stale_days
WHERE EXISTS (
    SELECT 1 FROM w_days AS w
    WHERE w.stat_date = stale_days.stat_date AND w.asn_number = stale_days.asn_number
);

-- name: delete_stale_day_stats
-- By key (an EXISTS here would scan every day's statistics on SQLite).
DELETE FROM asn_daily_stats
WHERE (stat_date, asn_number) IN (SELECT stat_date, asn_number FROM w_days);

-- name: compute_day_stats
-- The statistics of the claimed keys not computed yet, from what the sessions of that day say;
-- an address is new on the first day it has a session. Sessions are first counted per address,
-- so the search for an earlier session runs once per address, not once per session. A key whose
-- day has no session of its ASN left gets no row.
INSERT INTO w_day_stats (stat_date, asn_number, session_count, unique_ip_count, new_ip_count)
SELECT a.ingest_date, a.asn_number, sum(a.sessions), count(*),
       sum(CASE WHEN NOT EXISTS (
                   SELECT 1 FROM sessions AS p
                   WHERE p.src_ip = a.src_ip AND p.ingest_date < a.ingest_date)
               THEN 1 ELSE 0 END)
FROM (
    SELECT s.ingest_date, s.asn_number, s.src_ip, count(*) AS sessions
    -- Each stale day's sessions are read once, by date (CROSS JOIN keeps that order on SQLite).
    FROM sessions AS s
    CROSS JOIN w_days AS w
    WHERE s.ingest_date IN (SELECT stat_date FROM w_days WHERE computed = 0)
      AND w.stat_date = s.ingest_date AND w.asn_number = s.asn_number AND w.computed = 0
    GROUP BY s.ingest_date, s.asn_number, s.src_ip
) AS a
GROUP BY a.ingest_date, a.asn_number;

-- name: mark_days_computed
UPDATE w_days SET computed = 1 WHERE computed = 0;

-- name: insert_stale_day_stats
INSERT INTO asn_daily_stats (stat_date, asn_number, session_count, unique_ip_count, new_ip_count)
SELECT stat_date, asn_number, session_count, unique_ip_count, new_ip_count FROM w_day_stats;

-- name: day_statistics
SELECT d.asn_number, a.organization_name, d.session_count, d.unique_ip_count, d.new_ip_count
FROM asn_daily_stats AS d
JOIN asn_inventory AS a ON a.asn_number = d.asn_number
WHERE d.stat_date = :day
ORDER BY d.session_count DESC, d.asn_number;

-- name: day_unattributed_sessions
SELECT count(*) FROM sessions WHERE ingest_date = :day AND asn_number IS NULL;

-- name: day_statistics_with_previous_day
-- The day's rows, each with the same ASN's sessions of the day before (NULL: none that day).
SELECT d.asn_number, a.organization_name, d.session_count, d.unique_ip_count, d.new_ip_count,
       p.session_count AS previous_session_count
FROM asn_daily_stats AS d
JOIN asn_inventory AS a ON a.asn_number = d.asn_number
LEFT JOIN asn_daily_stats AS p ON p.stat_date = :previous_day AND p.asn_number = d.asn_number
WHERE d.stat_date = :day
ORDER BY d.session_count DESC, d.asn_number;

-- name: day_session_totals
SELECT count(*) AS sessions,
       count(DISTINCT src_ip) AS unique_addresses,
       coalesce(sum(CASE WHEN asn_number IS NULL THEN 1 ELSE 0 END), 0) AS unattributed
FROM sessions
WHERE ingest_date = :day;
