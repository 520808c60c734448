-- 004: what one step of a run hands to the next (the day's lookups, the upsert's summary), kept
-- in the inventory rather than on the disk of the host that ran the step, so that the steps of
-- one run can execute on different hosts (Celery workers, Kubernetes pods). Rows are keyed by
-- the run and step that wrote them; re-execution from a failure reads its parent run's rows.
-- They are working state, not inventory: rows older than a week are pruned on every write.
CREATE TABLE step_outputs (
    run_id      TEXT NOT NULL,
    step_key    TEXT NOT NULL,
    output_name TEXT NOT NULL,
    mapping_key TEXT NOT NULL DEFAULT '',
    payload     BLOB NOT NULL,
    byte_count  INTEGER NOT NULL,
    written_at  TEXT NOT NULL,
    written_by  TEXT NOT NULL,
    PRIMARY KEY (run_id, step_key, output_name, mapping_key)
) WITHOUT ROWID;

CREATE INDEX step_outputs_by_written_at ON step_outputs (written_at);
