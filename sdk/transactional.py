"""Transactional enqueue: jobs stored by the application's own Postgres connection, inside
its own transaction, so a job exists exactly when the transaction that caused it commits.

asyncpg connections (or pool connections), `psycopg.AsyncConnection` (both awaited) and
`psycopg.Connection` (the same call, plain) are taken. The statements are the job store's
(its INSERT, or its COPY for a large batch without keys); the jobs stay unpublished, and the
store's trigger sends a NOTIFY (migration 0016) that Postgres delivers at commit to the
scheduler: it pushes their hints (and its republish sweep is the safety net). psycopg is
imported only when a psycopg connection is passed. A job enqueued while an OpenTelemetry
span is current keeps that span's traceparent, so the worker's span of each attempt joins
the caller's trace.

Longer than most modules: one enqueue for three drivers (each with its overloads), and the
explanations of what a caller's connection or transaction got wrong beside the calls that
give them.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Unpack, overload

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from taskforge.adapters.postgres.connection import encode_json
from taskforge.adapters.postgres.job_copy import copyable, takes_copy
from taskforge.adapters.postgres.job_store import (
    CreatedRow,
    first_of_their_keys,
    insert_jobs_as,
)
from taskforge.adapters.system import Uuid7Source
from taskforge.adapters.telemetry.tracing import current_traceparent
from taskforge.client.core import (
    EnqueueOptions,
    JobSpec,
    json_values,
    refuse_a_single_job,
    refuse_non_mapping,
    unknown_options,
)
from taskforge.client.errors import ValidationError
from taskforge.client.values import AttemptError, Job
from taskforge.domain import errors as domain_errors
from taskforge.domain.job import Job as StoredJob
from taskforge.domain.new_job import JobBuilder, NewJob
from taskforge.domain.policy import RetryPolicy
from taskforge.domain.states import JobState
from taskforge.domain.validation import DEFAULT_QUEUE

if TYPE_CHECKING:
    import psycopg

# A job's queue when the call names none is DEFAULT_QUEUE, the service's default QUEUE_NAME.
# A service started with another QUEUE_NAME needs `queue=` here (the API's default is its own).

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
    return it; a reused idempotency key (or a unique key an unfinished job of the queue
    holds) returns the job that holds it, stored before or earlier in this transaction,
    its `conflict` set. Options are the HTTP client's. A bad value raises
    ValidationError before anything is written, as does text the connection's client encoding
    cannot carry (on LATIN1, a "€" in the payload or a key); database errors are the driver's
    own (with a note saying to run `taskforge migrate` when the database lacks TaskForge's
    tables), but for an id already stored (possible only if the id source repeats itself),
    JobIdTaken."""
    [new_job] = _new_jobs([{**options, "job_type": job_type, "payload": payload}], batch=False)
    stored = _store(conn, [new_job], batch=False)
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
    refuse_a_single_job(jobs)
    return _store(conn, _new_jobs(jobs, batch=True), batch=True)


async def _first(stored: Coroutine[Any, Any, list[Job]]) -> Job:
    [job] = await stored
    return job


def _new_jobs(specs: Iterable[Mapping[str, Any]], *, batch: bool) -> list[NewJob]:
    """The jobs `specs` ask for, checked, each carrying the caller's current trace span (as
    a job enqueued over HTTP carries its request's), so its attempts join that trace."""
    specs = list(specs)
    traceparent = current_traceparent()
    if traceparent is None:
        builder = _UNTRACED
    else:
        builder = JobBuilder(lambda options: _keywords(options, traceparent))
    new_jobs = []
    for index, (spec, job_id) in enumerate(zip(specs, _ids.new_ids(len(specs)), strict=True)):
        refuse_non_mapping(spec, index)
        options = dict(spec)
        try:  # as the HTTP clients send it (checked as the job is built), the same JSON
            payload = json_values(options.pop("payload", None))
        except ValidationError as exc:
            message = exc.message.removeprefix("payload: ")
            raise _validation_error("payload", message, index, batch) from None
        if isinstance(run_at := options.get("run_at"), datetime) and run_at.tzinfo is None:
            options["run_at"] = run_at.replace(tzinfo=UTC)  # as the client and the API read it
        try:
            new_job = builder.build_from(job_id, payload, options)
        except domain_errors.ValidationError as exc:
            raise _validation_error(exc.field, exc.message, index, batch) from None
        new_jobs.append(new_job)
    return new_jobs


