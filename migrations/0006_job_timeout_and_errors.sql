-- A per-job time limit and the errors of its last failed attempts.
--
-- timeout: seconds an attempt may run before the worker fails it as timed out; 0 = none.
-- errors:  the last 20 failed attempts, oldest first, each
--          {"attempt": n, "at": "<ISO-8601 UTC>", "error": "...", "traceback": "..." | null},
--          each traceback at most 8 KiB. Appended by the statements that settle an attempt.
--
-- Both columns get a constant default, so adding them rewrites nothing. The check is added
-- NOT VALID: every existing row holds the default, and new rows are checked all the same.
ALTER TABLE jobs
    ADD COLUMN timeout double precision NOT NULL DEFAULT 0,
    ADD COLUMN errors  jsonb NOT NULL DEFAULT '[]'::jsonb;

ALTER TABLE jobs
    ADD CONSTRAINT jobs_timeout_not_negative CHECK (timeout >= 0) NOT VALID;

-- One job of a batch insert, as job_input (migration 0005) plus the timeout. A new type
-- rather than an ALTER TYPE, so processes of the previous version keep inserting with
-- job_input while a new one rolls out.
CREATE TYPE job_input_v2 AS (
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
    timeout            double precision
);
