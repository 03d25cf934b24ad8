-- One job of a batch insert, as the API sends it: a batch travels as one array of these
-- records instead of fourteen parallel arrays, one per column. The client library checks
-- and encodes every element of every array on its own; a record's fields are encoded
-- straight through, so a batch of 1,000 jobs costs the API and Postgres less.
-- The payload is JSON text, cast to jsonb by the insert.
CREATE TYPE job_input AS (
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
    delay              double precision
);
