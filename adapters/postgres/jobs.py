"""The Postgres job repository and dead-letter store: the source of truth.

Every transition is one conditional statement: it names the state it expects and, for a
worker's writes, the lease token, so a write whose condition no longer holds changes
nothing. Batched methods take arrays and `unnest` them. Statements that lock several rows
and may wait lock them in id order, so two of them never wait for each other in a cycle;
scheduler sweeps use `FOR UPDATE SKIP LOCKED` instead, so concurrent schedulers share the
work without waiting and never handle one job twice. Timestamps come from the database's
`now()` (the transaction's start), never from Python.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from taskforge.application.ports import ListFilter
from taskforge.domain.errors import (
    DeadLetterNotFound,
    InvalidTransition,
    JobIdTaken,
    JobNotFound,
    Unavailable,
)
from taskforge.domain.job import (
    MAX_ATTEMPT_ERRORS,
    AttemptError,
    DeadLetter,
    Job,
    Lease,
    NewJob,
    QueueStats,
    ReadyHint,
)
from taskforge.domain.outcome import (
    EXHAUSTED_REASON,
    LEASE_EXPIRED_ERROR,
    MANUAL_DLQ_REASON,
    DeadLettered,
    RetryLater,
    Settlement,
    target_state,
)
from taskforge.domain.policy import RetryPolicy
from taskforge.domain.states import OPERATOR_RETRY_SOURCES, JobState, sources_of
from taskforge.domain.validation import Page

PENDING, RUNNING, SUCCEEDED, FAILED, DLQ, CANCELLED = JobState

INVALID_TRANSITION_SQLSTATE = "TF001"
"""Raised by the `jobs_state_transition` trigger when an UPDATE makes an illegal move."""

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionError and TimeoutError
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    # A session the server ended while it sat idle in the pool can fail its next query with
    # a protocol-state error instead of a connection error.
    asyncpg.InternalClientError,
    # The server refused the session: no such database, no such role, wrong password.
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
)
"""Failures of the connection rather than of a statement: the store is unavailable."""

ACQUIRE_TIMEOUT = 10.0
"""Seconds to wait for a pooled connection before reporting the store unavailable."""

COMMAND_TIMEOUT = 15.0
"""Seconds a statement may take before the store counts as unavailable: a connection that
went silent (a network partition, a frozen server) would otherwise hang its caller for as
long as the silence lasts. TaskForge's statements take milliseconds."""

PING_TIMEOUT = 2.0

RUN_MIGRATE = "run `taskforge migrate`"
"""What every message about a missing or outdated schema tells the operator to do."""

# A job that changes state between a refused operator move and the look-up that explains
# the refusal is tried again, a bounded number of times.
_OPERATOR_ATTEMPTS = 3

JOB_FIELDS = (
    "id",
    "queue",
    "job_type",
    "payload",
    "state",
    "idempotency_key",
    "max_attempts",
    "initial_delay",
    "backoff",
    "max_delay",
    "jitter",
    "visibility_timeout",
    "timeout",
    "attempt_count",
    "retry_count",
    "next_run_at",
    "lease_owner",
    "lease_token",
    "lease_expires_at",
    "last_error",
    "reason",
    "traceparent",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
)
JOB_COLUMNS = ", ".join(JOB_FIELDS)
"""A job without its `errors` (up to 160 KiB a job), as lists, claims and enqueues read it."""
JOB_DETAIL_COLUMNS = f"{JOB_COLUMNS}, errors"
"""A job with its `errors`, as statements that answer for one job read it."""
# Qualified, for statements that join `jobs` with a CTE sharing some column names.
JOBS_COLUMNS = ", ".join(f"jobs.{field}" for field in JOB_FIELDS)

DEAD_LETTER_COLUMNS = (
    "job_id, queue, job_type, payload, reason, last_error, attempts, failed_at, created_at, "
    "updated_at"
)

NO_LEASE = "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL"

# Back to PENDING, due now. The hint for it is pushed by the caller right after, so it counts
# as published.
REQUEUE = f"""
    state = 'PENDING',
    next_run_at = now(),
    published_at = now(),
    finished_at = NULL,
    reason = NULL,
    updated_at = now(),
    {NO_LEASE}"""


def _with_error(error: str, traceback: str) -> str:
    """The job's `errors` with its current attempt's failure appended (`error` and
    `traceback` are SQL expressions), keeping the last MAX_ATTEMPT_ERRORS."""
    return f"""jsonb_path_query_array(
        jobs.errors || jsonb_build_array(jsonb_build_object(
            'attempt', jobs.attempt_count,
            'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'error', {error},
            'traceback', {traceback}
        )),
        '$[last - {MAX_ATTEMPT_ERRORS - 1} to last]'
    )"""


