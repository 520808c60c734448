-- Upserting one day's lookups (assets ip_inventory and asn_inventory). The lookups are in w_lookups.

-- name: day_addresses
-- The distinct source addresses of a day, or of the days of a range: of the sessions they own
-- and of the parts of sessions spanning days (a session owned by an earlier day).
SELECT src_ip FROM sessions WHERE ingest_date BETWEEN :first_day AND :last_day
UNION
SELECT src_ip FROM session_fragments WHERE fragment_date BETWEEN :first_day AND :last_day
ORDER BY src_ip;

-- name: collect_touched_ips
-- The addresses this write may change: the looked-up ones and any queued for a counter refresh,
-- besides those of the sessions the day's write in the same transaction touched (already here).
INSERT INTO w_ips (ip_address)
SELECT ip_address FROM w_lookups
UNION
SELECT ip_address FROM stale_ips WHERE true
ON CONFLICT DO NOTHING;

-- name: upsert_asns
-- ASN rows first, so every current_asn written below already exists (referential integrity).
-- The name: MaxMind's where an address of the ASN has one from MaxMind, else Team Cymru's AS name
-- (cymru_asn_names, written just before); a Cymru name never replaces a MaxMind one. The registry
-- comes from Team Cymru only (MaxMind has none).
INSERT INTO asn_inventory
    (asn_number, organization_name, name_source, rir_registry, updated_at, updated_by_run)
SELECT a.asn_number,
       coalesce(a.maxmind_name, n.organization_name),
       CASE WHEN a.maxmind_name IS NOT NULL THEN 'maxmind'
            WHEN n.organization_name IS NOT NULL THEN 'cymru' END,
       n.rir_registry, :now, :run_id
FROM (
    SELECT asn_number, max(CASE WHEN asn_source = 'maxmind' THEN organization_name END)
                           AS maxmind_name
    FROM w_lookups
    WHERE asn_number IS NOT NULL
    GROUP BY asn_number
) AS a
LEFT JOIN cymru_asn_names AS n ON n.asn_number = a.asn_number AND n.outcome = 'found'
WHERE true
ON CONFLICT (asn_number) DO UPDATE SET
    organization_name = CASE
        WHEN asn_inventory.name_source = 'maxmind' AND asn_inventory.organization_name IS NOT NULL
             AND excluded.name_source IS DISTINCT FROM 'maxmind'
        THEN asn_inventory.organization_name
        ELSE coalesce(excluded.organization_name, asn_inventory.organization_name) END,
    name_source = CASE
        WHEN asn_inventory.name_source = 'maxmind' AND asn_inventory.organization_name IS NOT NULL
             AND excluded.name_source IS DISTINCT FROM 'maxmind'
        THEN asn_inventory.name_source
        WHEN excluded.organization_name IS NULL THEN asn_inventory.name_source
        ELSE excluded.name_source END,
    rir_registry = coalesce(excluded.rir_registry, asn_inventory.rir_registry),
    updated_at = excluded.updated_at,
    updated_by_run = excluded.updated_by_run
WHERE (excluded.organization_name IS NOT NULL
       AND (excluded.name_source = 'maxmind' OR asn_inventory.organization_name IS NULL
            OR asn_inventory.name_source IS DISTINCT FROM 'maxmind')
       AND (excluded.organization_name IS DISTINCT FROM asn_inventory.organization_name
            OR excluded.name_source IS DISTINCT FROM asn_inventory.name_source))
   OR (excluded.rir_registry IS NOT NULL
       AND excluded.rir_registry IS DISTINCT FROM asn_inventory.rir_registry);

-- name: upsert_cymru_prefixes
INSERT INTO cymru_prefixes
    (prefix, ip_version, asn_number, asns, country_code, rir_registry, allocated, query_name,
     raw_answer, fetched_at, expires_at)
SELECT prefix, ip_version, asn_number, asns, country_code, rir_registry, allocated, query_name,
       raw_answer, fetched_at, expires_at
