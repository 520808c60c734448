-- The inventory refresh (asn_pipeline.store.refresh): the addresses to look up again, one batch
-- at a time in ip_address order (keyset: each batch starts after the last address of the one
-- before). Bogons are never selected: they are never looked up.

-- name: other_build_addresses
-- Global addresses last looked up in another build of the ASN database than asn_epoch or (when
-- check_city is 1) of the City database than city_epoch, whose build is in enrichment; every
-- global address when everything is 1.
SELECT ip_address, current_asn, asn_source, asn_network, cymru_status,
       json_extract(enrichment, '$.cymru') AS cymru_answer, build_epoch,
       json_extract(enrichment, '$.maxmind_city.build_epoch') AS city_build_epoch
FROM ip_inventory
WHERE ip_address > :after
  AND ip_class = 'global'
  AND (:everything = 1
       OR build_epoch IS NULL OR build_epoch <> :asn_epoch
       OR (:check_city = 1
           AND coalesce(json_extract(enrichment, '$.maxmind_city.build_epoch'), -1)
               <> :city_epoch))
ORDER BY ip_address
LIMIT :batch_size;

-- name: expired_cymru_addresses
-- Global addresses MaxMind does not cover whose Team Cymru answer is missing (never asked),
-- pending, or past its TTL (the cache entry that answered it expired, or is gone).
SELECT i.ip_address, i.current_asn, i.asn_source, i.asn_network, i.cymru_status,
       NULL AS cymru_answer, i.build_epoch, NULL AS city_build_epoch
FROM ip_inventory AS i
WHERE i.ip_address > :after
  AND i.ip_class = 'global'
  AND i.asn_source IN ('none', 'cymru')
  AND (i.cymru_status IS NULL
       OR i.cymru_status = 'pending'
       OR (i.cymru_status = 'found' AND NOT EXISTS (
               SELECT 1 FROM cymru_prefixes AS p
               WHERE p.prefix = i.asn_network AND p.expires_at > :now))
       OR (i.cymru_status = 'unrouted' AND NOT EXISTS (
               SELECT 1 FROM cymru_unrouted AS u
               WHERE u.ip_address = i.ip_address AND u.expires_at > :now)))
ORDER BY i.ip_address
LIMIT :batch_size;
