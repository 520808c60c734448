-- Upserting one day's lookups (assets ip_inventory and asn_inventory). The lookups are in w_lookups.

-- name: day_addresses
SELECT DISTINCT src_ip FROM session_fragments WHERE fragment_date = :day ORDER BY src_ip;

-- name: collect_touched_ips
-- The addresses this write may change: the looked-up ones and any queued for a counter refresh.
INSERT INTO w_ips (ip_address)
SELECT ip_address FROM w_lookups
UNION
SELECT ip_address FROM stale_ips;

-- name: upsert_asns
-- ASN rows first, so every current_asn written below already exists (referential integrity).
INSERT INTO asn_inventory (asn_number, organization_name, name_source, updated_at, updated_by_run)
SELECT asn_number, max(organization_name), min(asn_source), :now, :run_id
FROM w_lookups
WHERE asn_number IS NOT NULL
GROUP BY asn_number
ON CONFLICT (asn_number) DO UPDATE SET
    organization_name = excluded.organization_name,
    name_source = excluded.name_source,
    updated_at = excluded.updated_at,
    updated_by_run = excluded.updated_by_run
WHERE excluded.organization_name IS NOT NULL
  AND excluded.organization_name IS DISTINCT FROM asn_inventory.organization_name;

-- name: upsert_ips
-- Every looked-up address gets its counters (w_ip_counters) in this one write, a new one with its
-- row and an existing one in its update; refresh_ip_counters then only sets those of the other
-- touched addresses (queued in stale_ips by another day's write).
INSERT INTO ip_inventory
    (ip_address, ip_version, ip_class, current_asn, asn_source, asn_network, country_code,
     build_epoch, enriched_at, enriched_by_run, enrichment, session_count, first_seen, last_seen)
SELECT l.ip_address, l.ip_version, l.ip_class, l.asn_number, l.asn_source, l.asn_network,
       l.country_code, l.build_epoch, :now, :run_id, l.enrichment,
       coalesce(c.session_count, 0), c.first_seen, c.last_seen
FROM w_lookups AS l
LEFT JOIN w_ip_counters AS c ON c.ip_address = l.ip_address
WHERE true
ON CONFLICT (ip_address) DO UPDATE SET
    ip_version = excluded.ip_version,
    ip_class = excluded.ip_class,
    current_asn = excluded.current_asn,
    asn_source = excluded.asn_source,
    asn_network = excluded.asn_network,
    country_code = excluded.country_code,
    build_epoch = excluded.build_epoch,
    enriched_at = excluded.enriched_at,
    enriched_by_run = excluded.enriched_by_run,
    enrichment = excluded.enrichment,
    session_count = excluded.session_count,
    first_seen = excluded.first_seen,
    last_seen = excluded.last_seen;

-- name: record_asn_history
INSERT INTO ip_asn_history
    (ip_address, asn_number, source, first_observed, last_observed, build_epoch)
SELECT ip_address, asn_number, asn_source, :now, :now, build_epoch
FROM w_lookups
WHERE asn_number IS NOT NULL
ON CONFLICT (ip_address, asn_number, source) DO UPDATE SET
    last_observed = excluded.last_observed,
    build_epoch = excluded.build_epoch;

-- name: lookup_summary
SELECT
    count(*) AS addresses,
    sum(CASE WHEN i.ip_address IS NULL THEN 1 ELSE 0 END) AS new_addresses,
    sum(CASE WHEN i.current_asn IS DISTINCT FROM l.asn_number AND i.ip_address IS NOT NULL
             THEN 1 ELSE 0 END) AS asn_changes
FROM w_lookups AS l
LEFT JOIN ip_inventory AS i ON i.ip_address = l.ip_address;

-- name: new_asns
SELECT count(DISTINCT l.asn_number) AS new_asns
FROM w_lookups AS l
LEFT JOIN asn_inventory AS a ON a.asn_number = l.asn_number
WHERE l.asn_number IS NOT NULL AND a.asn_number IS NULL;

-- name: address_count
SELECT count(*) FROM ip_inventory;

-- name: day_pending
SELECT
    (SELECT count(*)
       FROM (SELECT DISTINCT src_ip FROM session_fragments WHERE fragment_date = :day) AS d
      WHERE NOT EXISTS (SELECT 1 FROM ip_inventory AS i WHERE i.ip_address = d.src_ip))
        AS addresses_awaiting_lookup,
    (SELECT count(*)
       FROM sessions AS s
       LEFT JOIN ip_inventory AS i ON i.ip_address = s.src_ip
      WHERE s.ingest_date = :day AND s.asn_number IS DISTINCT FROM i.current_asn)
        AS sessions_awaiting_asn_snapshot;
