-- The value a job's handler returned, kept with the job once it SUCCEEDED.
--
-- result: JSON, at most MAX_RESULT_BYTES when encoded; NULL when the handler returned None
--         and while the job has not succeeded. Written by the statement that settles the
--         attempt as SUCCEEDED (fenced by its lease token); cleared whenever the job goes
--         back to PENDING, so a new run never shows an old run's result. Deleted with its
--         job by retention.
--
-- Nullable without a default: adding it rewrites nothing.
ALTER TABLE jobs ADD COLUMN result jsonb;
