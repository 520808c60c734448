-- What one step hands to the next (store/step_outputs.py, the project's IO manager).

-- name: prune
DELETE FROM step_outputs WHERE written_at < :before;

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
