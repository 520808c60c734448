-- The job asn_inventory_backfill (asn_pipeline.store.legacy). With a legacy source: the mappings
-- and ASN values read from a cowrieprocessor inventory are in w_legacy_mappings and
-- w_legacy_asns. Without one: the repair recomputes every derived value from the facts.

-- name: create_legacy_asns
-- ASNs a legacy mapping names that this inventory has no row for: ip_asn_history references
-- them. No address maps to them, so their zero counters are exact; names come next.
INSERT INTO asn_inventory (asn_number, updated_at, updated_by_run)
SELECT DISTINCT m.asn_number, :now, :run_id
FROM w_legacy_mappings AS m
WHERE NOT EXISTS (SELECT 1 FROM asn_inventory AS a WHERE a.asn_number = m.asn_number)
ON CONFLICT (asn_number) DO NOTHING;

-- name: legacy_fills
-- What fill_legacy_asns writes, by column and by where the legacy value came from.
SELECT 'organization_name' AS column_name, w.name_from AS source, count(*) AS asns
FROM w_legacy_asns AS w
JOIN asn_inventory AS a ON a.asn_number = w.asn_number
WHERE a.organization_name IS NULL AND w.organization_name IS NOT NULL
GROUP BY w.name_from
UNION ALL
SELECT 'organization_country', w.country_from, count(*)
FROM w_legacy_asns AS w
JOIN asn_inventory AS a ON a.asn_number = w.asn_number
WHERE a.organization_country IS NULL AND w.organization_country IS NOT NULL
GROUP BY w.country_from
UNION ALL
SELECT 'rir_registry', w.registry_from, count(*)
FROM w_legacy_asns AS w
JOIN asn_inventory AS a ON a.asn_number = w.asn_number
WHERE a.rir_registry IS NULL AND w.rir_registry IS NOT NULL
GROUP BY w.registry_from
ORDER BY 1, 2;

-- name: fill_legacy_asns
-- Only what this inventory lacks: a name MaxMind or Team Cymru gave is never replaced, and a
-- later MaxMind or Cymru name replaces a legacy one (inventory.upsert_asns).
UPDATE asn_inventory SET
    organization_name = coalesce(asn_inventory.organization_name, w.organization_name),
    name_source = CASE WHEN asn_inventory.organization_name IS NULL
                            AND w.organization_name IS NOT NULL
                       THEN 'legacy' ELSE asn_inventory.name_source END,
    organization_country = coalesce(asn_inventory.organization_country, w.organization_country),
    rir_registry = coalesce(asn_inventory.rir_registry, w.rir_registry),
    updated_at = :now,
    updated_by_run = :run_id
FROM w_legacy_asns AS w
WHERE asn_inventory.asn_number = w.asn_number
  AND ((asn_inventory.organization_name IS NULL AND w.organization_name IS NOT NULL)
       OR (asn_inventory.organization_country IS NULL AND w.organization_country IS NOT NULL)
       OR (asn_inventory.rir_registry IS NULL AND w.rir_registry IS NOT NULL));

-- name: legacy_asns_without_row
-- ASNs the legacy inventory names but no legacy mapping and no row of this inventory uses.
SELECT count(*)
FROM w_legacy_asns AS w
WHERE NOT EXISTS (SELECT 1 FROM asn_inventory AS a WHERE a.asn_number = w.asn_number);

-- name: legacy_history_changes
SELECT
    coalesce(sum(CASE WHEN h.ip_address IS NULL THEN 1 ELSE 0 END), 0) AS new_rows,
    coalesce(sum(CASE WHEN h.ip_address IS NOT NULL
                           AND (m.first_observed < h.first_observed
                                OR m.last_observed > h.last_observed)
                      THEN 1 ELSE 0 END), 0) AS widened_rows
FROM w_legacy_mappings AS m
LEFT JOIN ip_asn_history AS h
  ON h.ip_address = m.ip_address AND h.asn_number = m.asn_number AND h.source = 'legacy';

-- name: record_legacy_history
-- Source 'legacy', the legacy times; a re-run keeps the earliest first and latest last time.
INSERT INTO ip_asn_history
    (ip_address, asn_number, source, first_observed, last_observed, build_epoch)
