-- What one step hands to the next (store/step_outputs.py, the project's IO manager).

-- name: prune
-- Staged days wait for their write however long it takes (forget_staged_days drops them).
DELETE FROM step_outputs
WHERE written_at < :before
  AND NOT (step_key = 'cowrie_sessions' AND output_name IN ('staged_day', 'staged_addresses'));

-- name: forget
DELETE FROM step_outputs
WHERE run_id = :run_id AND step_key = :step_key AND output_name = :output_name
  AND mapping_key = :mapping_key;

-- name: keep
INSERT INTO step_outputs
    (run_id, step_key, output_name, mapping_key, payload, byte_count, written_at, written_by)
VALUES (:run_id, :step_key, :output_name, :mapping_key, :payload, :byte_count, :written_at,
        :written_by);

-- name: fetch
SELECT payload, written_at, written_by FROM step_outputs
WHERE run_id = :run_id AND step_key = :step_key AND output_name = :output_name
  AND mapping_key = :mapping_key;

-- A day the ingest step read and handed on for the inventory step to write (stage_day): keyed
-- by the run that read it, the step, STAGED_DAY and the day. It is kept until a write of the day
-- consumes or supersedes it, however old.

-- name: staged_day_runs
-- The runs that staged the day and whose staged day no write has consumed yet, newest first.
SELECT run_id FROM step_outputs
WHERE step_key = :step_key AND output_name = :output_name AND mapping_key = :day
ORDER BY written_at DESC;

-- name: forget_staged_days
-- In a write of the day: every day staged for it is written or superseded by it. All of them,
-- not those staged before the write's start: the hosts that staged them and the one writing need
-- not agree on the time (a run of the same day staging while this one writes loses its staged
-- day and writes its lookups alone; the day holds this write's files).
DELETE FROM step_outputs
WHERE step_key = 'cowrie_sessions' AND output_name IN ('staged_day', 'staged_addresses')
  AND mapping_key = :day;