# Writes the dead_letters row for every row of the named CTE that is now in DLQ. The CTE
# returns the job's id, queue, job_type, payload, reason, last_error and attempt_count.
_ENTER_DLQ = """
    INSERT INTO dead_letters (
        job_id, queue, job_type, payload, reason, last_error, attempts,
        failed_at, created_at, updated_at
    )
    SELECT id, queue, job_type, payload, reason, last_error, attempt_count,
           now(), now(), now()
    FROM {source}
    WHERE state = 'DLQ'
    ON CONFLICT (job_id) DO UPDATE SET
        queue = EXCLUDED.queue,
        job_type = EXCLUDED.job_type,
        payload = EXCLUDED.payload,
        reason = EXCLUDED.reason,
        last_error = EXCLUDED.last_error,
        attempts = EXCLUDED.attempts,
        failed_at = EXCLUDED.failed_at,
        created_at = EXCLUDED.created_at,
        updated_at = EXCLUDED.updated_at"""

_INSERT_FROM = """
INSERT INTO jobs (
    id, queue, job_type, payload, state, idempotency_key, max_attempts, initial_delay,
    backoff, max_delay, jitter, visibility_timeout, traceparent, timeout, next_run_at,
    published_at, created_at, updated_at
)
SELECT incoming.id, incoming.queue, incoming.job_type, incoming.payload::jsonb, 'PENDING',
       incoming.idempotency_key, incoming.max_attempts, incoming.initial_delay,
       incoming.backoff, incoming.max_delay, incoming.jitter, incoming.visibility_timeout,
       incoming.traceparent, incoming.timeout, due.run_at,
       CASE WHEN due.run_at <= now() THEN now() END,
       now(), now()
FROM {incoming} AS incoming (
    id, queue, job_type, payload, idempotency_key, max_attempts, initial_delay, backoff,
    max_delay, jitter, visibility_timeout, traceparent, run_at, delay, timeout, position
)
-- NewJob keeps run_at inside the due-time range (1970-9999, never +-infinity), and a delay
-- is at most ten years, so now() + delay stays inside it too.
CROSS JOIN LATERAL (
    SELECT coalesce(incoming.run_at, now() + make_interval(secs => coalesce(incoming.delay, 0)))
        AS run_at
) AS due
-- In key order, so concurrent batches sharing keys wait for each other in one order (never
-- a deadlock); within a key, input order, so the first of two duplicates is the one stored.
ORDER BY incoming.idempotency_key, incoming.position
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
-- The rest of a created job is what the caller sent (see NewJob.stored); the payload as
-- jsonb stores it (keys reordered, numbers normalised), so the answer matches later reads.
RETURNING id, payload, next_run_at, created_at
"""

INSERT_JOBS = _INSERT_FROM.format(incoming="unnest($1::job_input_v2[]) WITH ORDINALITY")
"""A batch: one array of job_input_v2 records (migration 0006), the payloads as JSON text.
Processes of the previous version may run while a new one rolls out, so a different record
shape gets a new type in a new migration, never an ALTER TYPE of an existing one."""

INSERT_JOB = _INSERT_FROM.format(
    incoming="""(VALUES (
    $1::uuid, $2::text, $3::text, $4::jsonb, $5::text, $6::integer, $7::float8, $8::float8,
    $9::float8, $10::boolean, $11::float8, $12::text, $13::timestamptz, $14::float8,
    $15::float8, 1
))"""
)
"""One job: the same statement without the array, which costs Postgres more to unpack than
the single row it carries (a lone client's enqueue is ~20% faster)."""

SELECT_JOBS_BY_IDEMPOTENCY_KEY = f"""
SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = ANY($1::text[])
"""

SELECT_JOB = f"SELECT {JOB_DETAIL_COLUMNS} FROM jobs WHERE id = $1"

SELECT_JOB_STATE = "SELECT state FROM jobs WHERE id = $1"


def _find_jobs(where: str) -> str:
    # One statement, so the page and its total come from one snapshot; the LEFT JOIN keeps
    # a row carrying the total even when the page is empty.
    return f"""
SELECT matching.total, page.*
FROM (SELECT count(*) AS total FROM jobs {where}) AS matching
LEFT JOIN LATERAL (
    SELECT {JOB_COLUMNS} FROM jobs {where}
    ORDER BY created_at DESC, id DESC
    LIMIT $1 OFFSET $2
) AS page ON true
"""


FIND_JOBS = _find_jobs("")
FIND_JOBS_IN_QUEUE = _find_jobs("WHERE queue = $3")
FIND_JOBS_IN_STATE = _find_jobs("WHERE state = $3")
FIND_JOBS_IN_QUEUE_AND_STATE = _find_jobs("WHERE queue = $3 AND state = $4")