SELECT ip_address, asn_number, 'legacy', first_observed, last_observed, NULL
FROM w_legacy_mappings
WHERE true
ON CONFLICT (ip_address, asn_number, source) DO UPDATE SET
    first_observed = CASE WHEN excluded.first_observed < ip_asn_history.first_observed
                          THEN excluded.first_observed ELSE ip_asn_history.first_observed END,
    last_observed = CASE WHEN excluded.last_observed > ip_asn_history.last_observed
                         THEN excluded.last_observed ELSE ip_asn_history.last_observed END
WHERE excluded.first_observed < ip_asn_history.first_observed
   OR excluded.last_observed > ip_asn_history.last_observed;

-- name: legacy_addresses_in_inventory
-- Legacy addresses this inventory also holds, and those of them whose current ASN here is not
-- one the legacy inventory mapped them to (or that have none here).
SELECT
    count(*) AS addresses,
    coalesce(sum(CASE WHEN NOT EXISTS (
                          SELECT 1 FROM w_legacy_mappings AS m
                          WHERE m.ip_address = i.ip_address AND m.asn_number = i.current_asn)
                      THEN 1 ELSE 0 END), 0) AS asn_differs
FROM ip_inventory AS i
WHERE i.ip_address IN (SELECT ip_address FROM w_legacy_mappings);

-- name: capture_ips
INSERT INTO w_repair_ips (ip_address, session_count, first_seen, last_seen)
SELECT ip_address, session_count, first_seen, last_seen FROM ip_inventory;

-- name: capture_asns
INSERT INTO w_repair_asns
    (asn_number, unique_ip_count, total_session_count, first_seen, last_seen,
     organization_country)
SELECT asn_number, unique_ip_count, total_session_count, first_seen, last_seen,
       organization_country
FROM asn_inventory;

-- name: capture_day_stats
INSERT INTO w_repair_day_stats
    (stat_date, asn_number, session_count, unique_ip_count, new_ip_count)
SELECT stat_date, asn_number, session_count, unique_ip_count, new_ip_count
FROM asn_daily_stats;

-- name: restore_referenced_asns
-- Invariant 3: a row for every ASN an address, a session, a history row or a daily statistic
-- references (a restore or a hand edit without foreign keys may have lost some).
INSERT INTO asn_inventory (asn_number, updated_at, updated_by_run)
SELECT r.asn_number, :now, :run_id
FROM (
    SELECT current_asn AS asn_number FROM ip_inventory WHERE current_asn IS NOT NULL
    UNION
    SELECT asn_number FROM sessions WHERE asn_number IS NOT NULL
    UNION
    SELECT asn_number FROM ip_asn_history
    UNION
    SELECT asn_number FROM asn_daily_stats
) AS r
WHERE NOT EXISTS (SELECT 1 FROM asn_inventory AS a WHERE a.asn_number = r.asn_number)
ON CONFLICT (asn_number) DO NOTHING;

-- name: cymru_cache_fills
SELECT
    coalesce(sum(CASE WHEN a.organization_name IS NULL AND n.organization_name IS NOT NULL
                      THEN 1 ELSE 0 END), 0) AS names,
    coalesce(sum(CASE WHEN a.rir_registry IS NULL AND n.rir_registry IS NOT NULL
                      THEN 1 ELSE 0 END), 0) AS registries
FROM asn_inventory AS a
JOIN cymru_asn_names AS n ON n.asn_number = a.asn_number AND n.outcome = 'found';

-- name: fill_from_cymru_cache
-- Names and registries an ASN lacks, from Team Cymru's cached AS-name answers.
UPDATE asn_inventory SET
    organization_name = coalesce(asn_inventory.organization_name, n.organization_name),
    name_source = CASE WHEN asn_inventory.organization_name IS NULL
                            AND n.organization_name IS NOT NULL
                       THEN 'cymru' ELSE asn_inventory.name_source END,
    rir_registry = coalesce(asn_inventory.rir_registry, n.rir_registry),
    updated_at = :now,
    updated_by_run = :run_id
FROM cymru_asn_names AS n
WHERE n.asn_number = asn_inventory.asn_number AND n.outcome = 'found'
  AND ((asn_inventory.organization_name IS NULL AND n.organization_name IS NOT NULL)
       OR (asn_inventory.rir_registry IS NULL AND n.rir_registry IS NOT NULL));

