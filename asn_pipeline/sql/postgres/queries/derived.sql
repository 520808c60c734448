-- PostgreSQL's forms of queries in sql/queries/derived.sql, where its planner needs another shape.

-- name: snapshot_session_asns
-- One hash join of the (analysed) work set with sessions. The portable form (the day's sessions
-- of the changed addresses, with a correlated subquery) is planned here as a scan of sessions
-- plus one ip_inventory probe per row: 4.9 s against 4.6 s for a day's 306,000 sessions.
UPDATE sessions SET asn_number = w.new_asn
FROM w_snapshot AS w
WHERE sessions.sensor = w.sensor AND sessions.session_id = w.session_id
  AND sessions.ingest_date = w.ingest_date;

-- name: refresh_ip_counters
-- The same as a join with the (analysed) work set.
UPDATE ip_inventory SET
    session_count = c.session_count,
    first_seen = c.first_seen,
    last_seen = c.last_seen
FROM w_ip_counters AS c
WHERE ip_inventory.ip_address = c.ip_address
  AND (ip_inventory.session_count <> c.session_count
       OR ip_inventory.first_seen IS DISTINCT FROM c.first_seen
       OR ip_inventory.last_seen IS DISTINCT FROM c.last_seen);