# $2 is the lease owner in both claims.
_CLAIM = """
    state = 'RUNNING',
    attempt_count = jobs.attempt_count + 1,
    lease_owner = $2,
    lease_token = gen_random_uuid(),
    lease_expires_at = now() + make_interval(secs => jobs.visibility_timeout),
    started_at = now(),
    finished_at = NULL,
    updated_at = now()"""

# The hinted rows are found by primary key alone and their state is checked once they are
# locked. Putting the state and due-time conditions in the lookup would let the planner
# pick the pending-jobs index instead, a scan that grows with the backlog; it does so
# whenever the statistics say the table is small (a queue table is often empty when
# analyzed, then fills quickly).
CLAIM_JOBS = f"""
WITH locked AS (
    SELECT id, state, next_run_at FROM jobs
    WHERE id = ANY($1::uuid[])
    ORDER BY id
    FOR UPDATE
), claimable AS (
    SELECT id FROM locked WHERE state = 'PENDING' AND next_run_at <= now()
)
UPDATE jobs SET {_CLAIM}
FROM claimable
WHERE jobs.id = claimable.id
RETURNING {JOBS_COLUMNS}
"""

CLAIM_DUE_JOBS = f"""
WITH due AS (
    SELECT id, next_run_at FROM jobs
    WHERE queue = ANY($1::text[]) AND state = 'PENDING' AND next_run_at <= now()
    ORDER BY next_run_at, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE jobs SET {_CLAIM}
    FROM due
    WHERE jobs.id = due.id AND jobs.state = 'PENDING'
    RETURNING {JOBS_COLUMNS}, due.next_run_at AS due_at
)
SELECT {JOB_COLUMNS} FROM claimed ORDER BY due_at, id
"""

# The RUNNING jobs whose lease token matches one of ($1 ids, $2 tokens), locked in id order.
_HELD_LEASES = """
held AS (
    SELECT jobs.id, lease.token
    FROM jobs
    JOIN unnest($1::uuid[], $2::uuid[]) AS lease (job_id, token)
        ON jobs.id = lease.job_id AND jobs.lease_token = lease.token
    WHERE jobs.state = 'RUNNING'
    ORDER BY jobs.id
    FOR UPDATE OF jobs
)"""

_STILL_HELD = "jobs.id = held.id AND jobs.state = 'RUNNING' AND jobs.lease_token = held.token"

HEARTBEAT = f"""
WITH {_HELD_LEASES}
UPDATE jobs SET
    lease_expires_at = now() + make_interval(secs => jobs.visibility_timeout),
    updated_at = now()
FROM held
WHERE {_STILL_HELD}
RETURNING jobs.id
"""

# The attempt was not finished, so it does not count.
RELEASE = f"""
WITH {_HELD_LEASES}
UPDATE jobs SET {REQUEUE}, attempt_count = jobs.attempt_count - 1
FROM held
WHERE {_STILL_HELD}
RETURNING jobs.id
"""

# One statement for a whole batch of outcomes: $3 is each job's target state, $4 the error
# (FAILED, DLQ), $5 the retry delay (FAILED), $6 the dead-letter reason (DLQ), $7 the
# error's traceback (FAILED, DLQ; may be NULL).
SETTLE = f"""
WITH held AS (
    SELECT jobs.id, outcome.token, outcome.target, outcome.error, outcome.delay,
           outcome.reason, outcome.traceback
    FROM jobs
    JOIN unnest(
        $1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::interval[], $6::text[], $7::text[]
    ) AS outcome (job_id, token, target, error, delay, reason, traceback)
        ON jobs.id = outcome.job_id AND jobs.lease_token = outcome.token
    WHERE jobs.state = 'RUNNING'
    ORDER BY jobs.id
    FOR UPDATE OF jobs
), settled AS (
    UPDATE jobs SET
        state = held.target,
        last_error = CASE WHEN held.target = 'SUCCEEDED' THEN jobs.last_error
                          ELSE held.error END,
        errors = CASE WHEN held.target = 'SUCCEEDED' THEN jobs.errors
                      ELSE {_with_error("held.error", "held.traceback")} END,
        reason = CASE WHEN held.target = 'DLQ' THEN held.reason ELSE jobs.reason END,
        next_run_at = CASE WHEN held.target = 'FAILED' THEN now() + held.delay
                           ELSE jobs.next_run_at END,
        finished_at = CASE WHEN held.target = 'FAILED' THEN jobs.finished_at ELSE now() END,
        updated_at = now(),
        {NO_LEASE}
    FROM held
    WHERE {_STILL_HELD}
    RETURNING jobs.id, jobs.queue, jobs.job_type, jobs.payload, jobs.state, jobs.reason,
              jobs.last_error, jobs.attempt_count
), dead_lettered AS ({_ENTER_DLQ.format(source="settled")}
)
SELECT id FROM settled
"""

