-- Jobs: the source of truth for every job's state, policy, lease and timing.
-- Timestamps are written from the database clock (now()), never from a client.

CREATE TABLE jobs (
    id                 uuid PRIMARY KEY,
    queue              text NOT NULL,
    job_type           text NOT NULL,
    payload            jsonb NOT NULL DEFAULT '{}'::jsonb,
    state              text NOT NULL DEFAULT 'PENDING',
    idempotency_key    text,
    max_attempts       integer NOT NULL,
    initial_delay      double precision NOT NULL,
    backoff            double precision NOT NULL,
    max_delay          double precision NOT NULL,
    jitter             boolean NOT NULL,
    visibility_timeout double precision NOT NULL,
    attempt_count      integer NOT NULL DEFAULT 0,
    retry_count        integer NOT NULL DEFAULT 0,
    next_run_at        timestamptz NOT NULL,
    lease_owner        text,
    lease_token        uuid,
    lease_expires_at   timestamptz,
    last_error         text,
    reason             text,
    traceparent        text,
    -- When a ready hint was last pushed for this job; NULL means it still needs publishing.
    published_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz,

    CONSTRAINT jobs_state_known CHECK (
        state IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'DLQ', 'CANCELLED')
    ),
    CONSTRAINT jobs_payload_is_object CHECK (jsonb_typeof(payload) = 'object'),
    CONSTRAINT jobs_max_attempts_positive CHECK (max_attempts >= 1),
    CONSTRAINT jobs_visibility_timeout_positive CHECK (visibility_timeout > 0),
    CONSTRAINT jobs_counts_not_negative CHECK (attempt_count >= 0 AND retry_count >= 0),
    -- A lease exists exactly while the job runs: fencing relies on no stale token surviving.
    CONSTRAINT jobs_lease_only_while_running CHECK (
        (state = 'RUNNING') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)
    )
);

CREATE UNIQUE INDEX jobs_idempotency_key_unique
    ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Claiming by id uses the primary key. Claiming without hints (claim_due) walks the due
-- pending jobs of a queue, oldest due first.
CREATE INDEX jobs_pending_due_by_queue
    ON jobs (queue, next_run_at, id) WHERE state = 'PENDING';

-- Re-publishing: pending jobs never published (delayed jobs coming due, after a Redis loss)
-- are found by due time; jobs whose hint has gone stale are found by when it was pushed.
CREATE INDEX jobs_pending_unpublished_due
    ON jobs (next_run_at, id) WHERE state = 'PENDING' AND published_at IS NULL;
CREATE INDEX jobs_pending_published_at
    ON jobs (published_at) WHERE state = 'PENDING' AND published_at IS NOT NULL;

-- Scheduler: retries that came due, and leases that ran out.
CREATE INDEX jobs_failed_due
    ON jobs (next_run_at, id) WHERE state = 'FAILED';
CREATE INDEX jobs_running_lease_expiry
    ON jobs (lease_expires_at, id) WHERE state = 'RUNNING';

-- Listings, newest first, for each filter the API offers (none, queue, state, both).
CREATE INDEX jobs_newest_first
    ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_queue_newest_first
    ON jobs (queue, created_at DESC, id DESC);
CREATE INDEX jobs_state_newest_first
    ON jobs (state, created_at DESC, id DESC);
CREATE INDEX jobs_queue_state_newest_first
    ON jobs (queue, state, created_at DESC, id DESC);
