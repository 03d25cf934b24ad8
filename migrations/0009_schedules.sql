-- Schedules of periodic jobs.
--
-- schedules: one row per schedule, by name. Every tick of `cron` (read in `timezone`)
--            enqueues a `job_type` job on `queue` with the stored payload and policy, and
--            idempotency key 'schedule:<name>:<tick, UTC>'. A scheduler fires a due
--            schedule (next_fire_at passed, not paused) under a row lock taken with
--            FOR UPDATE SKIP LOCKED, and stores its jobs and its new next_fire_at in the
--            same transaction: a tick fires once however many schedulers run.
--   source:       'code' (declared beside a handler, upserted when a worker or scheduler
--                 starts) or 'api' (POST /schedules).
--   next_fire_at: the next tick not fired yet; last_fire_at: the last tick fired.
CREATE TABLE schedules (
    name               text PRIMARY KEY,
    cron               text NOT NULL,
    timezone           text NOT NULL DEFAULT 'UTC',
    catch_up           boolean NOT NULL DEFAULT false,
    source             text NOT NULL,
    job_type           text NOT NULL,
    queue              text NOT NULL,
    payload            jsonb NOT NULL DEFAULT '{}'::jsonb,
    max_attempts       integer NOT NULL,
    initial_delay      double precision NOT NULL,
    backoff            double precision NOT NULL,
    max_delay          double precision NOT NULL,
    jitter             boolean NOT NULL,
    visibility_timeout double precision NOT NULL,
    timeout            double precision NOT NULL,
    paused             boolean NOT NULL DEFAULT false,
    next_fire_at       timestamptz NOT NULL,
    last_fire_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT schedules_source CHECK (source IN ('code', 'api'))
);

-- The scheduler's look-up of due schedules.
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE NOT paused;
