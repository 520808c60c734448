-- Audit questions (docs/audit.md): where an attribution came from, when, from which MaxMind build
-- and which Dagster run, and the counters next to a recomputation from the facts. Read-only, the
-- same text on SQLite 3.39+ and PostgreSQL 15. Column names follow one rule that the Python side
-- (store/lineage.py) relies on: a name ending in _at, _seen or _observed is a time, one ending in
-- _day or _date a date. Sums are cast to bigint (PostgreSQL sums bigint as numeric); flags are
-- 0 or 1 on both databases.

-- name: why_address_in_asn
-- One address: its ASN and where it came from (source, network, build, the run that wrote it), the
-- Team Cymru prefix when Cymru answered, and since when the history knows this mapping.
SELECT i.ip_address, i.ip_class, i.current_asn, a.organization_name, a.name_source,
       i.asn_source, i.asn_network, i.country_code, i.cymru_status, i.build_epoch,
       i.enrichment -> 'maxmind_asn' ->> 'database_type' AS maxmind_database_type,
       i.enriched_at, i.enriched_by_run, i.enrichment,
       p.prefix AS cymru_prefix, p.asns AS cymru_origin_asns, p.rir_registry AS cymru_registry,
       p.allocated AS cymru_allocated, p.query_name AS cymru_query_name,
       p.raw_answer AS cymru_raw_answer, p.fetched_at AS cymru_fetched_at,
       p.expires_at AS cymru_expires_at,
       h.first_observed AS mapping_first_observed, h.last_observed AS mapping_last_observed,
       h.build_epoch AS mapping_build_epoch,
       (SELECT count(*) FROM ip_asn_history AS o
         WHERE o.ip_address = i.ip_address
           AND (i.current_asn IS NULL OR o.asn_number <> i.current_asn)) AS other_mappings,
       i.session_count, i.first_seen, i.last_seen
FROM ip_inventory AS i
LEFT JOIN asn_inventory AS a ON a.asn_number = i.current_asn
LEFT JOIN cymru_prefixes AS p ON p.prefix = i.asn_network AND i.cymru_status = 'found'
LEFT JOIN ip_asn_history AS h
  ON h.ip_address = i.ip_address AND h.asn_number = i.current_asn AND h.source = i.asn_source
WHERE i.ip_address = :ip_address;

-- name: address_asn_history
-- Every ASN the address was ever mapped to, by source (maxmind, cymru, legacy), oldest first.
SELECT h.ip_address, h.asn_number, a.organization_name, h.source, h.first_observed,
       h.last_observed, h.build_epoch,
       CASE WHEN i.current_asn = h.asn_number THEN 1 ELSE 0 END AS is_current
FROM ip_asn_history AS h
LEFT JOIN asn_inventory AS a ON a.asn_number = h.asn_number
LEFT JOIN ip_inventory AS i ON i.ip_address = h.ip_address
WHERE h.ip_address = :ip_address
ORDER BY h.first_observed, h.asn_number, h.source;

-- name: asn_first_appearance
-- When an ASN first appeared, in three senses: the first attack time of its current addresses
-- (first_seen), the first day with sessions attributed to it (asn_daily_stats, from the sessions'
-- ASN snapshots) and the first lookup that mapped an address to it (ip_asn_history). The ASN row
-- is inserted in the transaction of that lookup with the same time, so while updated_at still
-- equals first_mapped_at, updated_by_run is the run that first mapped it; a later name change
-- rewrites both, and first_mapped_by_run is then NULL.
WITH first_day AS (
    SELECT min(stat_date) AS stat_date FROM asn_daily_stats WHERE asn_number = :asn_number
), first_mapping AS (
    SELECT ip_address, source, first_observed, build_epoch
    FROM ip_asn_history
    WHERE asn_number = :asn_number
    ORDER BY first_observed, ip_address, source
    LIMIT 1
)
SELECT a.asn_number, a.organization_name, a.name_source, a.first_seen, a.last_seen,
       d.stat_date AS first_session_day,
       (SELECT min(s.first_event_at) FROM sessions AS s
         WHERE s.ingest_date = d.stat_date AND s.asn_number = a.asn_number) AS first_session_at,
       m.first_observed AS first_mapped_at, m.ip_address AS first_mapped_address,
       m.source AS first_mapped_source, m.build_epoch AS first_mapping_build_epoch,
       CASE WHEN a.updated_at = m.first_observed THEN a.updated_by_run END AS first_mapped_by_run,
       a.updated_at, a.updated_by_run