-- name: country_count_corrections
-- asn_country_counts rows that a count of the addresses adds, changes or removes.
SELECT count(*)
FROM asn_country_counts AS c
FULL OUTER JOIN (
    SELECT current_asn AS asn_number, country_code, count(*) AS ip_count
    FROM ip_inventory
    WHERE current_asn IS NOT NULL AND country_code IS NOT NULL
    GROUP BY current_asn, country_code
) AS e ON e.asn_number = c.asn_number AND e.country_code = c.country_code
WHERE c.asn_number IS NULL OR e.asn_number IS NULL OR c.ip_count <> e.ip_count;

-- name: clear_country_counts
DELETE FROM asn_country_counts;

-- name: count_countries
INSERT INTO asn_country_counts (asn_number, country_code, ip_count)
SELECT current_asn, country_code, count(*)
FROM ip_inventory
WHERE current_asn IS NOT NULL AND country_code IS NOT NULL
GROUP BY current_asn, country_code;

-- name: queue_every_ip
INSERT INTO stale_ips (ip_address)
SELECT ip_address FROM ip_inventory WHERE true
ON CONFLICT DO NOTHING;

-- name: queue_every_asn
INSERT INTO stale_asn_deltas
    (asn_number, ip_delta, session_delta, first_seen, last_seen, recompute)
SELECT asn_number, 0, 0, NULL, NULL, 1 FROM asn_inventory WHERE true
ON CONFLICT (asn_number) DO UPDATE SET recompute = 1;

-- name: queue_every_day
-- Every (day, ASN) the sessions say, and every one a statistic row holds (to drop it if the
-- sessions no longer say it).
INSERT INTO stale_days (stat_date, asn_number)
SELECT ingest_date, asn_number FROM sessions WHERE asn_number IS NOT NULL
UNION
SELECT stat_date, asn_number FROM asn_daily_stats WHERE true
ON CONFLICT (stat_date, asn_number) DO UPDATE SET generation = excluded.generation;

-- name: repaired_ips
SELECT
    coalesce(sum(CASE WHEN i.ip_address IS NULL THEN 1 ELSE 0 END), 0) AS dropped,
    coalesce(sum(CASE WHEN i.ip_address IS NOT NULL
                           AND (i.session_count <> b.session_count
                                OR i.first_seen IS DISTINCT FROM b.first_seen
                                OR i.last_seen IS DISTINCT FROM b.last_seen)
                      THEN 1 ELSE 0 END), 0) AS corrected
FROM w_repair_ips AS b
LEFT JOIN ip_inventory AS i ON i.ip_address = b.ip_address;

-- name: repaired_asns
SELECT
    coalesce(sum(CASE WHEN a.unique_ip_count <> b.unique_ip_count
                           OR a.total_session_count <> b.total_session_count
                           OR a.first_seen IS DISTINCT FROM b.first_seen
                           OR a.last_seen IS DISTINCT FROM b.last_seen
                      THEN 1 ELSE 0 END), 0) AS counters_corrected,
    coalesce(sum(CASE WHEN a.organization_country IS DISTINCT FROM b.organization_country
                      THEN 1 ELSE 0 END), 0) AS countries_changed
FROM w_repair_asns AS b
JOIN asn_inventory AS a ON a.asn_number = b.asn_number;

-- name: repaired_day_stats
SELECT
    coalesce(sum(CASE WHEN b.stat_date IS NULL THEN 1 ELSE 0 END), 0) AS added,
    coalesce(sum(CASE WHEN d.stat_date IS NULL THEN 1 ELSE 0 END), 0) AS removed,
    coalesce(sum(CASE WHEN b.stat_date IS NOT NULL AND d.stat_date IS NOT NULL
                           AND (d.session_count <> b.session_count
                                OR d.unique_ip_count <> b.unique_ip_count
                                OR d.new_ip_count <> b.new_ip_count)
                      THEN 1 ELSE 0 END), 0) AS corrected
FROM w_repair_day_stats AS b
FULL OUTER JOIN asn_daily_stats AS d
  ON d.stat_date = b.stat_date AND d.asn_number = b.asn_number;
