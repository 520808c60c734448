-- PostgreSQL's forms of queries in sql/queries/derived.sql, where its planner needs another shape.

-- name: snapshot_session_asns
-- A join of the (analysed) work set with sessions; the portable form's IN list plus correlated
-- subquery is planned row by row here.
UPDATE sessions SET asn_number = w.new_asn
FROM w_snapshot AS w
WHERE sessions.sensor = w.sensor AND sessions.session_id = w.session_id;