CANCEL = f"""
UPDATE jobs SET
    state = 'CANCELLED',
    reason = $2,
    finished_at = now(),
    updated_at = now(),
    {NO_LEASE}
WHERE id = $1 AND state = ANY($3::text[])
RETURNING {JOB_DETAIL_COLUMNS}
"""

DEAD_LETTER = f"""
WITH moved AS (
    UPDATE jobs SET
        state = 'DLQ',
        reason = $2,
        finished_at = now(),
        updated_at = now(),
        {NO_LEASE}
    WHERE id = $1 AND state = ANY($3::text[])
    RETURNING {JOB_DETAIL_COLUMNS}
), dead_lettered AS ({_ENTER_DLQ.format(source="moved")}
)
SELECT {JOB_DETAIL_COLUMNS} FROM moved
"""


def _requeue_and_forget(counts: str, where: str) -> str:
    """Back to PENDING, due now, and out of the dead letters, in one statement."""
    return f"""
WITH moved AS (
    UPDATE jobs SET {REQUEUE}, {counts}
    WHERE {where}
    RETURNING {JOB_DETAIL_COLUMNS}
), forgotten AS (
    DELETE FROM dead_letters WHERE job_id IN (SELECT id FROM moved)
)
SELECT {JOB_DETAIL_COLUMNS} FROM moved
"""


# From FAILED the counts are kept (the retry continues the job's history); from DLQ and
# CANCELLED the job starts over, as for a replay.
RETRY = _requeue_and_forget(
    "attempt_count = CASE WHEN jobs.state = 'FAILED' THEN jobs.attempt_count ELSE 0 END, "
    "retry_count = CASE WHEN jobs.state = 'FAILED' THEN jobs.retry_count ELSE 0 END",
    "id = $1 AND state = ANY($2::text[])",
)

# A job has a dead letter exactly while it is in DLQ: both are written, and removed, by the
# same statements.
REPLAY = _requeue_and_forget("attempt_count = 0, retry_count = 0", "id = $1 AND state = 'DLQ'")

PROMOTE_DUE = f"""
WITH due AS (
    SELECT id, next_run_at FROM jobs
    WHERE state = 'FAILED' AND next_run_at <= now()
    ORDER BY next_run_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), promoted AS (
    UPDATE jobs SET {REQUEUE}, retry_count = jobs.retry_count + 1
    FROM due
    WHERE jobs.id = due.id AND jobs.state = 'FAILED'
    RETURNING jobs.id, jobs.queue, jobs.traceparent, due.next_run_at AS due_at
)
SELECT queue, id, traceparent FROM promoted ORDER BY due_at, id
"""

# Attempts left: back to PENDING (the expired attempt still counts). None left: DLQ.
# $2 is the error recorded on the job, $3 the dead-letter reason.
REAP_EXPIRED = f"""
WITH expired AS (
    SELECT id, lease_expires_at FROM jobs
    WHERE state = 'RUNNING' AND lease_expires_at < now()
    ORDER BY lease_expires_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), reaped AS (
    UPDATE jobs SET
        state = CASE WHEN jobs.attempt_count >= jobs.max_attempts THEN 'DLQ'
                     ELSE 'PENDING' END,
        last_error = $2::text,
        errors = {_with_error("$2::text", "NULL::text")},
        reason = CASE WHEN jobs.attempt_count >= jobs.max_attempts THEN $3::text END,
        next_run_at = CASE WHEN jobs.attempt_count >= jobs.max_attempts THEN jobs.next_run_at
                           ELSE now() END,
        published_at = CASE WHEN jobs.attempt_count >= jobs.max_attempts
                            THEN jobs.published_at ELSE now() END,
        finished_at = CASE WHEN jobs.attempt_count >= jobs.max_attempts THEN now() END,
        updated_at = now(),
        {NO_LEASE}
    FROM expired
    WHERE jobs.id = expired.id AND jobs.state = 'RUNNING'
    RETURNING jobs.id, jobs.queue, jobs.job_type, jobs.payload, jobs.state, jobs.reason,
              jobs.last_error, jobs.attempt_count, jobs.traceparent,
              expired.lease_expires_at AS expired_at
), dead_lettered AS ({_ENTER_DLQ.format(source="reaped")}
)
SELECT queue, id, state, traceparent FROM reaped ORDER BY expired_at, id
"""

