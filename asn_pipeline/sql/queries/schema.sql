-- The record of applied migrations (asn_pipeline.store.schema).

-- name: record_migration
INSERT INTO schema_migrations (version, name, applied_at, applied_by)
VALUES (:version, :migration, :applied_at, :applied_by);
