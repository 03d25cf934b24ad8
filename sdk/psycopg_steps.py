"""Transactional enqueue on a psycopg 3 connection (see `transactional`): the same
statements as on asyncpg, in psycopg's placeholders, run one after the other by a generator
of steps that both the blocking and the asyncio connection drive. Imported only when a
psycopg connection is passed."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from psycopg.adapt import Loader
from psycopg.pq import PipelineStatus, TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.bool import BoolLoader
from psycopg.types.datetime import TimestamptzLoader
from psycopg.types.json import set_json_loads
from psycopg.types.numeric import FloatLoader, IntLoader
from psycopg.types.string import TextLoader
from psycopg.types.uuid import UUIDLoader

from taskforge.adapters.postgres._rows import job_from_row
from taskforge.adapters.postgres.job_copy import (
    COPY_STATEMENT,
    RELEASE_SAVEPOINT,
    SAVEPOINT,
    SELECT_NOW,
    UNDO_SAVEPOINT,
    copy_data,
    copyable,
    created_rows,
)
from taskforge.adapters.postgres.job_inserts import (
    INSERT_JOB_UNPUBLISHED,
    INSERT_JOBS_UNPUBLISHED_BY_COLUMNS,
    column_parameters,
    insert_parameters,
)
from taskforge.adapters.postgres.job_store import (
    SELECT_JOBS_BY_IDEMPOTENCY_KEY,
    SELECT_JOBS_BY_UNIQUE_KEY,
    SELECT_TAKEN_IDS,
    first_of_their_keys,
    repeated_id,
)
from taskforge.client.values import Job
from taskforge.domain.errors import JobIdTaken
from taskforge.domain.job import Job as StoredJob
from taskforge.domain.new_job import NewJob
from taskforge.sdk.transactional import CHUNK, KEY_ATTEMPTS, client_job, needs_own_transaction

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
PSYCOPG_SELECT_TAKEN_IDS = psycopg_form(SELECT_TAKEN_IDS)


@dataclass(frozen=True, slots=True)
class _Statement:
    sql: str
    parameters: Sequence[Any] = ()
    copy: Iterable[bytes] | None = None
    """The data to send, in pieces, when `sql` is a COPY ... FROM STDIN."""


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


def _psycopg_steps(new_jobs: list[NewJob], *, utf8: bool, in_transaction: bool) -> _Steps:
    """The statements of a psycopg enqueue, each sent the rows of the one before: one INSERT
    (or, for a large chunk without keys on a `utf8` connection, `now()` and a COPY) per CHUNK
    of the jobs sharing no key with an earlier one; then for each job not created yet, in
    order, an INSERT of that job and a look-up of the job holding its key. The COPY's text
    is UTF-8, which Postgres reads in the connection's client encoding: on another one the
    INSERT, whose parameters psycopg encodes, stores the payloads as sent. An error of a
    COPY is thrown back in here by the runner (store, store_async): `in_transaction`, the
    COPY's savepoint is undone, so the transaction stays usable, as on asyncpg (see _copy)."""
    if (repeated := repeated_id(new_jobs)) is not None:
        raise JobIdTaken(repeated)
    inserted: dict[UUID, dict[str, Any]] = {}
    # A job sharing a key with an earlier one waits for the job-by-job pass (see
    # first_of_their_keys): the INSERT takes its rows in key order, not the batch's.
    leading, _ = first_of_their_keys(new_jobs)
    for start in range(0, len(leading), CHUNK):
        chunk = leading[start : start + CHUNK]
        if utf8 and copyable(chunk):  # as the asyncpg path stores it (see job_copy)
            [now] = [row["now"] for row in (yield _Statement(SELECT_NOW))]
            # Made before the COPY starts: its savepoint is undone for what Postgres answers
            # (see _copy), so a row that failed to be made mid-COPY would fail the caller's
            # transaction.
            data = list(copy_data(chunk, now, published=False))
            yield from _copy(chunk, data, in_transaction=in_transaction)
            inserted.update((row["id"], row) for row in created_rows(chunk, now, published=False))
            continue
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
            if (yield _Statement(PSYCOPG_SELECT_TAKEN_IDS, [[new_job.id]])):
                raise JobIdTaken(new_job.id)  # as the asyncpg path answers it
            # The key's holder finished or was deleted meanwhile: the key is free, try again.
        else:
            raise RuntimeError("idempotency or unique keys kept changing hands; try again")
    return [client_job(job, conflict=not stored_now) for job, stored_now in results]


