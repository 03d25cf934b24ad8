"""Transactional enqueue: jobs stored by the application's own Postgres connection, inside
its own transaction, so a job exists exactly when the transaction that caused it commits.

asyncpg connections (or pool connections), `psycopg.AsyncConnection` (both awaited) and
`psycopg.Connection` (the same call, plain) are taken. The statement is the job store's
INSERT; the jobs stay unpublished, and the INSERT itself sends a NOTIFY (migration 0016)
that Postgres delivers at commit to the scheduler: it pushes their hints (and its republish
sweep is the safety net). psycopg is imported only when a psycopg connection is passed. A
job enqueued while an OpenTelemetry span is current keeps that span's traceparent, so the
worker's span of each attempt joins the caller's trace.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Coroutine, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Unpack, overload
from uuid import UUID

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from taskforge.adapters.postgres._rows import job_from_row
from taskforge.adapters.postgres.job_store import (
    INSERT_JOB_UNPUBLISHED,
    INSERT_JOBS_UNPUBLISHED_BY_COLUMNS,
    SELECT_JOBS_BY_IDEMPOTENCY_KEY,
    SELECT_JOBS_BY_UNIQUE_KEY,
    CreatedRow,
    column_parameters,
    first_of_their_keys,
    insert_jobs_as,
    insert_parameters,
)
from taskforge.adapters.system import Uuid7Source
from taskforge.adapters.telemetry.tracing import current_traceparent
from taskforge.client.core import EnqueueOptions, JobSpec, json_values
from taskforge.client.errors import ValidationError
from taskforge.client.values import AttemptError, Job
from taskforge.domain import errors as domain_errors
from taskforge.domain.job import Job as StoredJob
from taskforge.domain.job import JobBuilder, NewJob
from taskforge.domain.policy import RetryPolicy
from taskforge.domain.states import JobState

if TYPE_CHECKING:
    import psycopg

DEFAULT_QUEUE = "jobs:ready"
"""A job's queue when the call names none: the service's default QUEUE_NAME. A service
started with another QUEUE_NAME needs `queue=` here (the API's default is its own)."""

CHUNK = 1000
"""Jobs per INSERT statement in `enqueue_many` (all in the caller's one transaction)."""

KEY_ATTEMPTS = 3
"""Tries to store a job whose idempotency key is freed (its holder deleted) meanwhile."""

_OPTIONS = frozenset(EnqueueOptions.__annotations__)
_ids = Uuid7Source()


@overload
def enqueue(
    conn: psycopg.Connection[Any],
    job_type: str,
    payload: Mapping[str, Any] | None = None,
    **options: Unpack[EnqueueOptions],
) -> Job: ...


@overload
def enqueue(
    conn: asyncpg.Connection | PoolConnectionProxy | psycopg.AsyncConnection[Any],
    job_type: str,
    payload: Mapping[str, Any] | None = None,
    **options: Unpack[EnqueueOptions],
) -> Coroutine[Any, Any, Job]: ...


def enqueue(
    conn: Any, job_type: str, payload: Mapping[str, Any] | None = None, **options: Any
) -> Job | Coroutine[Any, Any, Job]:
    """Store one job in `conn`'s current transaction (outside one, it commits at once) and
    return it; a reused idempotency key returns the job that holds it, stored before or
    earlier in this transaction. Options are the HTTP client's. A bad value raises
    ValidationError before anything is written; database errors are the driver's own."""
    [new_job] = _new_jobs([{**options, "job_type": job_type, "payload": payload}], batch=False)
    stored = _store(conn, [new_job])
    if isinstance(stored, list):
        return stored[0]
    return _first(stored)


@overload
def enqueue_many(conn: psycopg.Connection[Any], jobs: Iterable[JobSpec]) -> list[Job]: ...


@overload
def enqueue_many(
    conn: asyncpg.Connection | PoolConnectionProxy | psycopg.AsyncConnection[Any],
    jobs: Iterable[JobSpec],
) -> Coroutine[Any, Any, list[Job]]: ...


def enqueue_many(conn: Any, jobs: Iterable[JobSpec]) -> list[Job] | Coroutine[Any, Any, list[Job]]:
    """`enqueue` for each of `jobs` (mappings of `enqueue`'s arguments), in one go and in
    order: every job is checked before any is written. An error naming a job's field
    names its index: `jobs[2].queue`."""
    return _store(conn, _new_jobs(jobs, batch=True))


async def _first(stored: Coroutine[Any, Any, list[Job]]) -> Job:
    [job] = await stored
    return job


def _new_jobs(specs: Iterable[Mapping[str, Any]], *, batch: bool) -> list[NewJob]:
    """The jobs `specs` ask for, checked, each carrying the caller's current trace span (as
    a job enqueued over HTTP carries its request's), so its attempts join that trace."""
    specs = list(specs)
    traceparent = current_traceparent()
    builder = JobBuilder()
    new_jobs = []
    for index, (spec, job_id) in enumerate(zip(specs, _ids.new_ids(len(specs)), strict=True)):
        options = dict(spec)
        if None in options.values():  # an option left out, as the HTTP client leaves it out
            options = {name: value for name, value in options.items() if value is not None}
        job_type = options.pop("job_type", None)
        try:  # as the HTTP clients send it (checked as the job is built), the same JSON
            payload = json_values(options.pop("payload", None))
        except ValidationError as exc:
            message = exc.message.removeprefix("payload: ")
            raise _validation_error("payload", message, index, batch) from None
        if not options.keys() <= _OPTIONS:
            unknown = sorted(set(options) - _OPTIONS)
            raise TypeError(f"unknown enqueue option(s): {', '.join(unknown)}")
        if isinstance(run_at := options.get("run_at"), datetime) and run_at.tzinfo is None:
            options["run_at"] = run_at.replace(tzinfo=UTC)  # as the client and the API read it
        try:
            new_job = builder.build(
                job_id, payload, job_type=job_type,
                queue=options.pop("queue", DEFAULT_QUEUE), traceparent=traceparent, **options,
            )  # fmt: skip
        except domain_errors.ValidationError as exc:
            raise _validation_error(exc.field, exc.message, index, batch) from None
        new_jobs.append(new_job)
    return new_jobs


def _validation_error(field: str, message: str, index: int, batch: bool) -> ValidationError:
    """The API's 400 for the same input: its code, its message, its details (in a batch,
    even of one job, the job's index, as POST /jobs/batch names it)."""
    if not batch:
        return ValidationError("validation_error", f"{field}: {message}", details={"field": field})
    field = f"jobs[{index}].{field}"
    return ValidationError(
        "validation_error", f"{field}: {message}", details={"field": field, "index": index}
    )


def _store(conn: Any, new_jobs: list[NewJob]) -> list[Job] | Coroutine[Any, Any, list[Job]]:
    if isinstance(conn, asyncpg.Connection | PoolConnectionProxy):
        return _store_asyncpg(conn, new_jobs)
    # A psycopg connection exists only once psycopg is imported: this imports it never.
    if (psycopg_module := sys.modules.get("psycopg")) is not None:
        if isinstance(conn, psycopg_module.AsyncConnection):
            return _store_psycopg_async(conn, new_jobs)
        if isinstance(conn, psycopg_module.Connection):
            return _store_psycopg(conn, new_jobs)
    raise TypeError(
        "taskforge.enqueue takes an asyncpg connection or a psycopg 3 connection, "
        f"not {type(conn).__name__}"
    )


async def _store_asyncpg(
    conn: asyncpg.Connection | PoolConnectionProxy, new_jobs: list[NewJob]
) -> list[Job]:
    if not new_jobs:
        return []
    if not conn.is_in_transaction() and _needs_own_transaction(new_jobs):
        async with conn.transaction():
            return await _store_asyncpg(conn, new_jobs)
    results: list[Job] = []
    for start in range(0, len(new_jobs), CHUNK):
        chunk = new_jobs[start : start + CHUNK]
        results += await insert_jobs_as(
            conn, chunk, _created_job, _client_job, KEY_ATTEMPTS, published=False
        )
    return results


def _needs_own_transaction(new_jobs: Sequence[NewJob]) -> bool:
    """Whether storing `new_jobs` outside a transaction needs one of its own. A single job
    does not: its INSERT creates it or not in one statement, and what may follow (a look-up
    of the job holding its key, the INSERT tried again once that job is gone) writes
    nothing else, so each statement can commit on its own, one round trip for the usual
    case instead of three. Several jobs are stored all or none."""
    return len(new_jobs) > 1


def _created_job(new_job: NewJob, row: CreatedRow) -> Job:
    """The job `new_job` created, built straight from the INSERT's row (one object per job,
    not a stored Job and then its client form: the half of enqueue_many's Python time
    that is not validation)."""
    policy = new_job.policy
    created_at = row["created_at"]
    return Job(
        id=new_job.id,
        queue=new_job.queue,
        job_type=new_job.job_type,
        payload=_decoded(row["payload"]),
        state=JobState.PENDING,
        idempotency_key=new_job.idempotency_key,
        unique_key=new_job.unique_key,
        attempt_count=0,
        retry_count=0,
        max_attempts=policy.max_attempts,
        initial_delay=policy.initial_delay,
        backoff=policy.backoff,
        max_delay=policy.max_delay,
        jitter=policy.jitter,
        visibility_timeout=new_job.visibility_timeout,
        timeout=new_job.timeout,
        priority=new_job.priority,
        next_run_at=row["next_run_at"],
        last_error=None,
        created_at=created_at,
        updated_at=created_at,
    )


def _decoded(payload: Any) -> Any:
    """A stored payload as Python values: a connection with no jsonb codec reads JSON text."""
    return msgspec.json.decode(payload) if isinstance(payload, str | bytes) else payload


def _client_job(job: StoredJob) -> Job:
    """A stored job (one holding a key) in the client's form: each field from the job's field
    of the same name, the retry policy's from its policy, so a field added to both is carried
    without a line here."""
    fields = {
        name: getattr(job.policy if name in _POLICY_FIELDS else job, name)
        for name in _CLIENT_JOB_FIELDS
    }
    fields["payload"] = _decoded(job.payload)
    fields["errors"] = tuple(
        AttemptError(attempt=each.attempt, at=each.at, error=each.error, traceback=each.traceback)
        for each in job.errors
    )
    return Job(**fields)


_POLICY_FIELDS = frozenset(each.name for each in dataclasses.fields(RetryPolicy))
_CLIENT_JOB_FIELDS = tuple(each.name for each in msgspec.structs.fields(Job))


_PLACEHOLDER = re.compile(r"\$(\d+)")


def psycopg_form(statement: str) -> str:
    """`statement` with psycopg's `%s` placeholders for asyncpg's `$1, $2...`, which must
    each appear once and in order (psycopg's are positional)."""
    if "%" in statement:
        raise ValueError("a literal % would need escaping for psycopg")
    numbers = [int(found) for found in _PLACEHOLDER.findall(statement)]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"placeholders out of order: {numbers}")
    return _PLACEHOLDER.sub("%s", statement)


