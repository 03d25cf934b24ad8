-- Jobs per queue and state, maintained as the table changes, and an index for retention.
--
-- job_counts: the number of jobs per (queue, state) is the sum of `jobs` over the rows of
--             that pair. Every statement that inserts, deletes or moves jobs between states
--             appends one row per pair it changed, carrying the change (+n or -n), in its own
--             transaction, so the sums are exact in every snapshot. Appending instead of
--             updating one row per pair means concurrent writers never wait on each other.
--             The scheduler folds the appended rows into one per pair (fold_job_counts in
--             the sweeps), which keeps reading them cheap: /stats, /metrics, list totals and
--             the dead-letter count read these sums instead of counting a table of millions.
CREATE TABLE job_counts (
    queue text NOT NULL,
    state text NOT NULL,
    jobs  bigint NOT NULL
);

ALTER TABLE job_counts SET (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 1000
);

-- Statement-level triggers with transition tables: one appended row per pair a statement
-- changed, however many jobs it touched (a batch insert, a claim of many, a pruning sweep).
CREATE FUNCTION job_counts_add_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (queue, state, jobs)
    SELECT queue, state, count(*) FROM inserted_jobs GROUP BY queue, state;
    RETURN NULL;
END
$$;

CREATE FUNCTION job_counts_add_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (queue, state, jobs)
    SELECT queue, state, -count(*) FROM deleted_jobs GROUP BY queue, state;
    RETURN NULL;
END
$$;

-- Updates that leave queue and state alone (heartbeats, publishing) add nothing.
CREATE FUNCTION job_counts_add_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (queue, state, jobs)
    SELECT queue, state, sum(jobs) FROM (
        SELECT queue, state, count(*) AS jobs FROM jobs_after GROUP BY queue, state
        UNION ALL
        SELECT queue, state, -count(*) FROM jobs_before GROUP BY queue, state
    ) AS changes
    GROUP BY queue, state
    HAVING sum(jobs) <> 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_count_inserted AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_add_inserted();
CREATE TRIGGER jobs_count_deleted AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS deleted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_add_deleted();
CREATE TRIGGER jobs_count_moved AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS jobs_before NEW TABLE AS jobs_after
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_add_moved();

-- TRUNCATE fires no DELETE trigger: emptying jobs empties the counts with it.
CREATE FUNCTION job_counts_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_counts;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_count_truncated AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_clear();

-- The jobs already stored. Creating the triggers above locked out writers until this
-- migration commits, so no change is counted twice or missed.
INSERT INTO job_counts (queue, state, jobs)
SELECT queue, state, count(*) FROM jobs GROUP BY queue, state;

-- Retention deletes finished jobs by when they finished. Through (state, created_at) a
-- sweep over a table whose finished jobs are all still within retention read every one of
-- them to find none; this index finds the first prunable job, or that there is none, in a
-- few pages.
CREATE INDEX jobs_finished_prunable
    ON jobs (state, finished_at) WHERE state IN ('SUCCEEDED', 'CANCELLED');