_UNTRACED = JobBuilder(lambda options: _keywords(options, None))
"""The builder of every enqueue made outside a trace span: each kind of job (the same
options) is checked once for the process, as RetryPolicy.of keeps each policy (once more
after it has met 1,024 kinds and starts again). Inside a span each call has its own, its
jobs carrying that span's traceparent."""


def _keywords(options: dict[str, Any], traceparent: str | None) -> dict[str, Any]:
    """build_new_job's keywords for a spec's options (its keys, run_at and payload taken
    out): an option of None is left out, as the HTTP client leaves it out; the queue
    defaults to DEFAULT_QUEUE. Run once per kind of job its builder meets."""
    unknown = sorted(set(options) - _OPTIONS - {"job_type"})
    if unknown:  # whatever its value: `eta=None` is as unknown as `eta=tomorrow`
        raise unknown_options("enqueue option", unknown)
    options = {name: value for name, value in options.items() if value is not None}
    job_type = options.pop("job_type", None)
    queue = options.pop("queue", DEFAULT_QUEUE)
    return {"job_type": job_type, "queue": queue, "traceparent": traceparent, **options}


def _validation_error(field: str, message: str, index: int, batch: bool) -> ValidationError:
    """A ValidationError shaped as the API's 400 for the same input: its code, and its
    details (in a batch, even of one job, the job's index, as POST /jobs/batch names it).
    The field is named as the caller spells it (`max_attempts`, where the API says
    `maxAttempts`), and the message is the domain's (the API's own checks word some
    bounds otherwise)."""
    if not batch:
        return ValidationError("validation_error", f"{field}: {message}", details={"field": field})
    field = f"jobs[{index}].{field}"
    return ValidationError(
        "validation_error", f"{field}: {message}", details={"field": field, "index": index}
    )


def _store(
    conn: Any, new_jobs: list[NewJob], *, batch: bool
) -> list[Job] | Coroutine[Any, Any, list[Job]]:
    if isinstance(conn, asyncpg.Connection | PoolConnectionProxy):
        _check_a_batch_of_several_statements(conn, new_jobs, batch)
        return _explaining(_store_asyncpg(conn, new_jobs), conn, new_jobs, batch)
    # A psycopg connection exists only once psycopg is imported: this imports it never.
    if (psycopg_module := sys.modules.get("psycopg")) is not None:
        from taskforge.sdk import psycopg_steps

        if isinstance(conn, psycopg_module.AsyncConnection):
            _check_a_batch_of_several_statements(conn, new_jobs, batch)
            return _explaining(psycopg_steps.store_async(conn, new_jobs), conn, new_jobs, batch)
        if isinstance(conn, psycopg_module.Connection):
            _check_a_batch_of_several_statements(conn, new_jobs, batch)
            try:
                return psycopg_steps.store(conn, new_jobs)
            except Exception as exc:
                _explain(exc, conn, new_jobs, batch)
                raise
    raise NotAConnection(conn, "taskforge.enqueue_many" if batch else "taskforge.enqueue")


class NotAConnection(TypeError):
    """What was given where an asyncpg or psycopg 3 connection goes. `hint` (empty, or
    starting with "; ") says what to pass instead when what was given tells it."""

    def __init__(self, given: object, call: str) -> None:
        from taskforge.client import Client, SyncClient  # only now: it loads httpx

        self.given = type(given).__name__
        self.hint = ""
        if isinstance(given, Client | SyncClient):
            self.hint = f"; over HTTP, call the client's own {call.rpartition('.')[2]}"
        elif isinstance(given, asyncpg.Pool):
            # A pool's connection, not the pool: the job must join that connection's
            # transaction.
            self.hint = (
                "; acquire one (`async with pool.acquire() as conn:`) and enqueue in its "
                "transaction"
            )
        super().__init__(
            f"{call} takes an asyncpg connection or a psycopg 3 connection, "
            f"not {self.given}{self.hint}"
        )