PSYCOPG_INSERT_JOB = psycopg_form(INSERT_JOB_UNPUBLISHED)
PSYCOPG_INSERT_JOBS = psycopg_form(INSERT_JOBS_UNPUBLISHED_BY_COLUMNS)
PSYCOPG_SELECT_JOBS_BY_IDEMPOTENCY_KEY = psycopg_form(SELECT_JOBS_BY_IDEMPOTENCY_KEY)
PSYCOPG_SELECT_JOBS_BY_UNIQUE_KEY = psycopg_form(SELECT_JOBS_BY_UNIQUE_KEY)


@dataclass(frozen=True, slots=True)
class _Statement:
    sql: str
    parameters: Sequence[Any] = ()


Rows = list[dict[str, Any]]
_Steps = Generator[_Statement, Rows, list[Job]]


def _psycopg_key_holder(new_job: NewJob) -> Generator[_Statement, Rows, StoredJob | None]:
    """The job holding `new_job`'s idempotency key, else the unfinished job of its queue
    holding its unique key (the order the asyncpg path looks them up in), else None."""
    if new_job.idempotency_key is not None:
        rows = yield _Statement(PSYCOPG_SELECT_JOBS_BY_IDEMPOTENCY_KEY, [[new_job.idempotency_key]])
        if rows:
            return job_from_row(rows[0])
    if new_job.unique_key is not None:
        rows = yield _Statement(
            PSYCOPG_SELECT_JOBS_BY_UNIQUE_KEY, [[new_job.queue], [new_job.unique_key]]
        )
        if rows:
            return job_from_row(rows[0])
    return None