FIND_UNPUBLISHED = """
WITH stale AS (
    SELECT id, next_run_at FROM jobs
    WHERE state = 'PENDING'
      AND next_run_at <= now()
      AND (published_at IS NULL OR published_at < now() - make_interval(secs => $2))
    ORDER BY next_run_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE jobs SET published_at = now()
    FROM stale
    WHERE jobs.id = stale.id AND jobs.state = 'PENDING'
    RETURNING jobs.id, jobs.queue, jobs.traceparent, stale.next_run_at AS due_at
)
SELECT queue, id, traceparent FROM marked ORDER BY due_at, id
"""

COUNT_DUE = """
SELECT queue, count(*) AS due FROM jobs
WHERE state = 'PENDING' AND next_run_at <= now() AND queue = ANY($1::text[])
GROUP BY queue
"""

# A pending row someone else holds is about to leave PENDING or to be published by its
# holder, so skipping it is safe, and skipping means this sweep never waits on a claim.
# In bounded batches, each its own transaction: one statement over the whole backlog
# would hold every pending row locked while it runs, and claims wait for those locks.
MARK_UNPUBLISHED_BATCH = 1000

MARK_UNPUBLISHED = """
WITH pending AS (
    SELECT id FROM jobs
    WHERE state = 'PENDING' AND id > $2
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE jobs SET published_at = NULL
    FROM pending
    WHERE jobs.id = pending.id AND jobs.state = 'PENDING'
    RETURNING 1
)
SELECT (SELECT count(*) FROM marked) AS marked,
       (SELECT count(*) FROM pending) AS seen,
       (SELECT id FROM pending ORDER BY id DESC LIMIT 1) AS last
"""

# Oldest first through the (state, created_at) index: jobs created long ago are the ones
# that finished long ago, so the scan stops after about `limit` rows.
PRUNE_FINISHED = """
WITH doomed AS (
    SELECT id FROM jobs
    WHERE state = $1 AND finished_at < now() - make_interval(secs => $2)
    ORDER BY created_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM jobs USING doomed WHERE jobs.id = doomed.id RETURNING 1
)
SELECT count(*) FROM deleted
"""

COUNT_BY_QUEUE_AND_STATE = "SELECT queue, state, count(*) AS jobs FROM jobs GROUP BY queue, state"

PING = "SELECT 1"

FIND_DEAD_LETTERS = f"""
SELECT matching.total, page.*
FROM (SELECT count(*) AS total FROM dead_letters) AS matching
LEFT JOIN LATERAL (
    SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters
    ORDER BY failed_at DESC, job_id DESC
    LIMIT $1 OFFSET $2
) AS page ON true
"""

SELECT_DEAD_LETTER = f"SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE job_id = $1"

COUNT_DEAD_LETTERS = "SELECT count(*) FROM dead_letters"


ConnectionCheck = Callable[[asyncpg.Connection], Awaitable[None]]
"""Runs on each new connection before the pool hands it out; raising refuses it."""


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, check: ConnectionCheck | None = None
) -> asyncpg.Pool:
    """A connection pool whose connections read and write `jsonb` as Python objects, each
    passed through `check` first (the schema check, in the service roles).
    Raises Unavailable when Postgres cannot be reached."""

    async def init(conn: asyncpg.Connection) -> None:
        await _init_connection(conn)
        if check is not None:
            await check(conn)

    try:
        return await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=init,
            connection_class=_PooledConnection,
            command_timeout=COMMAND_TIMEOUT,
        )
    except CONNECTION_ERRORS as exc:
        raise Unavailable("postgres", str(exc)) from exc


class _PooledConnection(asyncpg.Connection):
    """Skips the session reset (RESET ALL, UNLISTEN, advisory-lock release...) that asyncpg
    sends on every release: TaskForge sets no session state, so it is a wasted round trip
    per statement. An open transaction is still rolled back by the pool."""

    def get_reset_query(self) -> str:
        return ""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_json, decoder=msgspec.json.decode
    )


def _encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


@asynccontextmanager
async def _connection(pool: asyncpg.Pool) -> AsyncIterator[PoolConnectionProxy]:
    """A pooled connection; connection-level failures, while acquiring or while in use,
    become Unavailable."""
    try:
        async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
            yield conn
    except CONNECTION_ERRORS as exc:
        raise Unavailable("postgres", str(exc) or type(exc).__name__) from exc
    except asyncpg.UndefinedTableError as exc:
        # The schema check passed once, then the tables went (a database restored or
        # recreated under a running process): the same answer as a schema never migrated.
        raise Unavailable("postgres", f"{exc.args[0]}: {RUN_MIGRATE}") from exc