def _copy(
    chunk: list[NewJob], data: list[bytes], *, in_transaction: bool
) -> Generator[_Statement, Rows, None]:
    """COPY `data`, the rows of `chunk`, as on asyncpg: in a transaction, an error Postgres
    answers the COPY with (thrown back in here by the runner) undoes its savepoint, so the
    transaction stays usable; an id already stored raises JobIdTaken, none of the chunk
    stored."""
    if in_transaction:
        yield _Statement(SAVEPOINT)
    try:
        yield _Statement(COPY_STATEMENT, copy=data)
    except psycopg.Error as exc:
        if in_transaction:
            yield _Statement(UNDO_SAVEPOINT)
            yield _Statement(RELEASE_SAVEPOINT)
        if (
            isinstance(exc, psycopg.errors.UniqueViolation)
            and exc.diag.constraint_name == "jobs_pkey"
            and (taken := (yield _Statement(PSYCOPG_SELECT_TAKEN_IDS, [[job.id for job in chunk]])))
        ):
            raise JobIdTaken(taken[0]["id"]) from None
        raise
    if in_transaction:
        yield _Statement(RELEASE_SAVEPOINT)


def _needs_a_transaction(
    conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], new_jobs: list[NewJob]
) -> bool:
    """needs_own_transaction, for a psycopg connection outside a transaction (in
    autocommit mode and idle); inside one the caller's transaction holds the jobs. A COPY
    is sent only on a UTF-8 connection (see _psycopg_steps)."""
    return not _in_transaction(conn) and needs_own_transaction(
        new_jobs, copy=conn.info.encoding == "utf-8"
    )


