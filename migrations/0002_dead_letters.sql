-- Dead letters: one row per job while it is in state DLQ, written in the same transaction
-- that moves the job there and deleted by the one that moves it out (replay, retry).

CREATE TABLE dead_letters (
    job_id     uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    queue      text NOT NULL,
    job_type   text NOT NULL,
    payload    jsonb NOT NULL,
    reason     text NOT NULL,
    last_error text,
    attempts   integer NOT NULL CHECK (attempts >= 0),
    failed_at  timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX dead_letters_newest_first ON dead_letters (failed_at DESC, job_id DESC);