class PostgresJobRepository:
    """JobRepository on Postgres; semantics identical to InMemoryJobRepository."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(self, job: NewJob) -> tuple[Job, bool]:
        async with _connection(self._pool) as conn:
            [result] = await _insert(conn, [job])
            return result

    async def add_many(self, jobs: Sequence[NewJob]) -> list[tuple[Job, bool]]:
        if not jobs:
            return []
        async with _connection(self._pool) as conn:
            if len(jobs) == 1:
                # Its INSERT is the only statement that can write: atomic on its own, no
                # BEGIN/COMMIT round trips around it.
                return await _insert(conn, jobs)
            # A batch's INSERT may be followed by a look-up of taken keys and another INSERT:
            # one transaction keeps it all or none, also when a later statement fails, the
            # rows cannot be read back or the call is cancelled.
            async with conn.transaction():
                return await _insert(conn, jobs)

    async def get(self, job_id: UUID) -> Job | None:
        async with _connection(self._pool) as conn:
            row = await conn.fetchrow(SELECT_JOB, job_id)
        return None if row is None else _job_from_row(row)

    async def find(self, where: ListFilter, page: Page) -> tuple[list[Job], int]:
        statement, filters = _find_statement(where)
        async with _connection(self._pool) as conn:
            rows = await conn.fetch(statement, page.limit, page.offset, *filters)
        jobs = [_job_from_row(row) for row in rows if row["id"] is not None]
        return jobs, rows[0]["total"]

    async def claim(self, job_ids: Sequence[UUID], owner: str) -> list[Job]:
        if not job_ids:
            return []
        async with _connection(self._pool) as conn:
            rows = await conn.fetch(CLAIM_JOBS, list(job_ids), owner)
        claimed = {row["id"]: _job_from_row(row) for row in rows}
        return [claimed[job_id] for job_id in dict.fromkeys(job_ids) if job_id in claimed]

    async def claim_due(self, queues: Sequence[str], limit: int, owner: str) -> list[Job]:
        if not queues or limit < 1:
            return []
        async with _connection(self._pool) as conn:
            rows = await conn.fetch(CLAIM_DUE_JOBS, list(queues), owner, limit)
        return [_job_from_row(row) for row in rows]

    async def heartbeat(self, leases: Sequence[Lease]) -> set[UUID]:
        return await self._held_write(HEARTBEAT, leases)

    async def settle(self, settlements: Sequence[Settlement]) -> set[UUID]:
        if not settlements:
            return set()
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
        for settlement in settlements:
            error = delay = reason = traceback = None
            match settlement:
                case RetryLater():
                    error, delay = settlement.error, settlement.delay
                    traceback = settlement.traceback
                case DeadLettered():
                    error, reason = settlement.error, settlement.reason
                    traceback = settlement.traceback
            row = (
                settlement.lease.job_id,
                settlement.lease.token,
                target_state(settlement).value,
                error,
                delay,
                reason,
                traceback,
            )
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        async with _connection(self._pool) as conn:
            rows = await conn.fetch(SETTLE, *columns)
        return {row["id"] for row in rows}

    async def release(self, leases: Sequence[Lease]) -> set[UUID]:
        return await self._held_write(RELEASE, leases)

    async def _held_write(self, statement: str, leases: Sequence[Lease]) -> set[UUID]:
        if not leases:
            return set()
        ids = [lease.job_id for lease in leases]
        tokens = [lease.token for lease in leases]
        async with _connection(self._pool) as conn:
            rows = await conn.fetch(statement, ids, tokens)
        return {row["id"] for row in rows}

    async def cancel(self, job_id: UUID, reason: str | None) -> Job:
        sources = sources_of(CANCELLED)
        return await self._operator_move(
            CANCEL, (job_id, reason, _names(sources)), job_id, CANCELLED, sources
        )

    async def dead_letter(self, job_id: UUID, reason: str | None) -> Job:
        sources = sources_of(DLQ)
        arguments = (job_id, reason or MANUAL_DLQ_REASON, _names(sources))
        return await self._operator_move(DEAD_LETTER, arguments, job_id, DLQ, sources)

    async def retry(self, job_id: UUID) -> Job:
        sources = OPERATOR_RETRY_SOURCES
        return await self._operator_move(RETRY, (job_id, _names(sources)), job_id, PENDING, sources)

    async def replay(self, job_id: UUID) -> Job:
        async with _connection(self._pool) as conn:
            row = await conn.fetchrow(REPLAY, job_id)
        if row is None:  # no such job, or not in DLQ: either way no dead letter
            raise DeadLetterNotFound(job_id)
        return _job_from_row(row)

    async def _operator_move(
        self,
        statement: str,
        arguments: Sequence[object],
        job_id: UUID,
        target: JobState,
        sources: frozenset[JobState],
    ) -> Job:
        """Run a conditional operator transition; when it changes nothing, look the job up
        to raise JobNotFound or InvalidTransition, as the in-memory repository does."""
        current = target.value
        for _ in range(_OPERATOR_ATTEMPTS):
            async with _connection(self._pool) as conn:
                row = await conn.fetchrow(statement, *arguments)
                if row is not None:
                    return _job_from_row(row)
                current = await conn.fetchval(SELECT_JOB_STATE, job_id)
            if current is None:
                raise JobNotFound(job_id)
            if JobState(current) not in sources:
                break
            # The job reached a state we may move it from after the update looked: try again.
        raise InvalidTransition(job_id, current, target.value)

    async def promote_due(self, limit: int) -> list[ReadyHint]:
        async with _connection(self._pool) as conn:
            rows = await conn.fetch(PROMOTE_DUE, limit)
        return [_hint_from_row(row) for row in rows]

    async def reap_expired(self, limit: int) -> tuple[list[ReadyHint], int]:
        async with _connection(self._pool) as conn:
            rows = await conn.fetch(REAP_EXPIRED, limit, LEASE_EXPIRED_ERROR, EXHAUSTED_REASON)
        hints = [_hint_from_row(row) for row in rows if row["state"] == PENDING]
        return hints, len(rows) - len(hints)

    async def find_unpublished(self, limit: int, older_than: float) -> list[ReadyHint]:
        async with _connection(self._pool) as conn:
            rows = await conn.fetch(FIND_UNPUBLISHED, limit, float(older_than))
        return [_hint_from_row(row) for row in rows]

    async def count_due(self, queues: Sequence[str]) -> dict[str, int]:
        async with _connection(self._pool) as conn:
            rows = await conn.fetch(COUNT_DUE, list(queues))
        return {row["queue"]: row["due"] for row in rows}

    async def mark_unpublished(self) -> int:
        marked, after = 0, UUID(int=0)
        async with _connection(self._pool) as conn:
            while True:
                row = await conn.fetchrow(MARK_UNPUBLISHED, MARK_UNPUBLISHED_BATCH, after)
                assert row is not None
                marked += row["marked"]
                if row["seen"] < MARK_UNPUBLISHED_BATCH:
                    return int(marked)
                after = row["last"]

    async def prune_finished(self, older_than: float, limit: int) -> int:
        deleted = 0
        async with _connection(self._pool) as conn:
            for state in (SUCCEEDED, CANCELLED):
                if deleted < limit:
                    count = await conn.fetchval(
                        PRUNE_FINISHED, state.value, older_than, limit - deleted
                    )
                    deleted += int(count)
        return deleted

    async def stats(self) -> list[QueueStats]:
        async with _connection(self._pool) as conn:
            rows = await conn.fetch(COUNT_BY_QUEUE_AND_STATE)
        per_queue: dict[str, dict[JobState, int]] = {}
        for row in rows:
            counts = per_queue.setdefault(row["queue"], dict.fromkeys(JobState, 0))
            counts[JobState(row["state"])] = row["jobs"]
        # Sorted here, not in SQL, so the order is Python's string order whatever the
        # database's collation.
        return [QueueStats(queue, counts) for queue, counts in sorted(per_queue.items())]

    async def ping(self) -> None:
        async with _connection(self._pool) as conn:
            await conn.fetchval(PING, timeout=PING_TIMEOUT)


class PostgresDeadLetterStore:
    """DeadLetterStore on Postgres: reads the rows PostgresJobRepository writes."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def find(self, page: Page) -> tuple[list[DeadLetter], int]:
        async with _connection(self._pool) as conn:
            rows = await conn.fetch(FIND_DEAD_LETTERS, page.limit, page.offset)
        entries = [_dead_letter_from_row(row) for row in rows if row["job_id"] is not None]
        return entries, rows[0]["total"]

    async def get(self, job_id: UUID) -> DeadLetter | None:
        async with _connection(self._pool) as conn:
            row = await conn.fetchrow(SELECT_DEAD_LETTER, job_id)
        return None if row is None else _dead_letter_from_row(row)

    async def count(self) -> int:
        async with _connection(self._pool) as conn:
            total: int = await conn.fetchval(COUNT_DEAD_LETTERS)
        return total


