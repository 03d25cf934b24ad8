-- Dead letters grouped by error, for the dashboard.
--
-- error_shape: the first line of the last error (or of the reason when there is none) with
--              its variable parts replaced, so "order 17 not found" and "order 42 not found"
--              share one shape. Quoted values become '?' (or "?"), UUIDs and hex ids of 16 or
--              more digits <id>, numbers N; the first 200 characters are kept. The same rules,
--              in the same order, are domain.dashboard.error_shape; a contract test checks
--              that both group alike.
--
-- A stored generated column: every writer of dead_letters gets it without change, and the
-- grouping reads it from the index below instead of computing it per row on each request.
ALTER TABLE dead_letters ADD COLUMN error_shape text GENERATED ALWAYS AS (
    left(
        regexp_replace(
            regexp_replace(
                regexp_replace(
                    regexp_replace(
                        regexp_replace(
                            split_part(coalesce(last_error, reason), E'\n', 1),
                            '''[^'']*''', '''?''', 'g'),
                        '"[^"]*"', '"?"', 'g'),
                    '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'gi'),
                '[0-9a-f]{16,}', '<id>', 'gi'),
            '[0-9]+', 'N', 'g'),
        200)
) STORED;

-- Groups with their counts and first and last failures come from this index alone; a
-- group's members, newest first, are a range of it.
CREATE INDEX dead_letters_by_error_shape
    ON dead_letters (job_type, error_shape, failed_at DESC, job_id DESC);

-- The dashboard's counts past 10,000 are the planner's estimates for one queue and state;
-- queues and states are far from independent (a queue of mostly failing jobs), so the
-- planner keeps their common pairs together.
CREATE STATISTICS jobs_queue_state_pairs (mcv) ON queue, state FROM jobs;