_SCHEMA_MISSING = frozenset({"42P01", "42703", "42704", "42883"})
"""The SQLSTATEs of a table, column, type or function the statements name and the database
lacks: undefined_table, undefined_column, undefined_object, undefined_function."""


def _note_a_missing_schema(exc: Exception) -> None:
    """The driver's own error stays what is raised; when the database lacks what TaskForge's
    statements name, a note says why and what to run."""
    if getattr(exc, "sqlstate", None) in _SCHEMA_MISSING:
        exc.add_note(
            "This database lacks TaskForge's tables, or the migrations of this version: run "
            "`taskforge migrate` with POSTGRES_DSN naming it (README, Running on Postgres and "
            "Redis)."
        )


def _explain(exc: Exception, conn: Any, new_jobs: Sequence[NewJob], batch: bool) -> None:
    """Raise a ValidationError for the driver's `exc` when it could not encode a job's text in
    the connection's client encoding (asyncpg raises a DataError caused by the
    UnicodeEncodeError, psycopg the UnicodeEncodeError itself): the parameters are encoded
    before a statement is sent, so nothing of it was. Otherwise leave `exc` to be raised,
    noted when the database lacks TaskForge's schema."""
    cause = exc if isinstance(exc, UnicodeEncodeError) else exc.__cause__
    if isinstance(cause, UnicodeEncodeError):
        _refuse_text_beyond(cause.encoding, conn, new_jobs, batch)
    _note_a_missing_schema(exc)


async def _explaining(
    stored: Coroutine[Any, Any, list[Job]], conn: Any, new_jobs: Sequence[NewJob], batch: bool
) -> list[Job]:
    try:
        return await stored
    except Exception as exc:
        _explain(exc, conn, new_jobs, batch)
        raise


def _check_a_batch_of_several_statements(conn: Any, new_jobs: list[NewJob], batch: bool) -> None:
    """On a connection whose driver writes text in another encoding than UTF-8, check a batch
    that may take several writing statements (more than CHUNK jobs, or a job sharing a key
    with an earlier one, stored after it) whole before the first: a job a later statement
    could not encode would leave the earlier jobs written in the caller's transaction. Any
    other enqueue sends all its jobs' text in its first writing statement, whose encoding
    error _explain maps; on UTF-8 every job is stored unchecked."""
    if len(new_jobs) < 2:
        return
    codec = _client_encoding(conn)[1]
    if codec == "utf-8":
        return
    if len(new_jobs) > CHUNK or first_of_their_keys(new_jobs)[1]:
        _refuse_text_beyond(codec, conn, new_jobs, batch)


def _refuse_text_beyond(codec: str, conn: Any, new_jobs: Sequence[NewJob], batch: bool) -> None:
    """Raise a ValidationError naming the first of `new_jobs` holding text that `codec` (the
    driver's for the connection's client encoding) cannot encode, and its field."""
    for index, new_job in enumerate(new_jobs):
        for field, text in (
            ("job_type", new_job.job_type),
            ("queue", new_job.queue),
            ("payload", encode_json(new_job.payload)),  # as the statements send it
            ("idempotency_key", new_job.idempotency_key),
            ("unique_key", new_job.unique_key),
            ("traceparent", new_job.traceparent),
        ):
            try:
                (text or "").encode(codec)
            except UnicodeEncodeError as exc:
                character = exc.object[exc.start]
                encoding = _client_encoding(conn)[0]
                message = (
                    f"holds {character!r}, which the connection's client encoding {encoding} "
                    "cannot carry"
                )
                raise _validation_error(field, message, index, batch) from None


