-- A NOTIFY from the INSERT itself for jobs nobody publishes a hint for at commit.
--
-- An application's transactional enqueue stores due jobs unpublished (nothing of its own
-- reaches Redis); the scheduler LISTENs on taskforge_jobs and publishes them when woken.
-- The NOTIFY used to be a statement of its own, one more round trip in every enqueueing
-- transaction. The trigger that keeps the job counts after an INSERT (0013) now sends it
-- too, once per statement that created a due, unpublished job: Postgres folds the notices
-- of one transaction into one (the payload is constant) and delivers them at commit, never
-- after a rollback. The API's inserts store due jobs as published (it pushes their hints
-- itself) and delayed jobs are not due, so neither sends one. One trigger, not a second
-- one beside the counts': every INSERT, the API's included, pays for each trigger it fires.
CREATE FUNCTION jobs_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (queue, state, jobs)
    SELECT queue, state, count(*) FROM inserted_jobs GROUP BY queue, state;
    IF EXISTS (
        SELECT 1 FROM inserted_jobs
        WHERE state = 'PENDING' AND published_at IS NULL AND next_run_at <= now()
    ) THEN
        PERFORM pg_notify('taskforge_jobs', '');
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER jobs_count_inserted ON jobs;
DROP FUNCTION job_counts_add_inserted();

CREATE TRIGGER jobs_inserted AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_after_insert();