async def _insert(
    conn: PoolConnectionProxy, jobs: Sequence[NewJob], attempts: int = 3
) -> list[tuple[Job, bool]]:
    """Insert the jobs in one statement; a job whose idempotency key is taken yields the
    job that holds it (stored earlier, or earlier in this batch) and False."""
    try:
        if len(jobs) == 1:
            rows = await conn.fetch(INSERT_JOB, *_insert_row(jobs[0], jobs[0].payload))
        else:
            records = [_insert_row(job, _encode_json(job.payload)) for job in jobs]
            rows = await conn.fetch(INSERT_JOBS, records)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "jobs_pkey":
            raise JobIdTaken(_taken_id(exc)) from exc
        raise
    created = {row["id"]: row for row in rows}
    taken = [job for job in jobs if job.id not in created]
    holders: dict[str | None, Job] = {}
    retried: dict[UUID, tuple[Job, bool]] = {}
    if taken:
        keys = [job.idempotency_key for job in taken]
        for row in await conn.fetch(SELECT_JOBS_BY_IDEMPOTENCY_KEY, keys):
            holders[row["idempotency_key"]] = _job_from_row(row)
        if freed := [job for job in taken if job.idempotency_key not in holders]:
            # Retention deleted the holder between the two statements: the key is free
            # again, so those jobs are inserted after all (or meet a newer holder).
            if attempts <= 1:
                raise RuntimeError("idempotency keys kept changing hands; try again")
            outcomes = await _insert(conn, freed, attempts - 1)
            retried = {job.id: outcome for job, outcome in zip(freed, outcomes, strict=True)}
    return [
        (job.stored(inserted["next_run_at"], inserted["created_at"], inserted["payload"]), True)
        if (inserted := created.get(job.id)) is not None
        else retried.get(job.id) or (holders[job.idempotency_key], False)
        for job in jobs
    ]


