-- Which numbered migrations of this folder an inventory has applied (asn_pipeline.store.schema).
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  TEXT NOT NULL,
    applied_by  TEXT
);
