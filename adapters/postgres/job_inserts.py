"""The statements that store jobs: the INSERT of a batch (an array of records, or one array
per field), the INSERT of one job, and the parameters both take. The job store runs them
(job_store.insert_jobs_as), as does the SDK on an application's connection; a large batch
without keys goes by COPY instead (job_copy), which a test holds to the same rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskforge.adapters.postgres.connection import encode_json
from taskforge.domain.new_job import NewJob

_INSERT_FROM = """
INSERT INTO jobs (
    id, queue, job_type, payload, state, idempotency_key, unique_key, max_attempts,
    initial_delay, backoff, max_delay, jitter, visibility_timeout, traceparent, timeout,
    priority, next_run_at, published_at, created_at, updated_at
)
SELECT incoming.id, incoming.queue, incoming.job_type, incoming.payload::jsonb, 'PENDING',
       incoming.idempotency_key, incoming.unique_key, incoming.max_attempts,
       incoming.initial_delay, incoming.backoff, incoming.max_delay, incoming.jitter,
       incoming.visibility_timeout, incoming.traceparent, incoming.timeout, incoming.priority,
       due.run_at, {published_at}, now(), now()
FROM {incoming} AS incoming (
    id, queue, job_type, payload, idempotency_key, max_attempts, initial_delay, backoff,
    max_delay, jitter, visibility_timeout, traceparent, run_at, delay, timeout, unique_key,
    priority, position
)
-- NewJob keeps run_at inside the due-time range (1970-9999, never +-infinity), and a delay
-- is at most ten years, so now() + delay stays inside it too.
CROSS JOIN LATERAL (
    SELECT coalesce(incoming.run_at, now() + make_interval(secs => coalesce(incoming.delay, 0)))
        AS run_at
) AS due
-- In key order, so concurrent batches sharing keys wait for each other in one order (never
-- a deadlock); within a key, input order, so the first of two duplicates is the one stored.
ORDER BY incoming.idempotency_key, incoming.queue, incoming.unique_key, incoming.position
-- Any unique index: the idempotency key, the unique key of a queue's unfinished jobs, and
-- the id. A row skipped here is explained by insert_jobs_as (a holder, or JobIdTaken).
ON CONFLICT DO NOTHING
-- The rest of a created job is what the caller sent (see NewJob.stored); the payload as
-- jsonb stores it (keys reordered, numbers normalised), so the answer matches later reads.
-- `published`: stored as published, so the caller pushes its hint now (Added.needs_hint).
RETURNING id, payload, next_run_at, created_at, published_at IS NOT NULL AS published
"""

_PUBLISHED_IF_DUE = "CASE WHEN {due} <= now() THEN now() END"
PUBLISHED_WHEN_DUE = _PUBLISHED_IF_DUE.format(due="due.run_at")
"""The API pushes a due job's hint right after the commit, so it is stored as published (and
the INSERT answers `published`: the one place that decides which jobs get a hint now)."""
UNPUBLISHED = "NULL::timestamptz"
"""A job stored inside an application's own transaction: nothing pushes a hint at its
commit, so it stays unpublished and the scheduler publishes it (woken by the NOTIFY the
enqueue sends)."""

_BATCH = "unnest($1::job_input_v4[]) WITH ORDINALITY"

INSERT_JOBS = _INSERT_FROM.format(incoming=_BATCH, published_at=PUBLISHED_WHEN_DUE)
"""A batch: one array of job_input_v4 records (migration 0010), the payloads as JSON text.
Processes of the previous version may run while a new one rolls out, so a different record
shape gets a new type in a new migration, never an ALTER TYPE of an existing one."""

INSERT_JOBS_UNPUBLISHED = _INSERT_FROM.format(incoming=_BATCH, published_at=UNPUBLISHED)

_COLUMNS = """unnest(
    $1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::integer[], $7::float8[],
    $8::float8[], $9::float8[], $10::boolean[], $11::float8[], $12::text[],
    $13::timestamptz[], $14::float8[], $15::float8[], $16::text[], $17::smallint[]
) WITH ORDINALITY"""
INSERT_JOBS_UNPUBLISHED_BY_COLUMNS = _INSERT_FROM.format(
    incoming=_COLUMNS, published_at=UNPUBLISHED
)
"""A batch as one array per field (column_parameters), for a driver with no codec for the
job_input_v4 record type (psycopg), or an asyncpg connection that cannot encode the record
(an application's text codec for one of its fields' types): still one statement for the
batch."""
INSERT_JOBS_BY_COLUMNS = {
    True: _INSERT_FROM.format(incoming=_COLUMNS, published_at=PUBLISHED_WHEN_DUE),
    False: INSERT_JOBS_UNPUBLISHED_BY_COLUMNS,
}
"""By `published`, as INSERT_JOBS and INSERT_JOBS_UNPUBLISHED."""

_INSERT_ONE = """
INSERT INTO jobs (
    id, queue, job_type, payload, idempotency_key, max_attempts, initial_delay, backoff,
    max_delay, jitter, visibility_timeout, traceparent, next_run_at, timeout, unique_key,
    priority, state, published_at, created_at, updated_at
)
VALUES (
    $1::uuid, $2::text, $3::text, $4::text::jsonb, $5::text, $6::integer, $7::float8,
    $8::float8, $9::float8, $10::boolean, $11::float8, $12::text, {due}, $15::float8,
    $16::text, $17::smallint, 'PENDING', {published_at}, now(), now()
)
{on_conflict}
RETURNING id, payload, next_run_at, created_at, published_at IS NOT NULL AS published
"""
# The payload comes as JSON text, so the statement needs no jsonb codec on the connection
# (an application's own connection has none, or its own). Parameters in the order of
# insert_parameters, each once where psycopg runs it (psycopg_steps.psycopg_form).
_DUE_ONE = "coalesce($13::timestamptz, now() + make_interval(secs => coalesce($14::float8, 0)))"

_PUBLISHED_ONE = _PUBLISHED_IF_DUE.format(due=_DUE_ONE)
INSERT_JOB = _INSERT_ONE.format(
    due=_DUE_ONE, published_at=_PUBLISHED_ONE, on_conflict="ON CONFLICT DO NOTHING"
)
"""One job: the batch's INSERT for a single row, as a plain INSERT ... VALUES, without the
array to unpack, the sort and the lateral join. Tests store the same jobs both ways and
compare every column."""

INSERT_JOB_UNPUBLISHED = _INSERT_ONE.format(
    due=_DUE_ONE, published_at=UNPUBLISHED, on_conflict="ON CONFLICT DO NOTHING"
)
INSERT_JOB_ALONE = {
    True: _INSERT_ONE.format(due=_DUE_ONE, published_at=_PUBLISHED_ONE, on_conflict=""),
    False: _INSERT_ONE.format(due=_DUE_ONE, published_at=UNPUBLISHED, on_conflict=""),
}
"""By `published`: one job without keys, outside a transaction, where a failed statement
aborts nothing: without ON CONFLICT, a taken id (the only unique index such a job can meet)
fails the INSERT instead of being skipped, which saves Postgres the speculative insertion
that skipping takes (2% of a lone enqueue)."""


def insert_parameters(job: NewJob) -> tuple[Any, ...]:
    """The parameters of INSERT_JOB, which are also the fields of a job_input_v4 record."""
    policy = job.policy
    return (
        job.id,
        job.queue,
        job.job_type,
        encode_json(job.payload),
        job.idempotency_key,
        policy.max_attempts,
        float(policy.initial_delay),
        float(policy.backoff),
        float(policy.max_delay),
        policy.jitter,
        float(job.visibility_timeout),
        job.traceparent,
        job.run_at,
        None if job.delay is None else float(job.delay),
        float(job.timeout),
        job.unique_key,
        job.priority,
    )


def column_parameters(jobs: Sequence[NewJob]) -> list[list[Any]]:
    """The parameters of INSERT_JOBS_BY_COLUMNS: insert_parameters' fields, one list per
    field."""
    return [list(column) for column in zip(*map(insert_parameters, jobs), strict=True)]