def _in_transaction(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether what the enqueue sends runs inside a transaction: one begun already, or the
    one psycopg begins with the first statement when the connection is not in autocommit."""
    return not conn.autocommit or conn.info.transaction_status is not TransactionStatus.IDLE


def _read_as_stored(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any], encoding: str) -> None:
    """This cursor's reads, whatever loaders the application gave its connection: each
    column of a job (a held key's job is read whole) as psycopg reads it by default, so
    timestamps are aware datetimes (the COPY writes the `now()` it reads), ids UUIDs (the
    rows an INSERT returns are matched to the jobs by id), numbers ints and floats; and
    text and JSON in the connection's client `encoding`. On SQL_ASCII (`ascii` here)
    psycopg writes text as UTF-8 and Postgres sends it back as stored, so it is read as
    UTF-8 too, where psycopg's own text loader would answer bytes."""
    for name, loader in _DEFAULT_LOADERS:
        cursor.adapters.register_loader(name, loader)
    if encoding in ("utf-8", "ascii"):
        set_json_loads(msgspec.json.decode, cursor)
        if encoding == "ascii":
            cursor.adapters.register_loader("text", _Utf8TextLoader)
    else:  # one function per encoding: psycopg makes a loader class for each it is given
        set_json_loads(_json_loads_in(encoding), cursor)


_DEFAULT_LOADERS: tuple[tuple[str, type[Loader]], ...] = (
    ("timestamptz", TimestamptzLoader),
    ("uuid", UUIDLoader),
    ("text", TextLoader),
    ("int2", IntLoader),
    ("int4", IntLoader),
    ("int8", IntLoader),
    ("float8", FloatLoader),
    ("bool", BoolLoader),
)
"""psycopg's own text-format loaders of the types a job's columns have."""


class _Utf8TextLoader(Loader):
    """text as UTF-8, as psycopg writes it on a SQL_ASCII connection."""

    def load(self, data: Any) -> str:
        return bytes(data).decode("utf-8")


@functools.cache
def _json_loads_in(encoding: str) -> Callable[[str | bytes], Any]:
    return functools.partial(_decode_in, encoding=encoding)


def _decode_in(data: str | bytes, encoding: str) -> Any:
    return msgspec.json.decode(data if isinstance(data, str) else data.decode(encoding))


def _cursor(conn: psycopg.Connection[Any]) -> psycopg.Cursor[dict[str, Any]]:
    """A cursor of the connection's own kind (a ClientCursor binds client-side, as a
    transaction pooler may need), but a plain one where that kind is a RawCursor, whose
    `$1` placeholders are not the `%s` the statements are written in."""
    if issubclass(conn.cursor_factory, psycopg.RawCursor):
        return psycopg.Cursor(conn, row_factory=dict_row)
    return conn.cursor(row_factory=dict_row)


def _async_cursor(conn: psycopg.AsyncConnection[Any]) -> psycopg.AsyncCursor[dict[str, Any]]:
    """_cursor for an asyncio connection."""
    if issubclass(conn.cursor_factory, psycopg.AsyncRawCursor):
        return psycopg.AsyncCursor(conn, row_factory=dict_row)
    return conn.cursor(row_factory=dict_row)


def _refuse_a_pipeline(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """In psycopg's pipeline mode a statement's rows come back only when the pipeline syncs,
    and each step of an enqueue needs the rows of the one before."""
    if conn.info.pipeline_status is not PipelineStatus.OFF:
        raise TypeError(
            "taskforge.enqueue cannot run inside a psycopg pipeline (conn.pipeline()): "
            "enqueue before or after the pipeline block"
        )


def store(conn: psycopg.Connection[Any], new_jobs: list[NewJob]) -> list[Job]:
    _refuse_a_pipeline(conn)
    if not new_jobs:
        return []
    if _needs_a_transaction(conn, new_jobs):
        with conn.transaction():
            return store(conn, new_jobs)
    encoding = conn.info.encoding
    steps = _psycopg_steps(new_jobs, utf8=encoding == "utf-8", in_transaction=_in_transaction(conn))
    with _cursor(conn) as cursor:
        _read_as_stored(cursor, encoding)
        try:
            statement = next(steps)
            while True:
                if statement.copy is not None:
                    try:
                        with cursor.copy(statement.sql) as copy:
                            for piece in statement.copy:
                                copy.write(piece)
                    except psycopg.Error as exc:
                        statement = steps.throw(exc)
                        continue
                    statement = steps.send([])
                    continue
                cursor.execute(statement.sql, statement.parameters)
                statement = steps.send(cursor.fetchall() if cursor.description else [])
        except StopIteration as done:
            result: list[Job] = done.value
            return result


async def store_async(conn: psycopg.AsyncConnection[Any], new_jobs: list[NewJob]) -> list[Job]:
    _refuse_a_pipeline(conn)
    if not new_jobs:
        return []
    if _needs_a_transaction(conn, new_jobs):
        async with conn.transaction():
            return await store_async(conn, new_jobs)
    encoding = conn.info.encoding
    steps = _psycopg_steps(new_jobs, utf8=encoding == "utf-8", in_transaction=_in_transaction(conn))
    async with _async_cursor(conn) as cursor:
        _read_as_stored(cursor, encoding)
        try:
            statement = next(steps)
            while True:
                if statement.copy is not None:
                    try:
                        async with cursor.copy(statement.sql) as copy:
                            for piece in statement.copy:
                                await copy.write(piece)
                    except psycopg.Error as exc:
                        statement = steps.throw(exc)
                        continue
                    statement = steps.send([])
                    continue
                await cursor.execute(statement.sql, statement.parameters)
                statement = steps.send(await cursor.fetchall() if cursor.description else [])
        except StopIteration as done:
            result: list[Job] = done.value
            return result
