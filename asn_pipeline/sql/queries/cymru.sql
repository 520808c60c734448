-- Reading Team Cymru's cached answers (the Cymru step); upsert_lookups writes them.

-- name: all_prefixes
SELECT prefix, asns, country_code, rir_registry, allocated, query_name, raw_answer, fetched_at,
       CASE WHEN expires_at > :now THEN 1 ELSE 0 END AS fresh
FROM cymru_prefixes;

-- name: fresh_unrouted
SELECT ip_address, query_name, fetched_at
FROM cymru_unrouted
WHERE expires_at > :now AND ip_address IN :ips;

-- name: fresh_names
SELECT asn_number FROM cymru_asn_names WHERE expires_at > :now;