FROM w_cymru_prefixes
WHERE true
ON CONFLICT (prefix) DO UPDATE SET
    ip_version = excluded.ip_version,
    asn_number = excluded.asn_number,
    asns = excluded.asns,
    country_code = excluded.country_code,
    rir_registry = excluded.rir_registry,
    allocated = excluded.allocated,
    query_name = excluded.query_name,
    raw_answer = excluded.raw_answer,
    fetched_at = excluded.fetched_at,
    expires_at = excluded.expires_at;

-- name: upsert_cymru_unrouted
INSERT INTO cymru_unrouted (ip_address, query_name, fetched_at, expires_at)
SELECT ip_address, query_name, fetched_at, expires_at
FROM w_cymru_unrouted
WHERE true
ON CONFLICT (ip_address) DO UPDATE SET
    query_name = excluded.query_name,
    fetched_at = excluded.fetched_at,
    expires_at = excluded.expires_at;

-- name: upsert_cymru_names
INSERT INTO cymru_asn_names
    (asn_number, outcome, organization_name, organization_country, rir_registry, allocated,
     query_name, raw_answer, fetched_at, expires_at)
SELECT asn_number, outcome, organization_name, organization_country, rir_registry, allocated,
       query_name, raw_answer, fetched_at, expires_at
FROM w_cymru_names
WHERE true
ON CONFLICT (asn_number) DO UPDATE SET
    outcome = excluded.outcome,
    organization_name = excluded.organization_name,
    organization_country = excluded.organization_country,
    rir_registry = excluded.rir_registry,
    allocated = excluded.allocated,
    query_name = excluded.query_name,
    raw_answer = excluded.raw_answer,
    fetched_at = excluded.fetched_at,
    expires_at = excluded.expires_at;

-- name: upsert_ips
-- Every looked-up address gets its counters (w_ip_counters) in this one write, a new one with its
-- row and an existing one in its update; refresh_ip_counters then only sets those of the other
-- touched addresses (queued in stale_ips by another day's write).
INSERT INTO ip_inventory
    (ip_address, ip_version, ip_class, current_asn, asn_source, asn_network, country_code,
     build_epoch, enriched_at, enriched_by_run, enrichment, cymru_status, session_count,
     first_seen, last_seen)
SELECT l.ip_address, l.ip_version, l.ip_class, l.asn_number, l.asn_source, l.asn_network,
       l.country_code, l.build_epoch, :now, :run_id, l.enrichment, l.cymru_status,
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
    cymru_status = excluded.cymru_status,
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
-- The looked-up addresses, those new to ip_inventory and those whose ASN changes: against their
-- rows before the write (w_ip_before, which capture_ip_before fills for every address in w_ips,
-- the looked-up ones included), not by a probe of ip_inventory per address.
SELECT
    count(*) AS addresses,
    sum(CASE WHEN b.ip_address IS NULL THEN 1 ELSE 0 END) AS new_addresses,
    sum(CASE WHEN b.current_asn IS DISTINCT FROM l.asn_number AND b.ip_address IS NOT NULL
             THEN 1 ELSE 0 END) AS asn_changes
FROM w_lookups AS l
LEFT JOIN w_ip_before AS b ON b.ip_address = l.ip_address;

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
       FROM (SELECT src_ip FROM sessions WHERE ingest_date = :day
             UNION
             SELECT src_ip FROM session_fragments WHERE fragment_date = :day) AS d
      WHERE NOT EXISTS (SELECT 1 FROM ip_inventory AS i WHERE i.ip_address = d.src_ip))
        AS addresses_awaiting_lookup,
    (SELECT count(*)
       FROM sessions AS s
       LEFT JOIN ip_inventory AS i ON i.ip_address = s.src_ip
      WHERE s.ingest_date = :day AND s.asn_number IS DISTINCT FROM i.current_asn)
        AS sessions_awaiting_asn_snapshot;

-- name: forget_touched_ips
-- The address work sets of upsert_lookups once its changes are queued, emptied before a
-- drain_queues in the same transaction (settle), which fills them again from stale_ips.
DELETE FROM w_ips;

-- name: forget_ips_before
DELETE FROM w_ip_before;

-- name: forget_ip_counters
DELETE FROM w_ip_counters;
