-- The worker registry, and attempts that do not count (snoozes and hand-backs).
--
-- workers: one row per running worker process, written by the worker itself every few
--          seconds: what it serves (queues), what it can run (job_types), its slots, and
--          its last report (heartbeat_at, by the worker's clock). A row whose heartbeat is
--          older than the staleness bound (domain.workers.WORKER_STALE_AFTER) is not live
--          and is deleted by the next report of any worker. A worker that stops deletes its
--          own row.
CREATE TABLE workers (
    worker_id    text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    queues       text[] NOT NULL,
    job_types    text[] NOT NULL,
    concurrency  integer NOT NULL,
    busy_slots   integer NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);

CREATE INDEX workers_heartbeat_at ON workers (heartbeat_at);

-- snoozes:            times a handler asked to run the job later (taskforge.Snooze); each
--                     released the job without counting its attempt.
-- hand_backs:         times a worker handed the job back without running it to the end
--                     (shutdown, or no handler for its type), also without counting.
-- unknown_type_since: set when a worker first handed the job back for lack of a handler
--                     while no live worker serving its queue had one either; cleared when
--                     one is seen again. Past UNKNOWN_TYPE_GRACE from it, the job is
--                     dead-lettered as unknown.
--
-- Constant defaults and a nullable column: adding them rewrites nothing.
ALTER TABLE jobs
    ADD COLUMN snoozes            integer NOT NULL DEFAULT 0,
    ADD COLUMN hand_backs         integer NOT NULL DEFAULT 0,
    ADD COLUMN unknown_type_since timestamptz;
