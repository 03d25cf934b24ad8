-- The INSERT trigger of 0016, cheaper for a statement that stores one job.
--
-- Most INSERTs store one job (an enqueue through the API, or an application's transactional
-- enqueue). For one row, grouping the transition table by (queue, state) was most of the
-- trigger's work: the aggregate and its hash table cost more than the counts row itself.
-- A statement that stored at most one job now appends that job's row as it is, a count of
-- one; a statement that stored several still appends one row per (queue, state), grouped.
-- Either way the sums over job_counts are what they were. Whether a NOTIFY is due is read
-- in the same statement that tells one job from several.
--
-- Measured inside Postgres (2,000 single-job INSERTs in one transaction, 16 rounds,
-- interleaved with the 0016 body): 81.5 -> 73.1 us an INSERT; the same INSERT with an
-- empty trigger body 59.6 us (docs/performance.md, "One job per call against pgqueuer").
--
-- CREATE OR REPLACE keeps the trigger, so processes of the previous version, which insert
-- the same rows, are counted by the new body from the moment this commits.
CREATE OR REPLACE FUNCTION jobs_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    several boolean;
    unpublished_due boolean;
BEGIN
    SELECT EXISTS (SELECT FROM inserted_jobs OFFSET 1),
           EXISTS (
               SELECT FROM inserted_jobs
               WHERE state = 'PENDING' AND published_at IS NULL AND next_run_at <= now()
           )
    INTO several, unpublished_due;
    IF several THEN
        INSERT INTO job_counts (queue, state, jobs)
        SELECT queue, state, count(*) FROM inserted_jobs GROUP BY queue, state;
    ELSE
        -- One job, or none (every row skipped by ON CONFLICT): nothing to group.
        INSERT INTO job_counts (queue, state, jobs)
        SELECT queue, state, 1 FROM inserted_jobs;
    END IF;
    IF unpublished_due THEN
        PERFORM pg_notify('taskforge_jobs', '');
    END IF;
    RETURN NULL;
END
$$;