def _psycopg_steps(new_jobs: list[NewJob]) -> _Steps:
    """The statements of a psycopg enqueue, each sent the rows of the one before: one INSERT
    per CHUNK of the jobs sharing no key with an earlier one; then for each job not created
    yet, in order, an INSERT of that job and a look-up of the job holding its key."""
    inserted: dict[UUID, dict[str, Any]] = {}
    # A job sharing a key with an earlier one waits for the job-by-job pass (see
    # first_of_their_keys): the INSERT takes its rows in key order, not the batch's.
    leading, _ = first_of_their_keys(new_jobs)
    for start in range(0, len(leading), CHUNK):
        chunk = leading[start : start + CHUNK]
        statement = PSYCOPG_INSERT_JOB if len(chunk) == 1 else PSYCOPG_INSERT_JOBS
        parameters = insert_parameters(chunk[0]) if len(chunk) == 1 else column_parameters(chunk)
        for row in (yield _Statement(statement, parameters)):
            inserted[row["id"]] = row
    results: list[tuple[StoredJob, bool]] = []
    for new_job in new_jobs:
        if (created := inserted.get(new_job.id)) is not None:
            stored = new_job.stored(
                created["next_run_at"], created["created_at"], created["payload"]
            )
            results.append((stored, True))
            continue
        for _ in range(KEY_ATTEMPTS):
            rows = yield _Statement(PSYCOPG_INSERT_JOB, insert_parameters(new_job))
            if rows:
                [row] = rows
                stored = new_job.stored(row["next_run_at"], row["created_at"], row["payload"])
                results.append((stored, True))
                break
            holder = yield from _psycopg_key_holder(new_job)
            if holder is not None:
                results.append((holder, False))
                break
            # The key's holder finished or was deleted meanwhile: the key is free, try again.
        else:
            raise RuntimeError("idempotency or unique keys kept changing hands; try again")
    return [_client_job(job) for job, _ in results]


