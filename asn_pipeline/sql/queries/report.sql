-- Inventory-wide figures for the demo summary and docs.

-- name: totals
SELECT
    (SELECT count(*) FROM sessions) AS sessions,
    (SELECT count(*) FROM ip_inventory) AS addresses,
    (SELECT count(*) FROM ip_inventory WHERE asn_source = 'bogon') AS bogons,
    (SELECT count(*) FROM ip_inventory WHERE asn_source = 'none') AS unmapped,
    (SELECT count(*) FROM asn_inventory WHERE unique_ip_count > 0) AS asns,
    (SELECT count(*) FROM rejected_events) AS rejected_lines;

-- name: top_asns
SELECT asn_number, organization_name, organization_country, unique_ip_count, total_session_count
FROM asn_inventory
ORDER BY total_session_count DESC, asn_number
LIMIT :limit;

-- name: rejected_by_reason
SELECT reason, count(*) AS lines FROM rejected_events GROUP BY reason ORDER BY lines DESC, reason;
