-- A NOTIFY from the INSERT itself for jobs nobody publishes a hint for at commit.
--
-- An application's transactional enqueue stores due jobs unpublished (nothing of its own
-- reaches Redis); the scheduler LISTENs on taskforge_jobs and publishes them when woken.
-- The NOTIFY used to be a statement of its own, one more round trip in every enqueueing
-- transaction. This trigger sends it as part of the INSERT, once per statement that
-- created a due, unpublished job: Postgres folds the notices of one transaction into one
-- (the payload is constant) and delivers them at commit, never after a rollback. The API's
-- inserts store due jobs as published (it pushes their hints itself) and delayed jobs are
-- not due, so neither sends one.
CREATE FUNCTION jobs_notify_unpublished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM inserted_jobs
        WHERE state = 'PENDING' AND published_at IS NULL AND next_run_at <= now()
    ) THEN
        PERFORM pg_notify('taskforge_jobs', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_unpublished AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify_unpublished();
