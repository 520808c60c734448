-- Which numbered migrations of this folder an inventory has applied (asn_pipeline.store.schema).
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL,
    applied_by  text
);