FROM asn_inventory AS a
CROSS JOIN first_day AS d
LEFT JOIN first_mapping AS m ON true
WHERE a.asn_number = :asn_number;

-- name: address_provenance
-- Which run and which database builds wrote an address row, and the sessions it stands for.
SELECT i.ip_address, i.current_asn, i.asn_source, i.build_epoch,
       i.enrichment -> 'maxmind_asn' ->> 'database_type' AS maxmind_database_type,
       i.enrichment -> 'maxmind_city' ->> 'database_type' AS maxmind_city_database_type,
       CAST(i.enrichment -> 'maxmind_city' ->> 'build_epoch' AS bigint) AS maxmind_city_build_epoch,
       i.enriched_at, i.enriched_by_run,
       a.updated_at AS asn_row_updated_at, a.updated_by_run AS asn_row_updated_by_run,
       s.sessions, s.first_session_day, s.last_session_day
FROM ip_inventory AS i
LEFT JOIN asn_inventory AS a ON a.asn_number = i.current_asn
CROSS JOIN (
    SELECT count(*) AS sessions, min(ingest_date) AS first_session_day,
           max(ingest_date) AS last_session_day
    FROM sessions
    WHERE src_ip = :ip_address
) AS s
WHERE i.ip_address = :ip_address;

-- name: session_provenance
-- The sessions of one Cowrie id (an id reused after a gap of days is another session) with each
-- part they were built from (one per day: view session_parts) and the run that read it. A
-- session's parts are those from its ingest_date up to the next session of the same id.
SELECT s.sensor, s.session_id, s.ingest_date, s.src_ip, s.first_event_at, s.last_event_at,
       s.event_count, s.asn_number, f.fragment_date, f.event_count AS fragment_event_count,
       f.first_event_at AS fragment_first_event_at, f.last_event_at AS fragment_last_event_at,
       f.ingested_by_run
FROM sessions AS s
JOIN session_parts AS f
  ON f.sensor = s.sensor AND f.session_id = s.session_id AND f.fragment_date >= s.ingest_date
WHERE s.sensor = :sensor AND s.session_id = :session_id
  -- the id again on the view, so that both databases search each of its two parts by key
  AND f.sensor = :sensor AND f.session_id = :session_id
  AND NOT EXISTS (
      SELECT 1 FROM sessions AS n
      WHERE n.sensor = s.sensor AND n.session_id = s.session_id
        AND n.ingest_date > s.ingest_date AND n.ingest_date <= f.fragment_date)
ORDER BY s.ingest_date, f.fragment_date;

-- name: day_provenance
-- The files a day was read from, with what each held and the run that read it.
SELECT ingest_date, source_file, status, size_bytes, lines_read, events_read, rejected_lines,
       ingested_at, ingested_by_run
FROM source_files
WHERE ingest_date = :day
ORDER BY source_file;

-- name: prove_counters
-- One ASN's stored counters next to two recomputations: from its addresses' rows in ip_inventory
-- (ip_inventory_*) and from their sessions (sessions_*). unique_ip_difference is the stored count
-- minus the addresses' rows, session_difference the stored total minus their sessions,
-- seen_differs says whether first_seen or last_seen differ from the sessions' times, and
-- addresses_with_wrong_counters counts the addresses whose own counters differ from their
-- sessions. queued = 1 while a committed write's change to this ASN waits in stale_asn_deltas
-- (a lag is expected then, see docs/data-model.md).
WITH per_ip AS (
    SELECT s.src_ip, count(*) AS sessions, min(s.first_event_at) AS first_event_at,
           max(s.last_event_at) AS last_event_at
    FROM ip_inventory AS i
    JOIN sessions AS s ON s.src_ip = i.ip_address
    WHERE i.current_asn = :asn_number
    GROUP BY s.src_ip
), recomputed AS (
    SELECT count(*) AS ips, CAST(coalesce(sum(i.session_count), 0) AS bigint) AS ip_sessions,
           min(i.first_seen) AS ip_first_seen, max(i.last_seen) AS ip_last_seen,
           count(p.src_ip) AS session_ips, CAST(coalesce(sum(p.sessions), 0) AS bigint) AS sessions,
           min(p.first_event_at) AS session_first_seen, max(p.last_event_at) AS session_last_seen,
           sum(CASE WHEN i.session_count <> coalesce(p.sessions, 0)
                         OR i.first_seen IS DISTINCT FROM p.first_event_at
                         OR i.last_seen IS DISTINCT FROM p.last_event_at
                    THEN 1 ELSE 0 END) AS wrong_ips
    FROM ip_inventory AS i
    LEFT JOIN per_ip AS p ON p.src_ip = i.ip_address
    WHERE i.current_asn = :asn_number
)
SELECT a.asn_number, a.organization_name,
       a.unique_ip_count, r.ips AS ip_inventory_unique_ip_count,
       r.session_ips AS sessions_unique_ip_count,
       a.total_session_count, r.ip_sessions AS ip_inventory_total_session_count,
       r.sessions AS sessions_total_session_count,
       a.first_seen, r.ip_first_seen AS ip_inventory_first_seen,
       r.session_first_seen AS sessions_first_seen,
       a.last_seen, r.ip_last_seen AS ip_inventory_last_seen,
       r.session_last_seen AS sessions_last_seen,
       a.unique_ip_count - r.ips AS unique_ip_difference,
       a.total_session_count - r.sessions AS session_difference,
       CASE WHEN a.first_seen IS DISTINCT FROM r.session_first_seen
                 OR a.last_seen IS DISTINCT FROM r.session_last_seen
            THEN 1 ELSE 0 END AS seen_differs,
       coalesce(r.wrong_ips, 0) AS addresses_with_wrong_counters,
       CASE WHEN EXISTS (SELECT 1 FROM stale_asn_deltas AS q WHERE q.asn_number = a.asn_number)
            THEN 1 ELSE 0 END AS queued
