-- 004: what one step of a run hands to the next (the day's lookups, the upsert's summary), kept
-- in the inventory rather than on the disk of the host that ran the step, so that the steps of
-- one run can execute on different hosts (Celery workers, Kubernetes pods). Rows are keyed by
-- the run and step that wrote them; re-execution from a failure reads its parent run's rows.
-- They are working state, not inventory: rows older than a week are pruned on every write.
CREATE TABLE step_outputs (
    run_id      text NOT NULL,
    step_key    text NOT NULL,
    output_name text NOT NULL,
    mapping_key text NOT NULL DEFAULT '',
    payload     bytea NOT NULL,
    byte_count  bigint NOT NULL,
    written_at  timestamptz NOT NULL,
    written_by  text NOT NULL,
    PRIMARY KEY (run_id, step_key, output_name, mapping_key)
);

-- The payload is compressed by the writer (zlib): TOAST's compression would only cost time.
ALTER TABLE step_outputs ALTER COLUMN payload SET STORAGE EXTERNAL;

CREATE INDEX step_outputs_by_written_at ON step_outputs (written_at);
