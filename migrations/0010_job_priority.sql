-- Job priorities.
--
-- priority: 0 (claimed first) to 9 (claimed last), default 5. Within a queue the due
--           PENDING jobs are claimed by priority, then oldest due first.
--
-- A constant default: adding the column rewrites nothing. The check is added NOT VALID:
-- every existing row holds the default, and new rows are checked all the same.
ALTER TABLE jobs ADD COLUMN priority smallint NOT NULL DEFAULT 5;

ALTER TABLE jobs
    ADD CONSTRAINT jobs_priority_range CHECK (priority BETWEEN 0 AND 9) NOT VALID;

-- Claiming without hints (claim_due) walks a queue's due pending jobs by priority, then
-- oldest due first. It replaces the index by due time alone (0001), which serves nothing
-- this one does not: counting a queue's due jobs and resuming a queue read it by queue.
CREATE INDEX jobs_pending_by_queue_priority_due
    ON jobs (queue, priority, next_run_at, id) WHERE state = 'PENDING';
DROP INDEX jobs_pending_due_by_queue;

-- Publishing the jobs no hint was ever published for (find_never_published) takes each
-- priority's oldest due ones in turn. Beside the index by due time alone (0001), which
-- finds the due ones among them for the stale-hint sweep; only unpublished jobs (delayed
-- ones, jobs enqueued in an application's own transaction) are in either.
CREATE INDEX jobs_pending_unpublished_by_priority_due
    ON jobs (priority, next_run_at, id) WHERE state = 'PENDING' AND published_at IS NULL;

-- One job of a batch insert, as job_input_v3 (migration 0008) plus the priority. A new
-- type rather than an ALTER TYPE, so processes of the previous version keep inserting with
-- job_input_v3 while a new one rolls out.
CREATE TYPE job_input_v4 AS (
    id                 uuid,
    queue              text,
    job_type           text,
    payload            text,
    idempotency_key    text,
    max_attempts       integer,
    initial_delay      double precision,
    backoff            double precision,
    max_delay          double precision,
    jitter             boolean,
    visibility_timeout double precision,
    traceparent        text,
    run_at             timestamptz,
    delay              double precision,
    timeout            double precision,
    unique_key         text,
    priority           smallint
);
