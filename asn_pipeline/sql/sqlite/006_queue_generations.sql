-- 006: stale_days gains the generation of PostgreSQL's schema (see its 006). On SQLite every
-- write holds the one database lock from its first statement to its commit, a drain's
-- computation included: no other write can queue a key between the computation and the write of
-- its result, and the generation stays 0. No other data changes.
ALTER TABLE stale_days ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