FROM asn_inventory AS a
CROSS JOIN recomputed AS r
WHERE a.asn_number = :asn_number;

-- name: asn_counter_differences
-- prove_counters for every ASN at once, keeping only the ASNs where something differs: empty
-- when every ASN counter, and every counter of the addresses under it, equals its facts.
WITH per_ip AS (
    SELECT src_ip, count(*) AS sessions, min(first_event_at) AS first_event_at,
           max(last_event_at) AS last_event_at
    FROM sessions
    GROUP BY src_ip
), recomputed AS (
    SELECT i.current_asn AS asn_number, count(*) AS ips,
           CAST(sum(i.session_count) AS bigint) AS ip_sessions,
           min(i.first_seen) AS ip_first_seen, max(i.last_seen) AS ip_last_seen,
           count(p.src_ip) AS session_ips, CAST(coalesce(sum(p.sessions), 0) AS bigint) AS sessions,
           min(p.first_event_at) AS session_first_seen, max(p.last_event_at) AS session_last_seen,
           sum(CASE WHEN i.session_count <> coalesce(p.sessions, 0)
                         OR i.first_seen IS DISTINCT FROM p.first_event_at
                         OR i.last_seen IS DISTINCT FROM p.last_event_at
                    THEN 1 ELSE 0 END) AS wrong_ips
    FROM ip_inventory AS i
    LEFT JOIN per_ip AS p ON p.src_ip = i.ip_address
    WHERE i.current_asn IS NOT NULL
    GROUP BY i.current_asn
), compared AS (
    SELECT a.asn_number, a.organization_name,
           a.unique_ip_count, coalesce(r.ips, 0) AS ip_inventory_unique_ip_count,
           coalesce(r.session_ips, 0) AS sessions_unique_ip_count,
           a.total_session_count,
           coalesce(r.ip_sessions, 0) AS ip_inventory_total_session_count,
           coalesce(r.sessions, 0) AS sessions_total_session_count,
           a.first_seen, r.ip_first_seen AS ip_inventory_first_seen,
           r.session_first_seen AS sessions_first_seen,
           a.last_seen, r.ip_last_seen AS ip_inventory_last_seen,
           r.session_last_seen AS sessions_last_seen,
           a.unique_ip_count - coalesce(r.ips, 0) AS unique_ip_difference,
           a.total_session_count - coalesce(r.sessions, 0) AS session_difference,
           CASE WHEN a.first_seen IS DISTINCT FROM r.session_first_seen
                     OR a.last_seen IS DISTINCT FROM r.session_last_seen
                THEN 1 ELSE 0 END AS seen_differs,
           coalesce(r.wrong_ips, 0) AS addresses_with_wrong_counters,
           CASE WHEN EXISTS (SELECT 1 FROM stale_asn_deltas AS q
                             WHERE q.asn_number = a.asn_number)
                THEN 1 ELSE 0 END AS queued
    FROM asn_inventory AS a
    LEFT JOIN recomputed AS r ON r.asn_number = a.asn_number
)
SELECT * FROM compared
WHERE unique_ip_difference <> 0 OR session_difference <> 0 OR seen_differs = 1
   OR addresses_with_wrong_counters <> 0
