-- The PostgreSQL session that holds the inventory's advisory write lock (a bigint key shows in
-- pg_locks as its high and low 32 bits, objsubid 1).

-- name: write_lock_holder
SELECT a.pid, a.application_name, a.client_addr, a.xact_start, a.state
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.classid = 6386542 AND l.objid = 1601202544 AND l.objsubid = 1;

-- name: day_lock_holder
-- The session that holds the lock of one day (asn_pipeline.store.database.DAY_LOCK_CLASS and
-- the day's ordinal, :key: two int4 keys show as classid and objid, objsubid 2).
SELECT a.pid, a.application_name, a.client_addr, a.xact_start, a.state
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.classid = 1634954852 AND l.objid = :key AND l.objsubid = 2;