def _psycopg_needs_own_transaction(
    conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], new_jobs: list[NewJob]
) -> bool:
    """_needs_own_transaction, for a psycopg connection outside a transaction (in
    autocommit mode and idle); inside one the caller's transaction holds the jobs."""
    from psycopg.pq import TransactionStatus

    return (
        conn.autocommit
        and conn.info.transaction_status is TransactionStatus.IDLE
        and _needs_own_transaction(new_jobs)
    )


def _store_psycopg(conn: psycopg.Connection[Any], new_jobs: list[NewJob]) -> list[Job]:
    from psycopg.rows import dict_row

    if not new_jobs:
        return []
    if _psycopg_needs_own_transaction(conn, new_jobs):
        with conn.transaction():
            return _store_psycopg(conn, new_jobs)
    steps = _psycopg_steps(new_jobs)
    with conn.cursor(row_factory=dict_row) as cursor:
        try:
            statement = next(steps)
            while True:
                cursor.execute(statement.sql, statement.parameters)
                statement = steps.send(cursor.fetchall() if cursor.description else [])
        except StopIteration as done:
            result: list[Job] = done.value
            return result


async def _store_psycopg_async(
    conn: psycopg.AsyncConnection[Any], new_jobs: list[NewJob]
) -> list[Job]:
    from psycopg.rows import dict_row

    if not new_jobs:
        return []
    if _psycopg_needs_own_transaction(conn, new_jobs):
        async with conn.transaction():
            return await _store_psycopg_async(conn, new_jobs)
    steps = _psycopg_steps(new_jobs)
    async with conn.cursor(row_factory=dict_row) as cursor:
        try:
            statement = next(steps)
            while True:
                await cursor.execute(statement.sql, statement.parameters)
                statement = steps.send(await cursor.fetchall() if cursor.description else [])
        except StopIteration as done:
            result: list[Job] = done.value
            return result