ORDER BY asn_number;

-- name: ip_counter_differences
-- Addresses whose session_count, first_seen or last_seen differ from their sessions, addresses
-- without sessions, and session addresses without a row (their day's ip_inventory is not
-- materialised yet). Empty when every address counter equals its facts. (Two halves instead of
-- a FULL OUTER JOIN: SQLite joins a materialised CTE by a full scan per row in a full join.)
WITH per_ip AS (
    SELECT src_ip, count(*) AS sessions, min(first_event_at) AS first_event_at,
           max(last_event_at) AS last_event_at
    FROM sessions
    GROUP BY src_ip
)
SELECT i.ip_address, i.current_asn,
       i.session_count, p.sessions AS sessions_session_count,
       i.first_seen, p.first_event_at AS sessions_first_seen,
       i.last_seen, p.last_event_at AS sessions_last_seen,
       CASE WHEN EXISTS (SELECT 1 FROM stale_ips AS q WHERE q.ip_address = i.ip_address)
            THEN 1 ELSE 0 END AS queued
FROM ip_inventory AS i
LEFT JOIN per_ip AS p ON p.src_ip = i.ip_address
WHERE p.src_ip IS NULL
   OR i.session_count <> p.sessions
   OR i.first_seen IS DISTINCT FROM p.first_event_at
   OR i.last_seen IS DISTINCT FROM p.last_event_at
UNION ALL
SELECT p.src_ip, NULL, NULL, p.sessions, NULL, p.first_event_at, NULL, p.last_event_at,
       CASE WHEN EXISTS (SELECT 1 FROM stale_ips AS q WHERE q.ip_address = p.src_ip)
            THEN 1 ELSE 0 END
FROM per_ip AS p
WHERE NOT EXISTS (SELECT 1 FROM ip_inventory AS i WHERE i.ip_address = p.src_ip)
ORDER BY 1;

-- name: daily_stat_differences
-- asn_daily_stats rows that differ from a recount of their day's sessions by ASN snapshot,
-- missing rows and extra rows included. Empty when every daily figure equals its facts.
WITH per_address AS (
    SELECT ingest_date, asn_number, src_ip, count(*) AS sessions
    FROM sessions
    WHERE asn_number IS NOT NULL
    GROUP BY ingest_date, asn_number, src_ip
), expected AS (
    SELECT d.ingest_date AS stat_date, d.asn_number,
           CAST(sum(d.sessions) AS bigint) AS session_count, count(*) AS unique_ip_count,
           sum(CASE WHEN NOT EXISTS (
                       SELECT 1 FROM sessions AS e
                       WHERE e.src_ip = d.src_ip AND e.ingest_date < d.ingest_date)
                   THEN 1 ELSE 0 END) AS new_ip_count
    FROM per_address AS d
    GROUP BY d.ingest_date, d.asn_number
)
SELECT s.stat_date, s.asn_number,
       s.session_count, e.session_count AS sessions_session_count,
       s.unique_ip_count, e.unique_ip_count AS sessions_unique_ip_count,
       s.new_ip_count, e.new_ip_count AS sessions_new_ip_count,
       CASE WHEN EXISTS (SELECT 1 FROM stale_days AS q
                         WHERE q.stat_date = s.stat_date AND q.asn_number = s.asn_number)
            THEN 1 ELSE 0 END AS queued
FROM asn_daily_stats AS s
LEFT JOIN expected AS e ON e.stat_date = s.stat_date AND e.asn_number = s.asn_number
WHERE e.stat_date IS NULL
   OR s.session_count <> e.session_count OR s.unique_ip_count <> e.unique_ip_count
   OR s.new_ip_count <> e.new_ip_count
UNION ALL
SELECT e.stat_date, e.asn_number, NULL, e.session_count, NULL, e.unique_ip_count, NULL,
       e.new_ip_count,
       CASE WHEN EXISTS (SELECT 1 FROM stale_days AS q
                         WHERE q.stat_date = e.stat_date AND q.asn_number = e.asn_number)
            THEN 1 ELSE 0 END
FROM expected AS e
WHERE NOT EXISTS (SELECT 1 FROM asn_daily_stats AS s
                  WHERE s.stat_date = e.stat_date AND s.asn_number = e.asn_number)
ORDER BY 1, 2;
