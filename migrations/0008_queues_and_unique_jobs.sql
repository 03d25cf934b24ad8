-- Paused queues, and unique jobs.
--
-- queues: one row per queue an operator paused or resumed (a queue with no row is running).
--         While `paused`, no claim takes the queue's jobs (claims by hint and claims
--         without hints alike) and the republish sweep leaves them alone; running jobs
--         finish and enqueueing still works. A queue may be paused before its first job.
CREATE TABLE queues (
    name       text PRIMARY KEY,
    paused     boolean NOT NULL DEFAULT false,
    paused_at  timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT queues_paused_at_while_paused CHECK (paused = (paused_at IS NOT NULL))
);

-- unique_key: while a job of a queue is PENDING, RUNNING or FAILED with this key, no other
--             job of that queue may hold it in one of those states; an insert that would
--             returns the holder instead (ON CONFLICT DO NOTHING, then a look-up). Unlike
--             idempotency_key it is free again once its job finished.
--
-- Nullable without a default: adding it rewrites nothing, and the index starts empty.
ALTER TABLE jobs ADD COLUMN unique_key text;

CREATE UNIQUE INDEX jobs_unique_key_active
    ON jobs (queue, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('PENDING', 'RUNNING', 'FAILED');

-- One job of a batch insert, as job_input_v2 (migration 0006) plus the unique key. A new
-- type rather than an ALTER TYPE, so processes of the previous version keep inserting with
-- job_input_v2 while a new one rolls out.
CREATE TYPE job_input_v3 AS (
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
    unique_key         text
);