_KEY_DETAIL = re.compile(r"Key \(id\)=\(([0-9a-f-]{36})\)")


def _taken_id(exc: asyncpg.UniqueViolationError) -> UUID | None:
    """The id Postgres names in the violation's detail, if it does."""
    found = _KEY_DETAIL.search(exc.detail or "")
    return UUID(found.group(1)) if found else None


def _insert_row(job: NewJob, payload: Any) -> tuple[Any, ...]:
    """The parameters of INSERT_JOB, which are also the fields of a job_input_v2 record."""
    policy = job.policy
    return (
        job.id,
        job.queue,
        job.job_type,
        payload,
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
    )


def _find_statement(where: ListFilter) -> tuple[str, list[str]]:
    match where.queue, where.state:
        case None, None:
            return FIND_JOBS, []
        case str() as queue, None:
            return FIND_JOBS_IN_QUEUE, [queue]
        case None, JobState() as state:
            return FIND_JOBS_IN_STATE, [state.value]
        case str() as queue, JobState() as state:
            return FIND_JOBS_IN_QUEUE_AND_STATE, [queue, state.value]
    raise TypeError(f"unsupported filter {where!r}")


def _names(states: frozenset[JobState]) -> list[str]:
    return sorted(state.value for state in states)


def _hint_from_row(row: asyncpg.Record) -> ReadyHint:
    return ReadyHint(row["queue"], row["id"], row["traceparent"])


def _job_from_row(row: asyncpg.Record) -> Job:
    return Job(
        id=row["id"],
        queue=row["queue"],
        job_type=row["job_type"],
        payload=row["payload"],
        state=JobState(row["state"]),
        policy=RetryPolicy.of(
            row["max_attempts"],
            row["initial_delay"],
            row["backoff"],
            row["max_delay"],
            row["jitter"],
        ),
        visibility_timeout=row["visibility_timeout"],
        timeout=row["timeout"],
        next_run_at=row["next_run_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        idempotency_key=row["idempotency_key"],
        attempt_count=row["attempt_count"],
        retry_count=row["retry_count"],
        lease_owner=row["lease_owner"],
        lease_token=row["lease_token"],
        lease_expires_at=row["lease_expires_at"],
        last_error=row["last_error"],
        reason=row["reason"],
        traceparent=row["traceparent"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        errors=_errors_from_json(row.get("errors")),
    )


def _errors_from_json(entries: list[dict[str, Any]] | None) -> tuple[AttemptError, ...]:
    """The `errors` column as written by _with_error; None when the row was read without it."""
    return tuple(
        AttemptError(
            attempt=entry["attempt"],
            at=datetime.fromisoformat(entry["at"]),
            error=entry["error"],
            traceback=entry["traceback"],
        )
        for entry in entries or ()
    )


def _dead_letter_from_row(row: asyncpg.Record) -> DeadLetter:
    return DeadLetter(
        job_id=row["job_id"],
        queue=row["queue"],
        job_type=row["job_type"],
        payload=row["payload"],
        reason=row["reason"],
        last_error=row["last_error"],
        attempts=row["attempts"],
        failed_at=row["failed_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
