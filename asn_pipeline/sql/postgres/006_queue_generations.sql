-- 006: each queued (day, ASN) of stale_days carries the generation that queued it last: a value
-- of its own sequence, taken anew by every write that queues the key, whether it was queued
-- already or not. A drain may then compute the queued statistics before it takes the write lock
-- and, under the lock, keep what it computed for the keys whose generation has not changed: any
-- write that changed their sessions meanwhile queued them again, with a new generation. Keys
-- queued before this release get one each. No other data changes.
CREATE SEQUENCE IF NOT EXISTS stale_days_generation;
ALTER TABLE stale_days
    ADD COLUMN generation bigint NOT NULL DEFAULT nextval('stale_days_generation');
ALTER SEQUENCE stale_days_generation OWNED BY stale_days.generation;
