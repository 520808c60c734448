-- PostgreSQL's forms of queries in sql/queries/refresh.sql, where its dialect differs.

-- name: other_build_addresses
-- The same with jsonb's path operator for the City build.
SELECT ip_address, current_asn, asn_source, asn_network, cymru_status,
       enrichment -> 'cymru' AS cymru_answer, build_epoch,
       CAST(enrichment #>> '{maxmind_city,build_epoch}' AS bigint) AS city_build_epoch
FROM ip_inventory
WHERE ip_address > :after
  AND ip_class = 'global'
  AND (:everything = 1
       OR build_epoch IS NULL OR build_epoch <> :asn_epoch
       OR (:check_city = 1
           AND coalesce(CAST(enrichment #>> '{maxmind_city,build_epoch}' AS bigint), -1)
               <> :city_epoch))
ORDER BY ip_address
LIMIT :batch_size;