def _client_encoding(conn: Any) -> tuple[str, str]:
    """`conn`'s client encoding as Postgres names it, and the Python codec its driver
    encodes text in: asyncpg's for SQL_ASCII is ASCII, psycopg's UTF-8."""
    if isinstance(conn, asyncpg.Connection | PoolConnectionProxy):
        settings = conn.get_settings()
        return settings.client_encoding, settings.get_text_codec().name
    codec = conn.info.encoding
    name = conn.info.parameter_status("client_encoding") or codec
    return name, "utf-8" if codec == "ascii" else codec


async def _store_asyncpg(
    conn: asyncpg.Connection | PoolConnectionProxy, new_jobs: list[NewJob]
) -> list[Job]:
    if not new_jobs:
        return []
    if not conn.is_in_transaction() and needs_own_transaction(new_jobs, copy=takes_copy(conn)):
        async with conn.transaction():
            return await _store_asyncpg(conn, new_jobs)
    results: list[Job] = []
    for start in range(0, len(new_jobs), CHUNK):
        chunk = new_jobs[start : start + CHUNK]
        results += await insert_jobs_as(
            conn, chunk, _created_job, conflicting_job, KEY_ATTEMPTS, published=False
        )
    return results


def needs_own_transaction(new_jobs: Sequence[NewJob], *, copy: bool) -> bool:
    """Whether storing `new_jobs` outside a transaction needs one of its own. A single job
    does not: its INSERT creates it or not in one statement, and what may follow (a look-up
    of the job holding its key, the INSERT tried again once that job is gone) writes
    nothing else, so each statement can commit on its own, one round trip for the usual
    case instead of three. Nor does a batch that one COPY stores (with `copy`, on a
    connection that takes one: up to CHUNK jobs, see job_copy.copyable), which a taken id
    fails whole. Other batches are stored all or none, in one."""
    if len(new_jobs) == 1:
        return False
    return not (copy and len(new_jobs) <= CHUNK and copyable(new_jobs))


def _created_job(new_job: NewJob, row: CreatedRow) -> Job:
    """The job `new_job` created, built straight from the INSERT's row (one object per job,
    not a stored Job and then its client form: the half of enqueue_many's Python time
    that is not validation)."""
    policy = new_job.policy
    created_at = _moment(row["created_at"])
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
        next_run_at=_moment(row["next_run_at"]),
        last_error=None,
        created_at=created_at,
        updated_at=created_at,
    )


def _moment(value: Any) -> Any:
    """A timestamptz as a datetime: asyncpg reads one, unless the connection has a codec of
    its own that reads Postgres's text (ISO, as its default DateStyle writes it)."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _decoded(payload: Any) -> Any:
    """A stored payload as Python values: a connection with no jsonb codec reads JSON text."""
    return msgspec.json.decode(payload) if isinstance(payload, str | bytes) else payload


def conflicting_job(job: StoredJob) -> Job:
    """The job an enqueue found holding its key, stored before the call or earlier in it."""
    return client_job(job, conflict=True)


def client_job(job: StoredJob, *, conflict: bool = False) -> Job:
    """A stored job (one holding a key) in the client's form: each field from the job's field
    of the same name, the retry policy's from its policy, so a field added to both is carried
    without a line here. `conflict` is the enqueue's, not the stored job's."""
    fields = {
        name: getattr(job.policy if name in _POLICY_FIELDS else job, name)
        for name in _CLIENT_JOB_FIELDS
    }
    fields["payload"] = _decoded(job.payload)
    for name in _MOMENT_FIELDS:
        fields[name] = _moment(fields[name])
    fields["errors"] = tuple(
        AttemptError(attempt=each.attempt, at=each.at, error=each.error, traceback=each.traceback)
        for each in job.errors
    )
    return Job(**fields, conflict=conflict)


_POLICY_FIELDS = frozenset(each.name for each in dataclasses.fields(RetryPolicy))
_CLIENT_JOB_FIELDS = tuple(
    each.name for each in msgspec.structs.fields(Job) if each.name != "conflict"
)
_MOMENT_FIELDS = tuple(
    each.name for each in msgspec.structs.fields(Job) if each.type in (datetime, datetime | None)
)
"""The client job's timestamps (`datetime` or `datetime | None`)."""
