"""`taskforge.enqueue` and `enqueue_many` inside the application's own transaction: one
suite, run on an asyncpg connection, a psycopg AsyncConnection and a psycopg Connection."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import msgspec
import psycopg
import psycopg.adapt
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import taskforge
from taskforge.adapters.postgres import job_copy
from taskforge.adapters.postgres.job_copy import COPY_FROM
from taskforge.adapters.postgres.job_notices import JOBS_CHANNEL
from taskforge.adapters.postgres.job_store import insert_jobs
from taskforge.client.core import JobSpec
from taskforge.client.values import Job
from taskforge.domain.errors import JobIdTaken
from taskforge.domain.new_job import NewJob
from taskforge.domain.states import JobState
from taskforge.sdk import psycopg_steps, transactional
from taskforge.sdk.psycopg_steps import psycopg_form
from tests.integration.processes.conftest import Stack

DRIVERS = ["asyncpg", "psycopg-async", "psycopg-sync"]
BATCH_SIZES = pytest.mark.parametrize("size", [3, COPY_FROM], ids=["small", "large"])
"""Batches of both sizes: on asyncpg a large keyless batch is stored by COPY, a small one by
the INSERT."""


@dataclasses.dataclass
class Note:
    """A value msgspec writes as a JSON object: checked as the object it is stored as."""

    text: str


@dataclasses.dataclass
class Reading:
    value: float


class Session:
    """One application connection with an open transaction, the same calls on each driver
    (a psycopg Connection's are plain: checked here, then wrapped)."""

    def __init__(self, driver: str, conn: Any) -> None:
        self.driver = driver
        self.conn = conn
        self._transaction: Any = None

    async def begin(self) -> None:
        if self.driver == "asyncpg":
            self._transaction = self.conn.transaction()
            await self._transaction.start()
        # psycopg (autocommit off) opens a transaction with the first statement

    async def _answer(self, answer: Any) -> Any:
        if self.driver == "psycopg-sync":
            assert not inspect.isawaitable(answer), "a sync connection's call is plain"
            return answer
        return await answer

    async def enqueue(
        self, job_type: str, payload: Mapping[str, Any] | None = None, **options: Any
    ) -> Job:
        result: Job = await self._answer(taskforge.enqueue(self.conn, job_type, payload, **options))
        return result

    async def enqueue_many(self, jobs: list[dict[str, Any]]) -> list[Job]:
        result: list[Job] = await self._answer(taskforge.enqueue_many(self.conn, jobs))  # type: ignore[arg-type]
        return result

    async def execute(self, statement: str) -> None:
        await self._answer(self.conn.execute(statement))
        if self.driver == "psycopg-sync":
            return

    async def commit(self) -> None:
        if self.driver == "asyncpg":
            await self._transaction.commit()
        else:
            await self._answer(self.conn.commit())

    async def rollback(self) -> None:
        if self.driver == "asyncpg":
            await self._transaction.rollback()
        else:
            await self._answer(self.conn.rollback())


async def _connect(driver: str, dsn: str) -> Any:
    if driver == "asyncpg":
        return await asyncpg.connect(dsn)
    if driver == "psycopg-async":
        return await psycopg.AsyncConnection.connect(dsn)
    return psycopg.Connection.connect(dsn)


@pytest.fixture(params=DRIVERS)
async def session(request: pytest.FixtureRequest, migrated_dsn: str) -> AsyncIterator[Session]:
    driver: str = request.param
    conn = await _connect(driver, migrated_dsn)
    session = Session(driver, conn)
    try:
        await session.begin()
        yield session
    finally:
        closing = conn.close()
        if inspect.isawaitable(closing):
            await closing


@pytest.fixture
async def observer(migrated_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """Another connection: what the rest of the system (workers, the API) sees."""
    conn = await asyncpg.connect(migrated_dsn)
    yield conn
    await conn.close()


def found(job: Job) -> Job:
    """`job` as an enqueue answers it when it finds it holding the key: a conflict."""
    return msgspec.structs.replace(job, conflict=True)


async def stored_ids(observer: asyncpg.Connection, queue: str) -> set[UUID]:
    rows = await observer.fetch("SELECT id FROM jobs WHERE queue = $1", queue)
    return {row["id"] for row in rows}


async def test_a_job_becomes_visible_when_the_transaction_commits(
    session: Session, observer: asyncpg.Connection, queue_name: str
) -> None:
    job = await session.enqueue("email", {"to": "a@b.com"}, queue=queue_name, max_attempts=5)

    assert isinstance(job, Job)
    assert (job.state, job.queue, job.payload, job.max_attempts) == (
        JobState.PENDING, queue_name, {"to": "a@b.com"}, 5,
    )  # fmt: skip
    assert await stored_ids(observer, queue_name) == set()
    await session.commit()
    assert await stored_ids(observer, queue_name) == {job.id}


async def test_each_job_keeps_its_priority(
    session: Session, observer: asyncpg.Connection, queue_name: str
) -> None:
    urgent = await session.enqueue("email", queue=queue_name, priority=0)
    batch = await session.enqueue_many(
        [
            {"job_type": "email", "queue": queue_name, "priority": 9},
            {"job_type": "email", "queue": queue_name},
        ]
    )
    await session.commit()

    assert [job.priority for job in (urgent, *batch)] == [0, 9, 5]
    rows = await observer.fetch(
        "SELECT id, priority FROM jobs WHERE id = ANY($1::uuid[])",
        [job.id for job in (urgent, *batch)],
    )
    assert {row["id"]: row["priority"] for row in rows} == {
        urgent.id: 0,
        batch[0].id: 9,
        batch[1].id: 5,
    }


def traceparent_naming(span: trace.Span) -> str:
    """W3C form: version 00, the span's trace id, its span id and its trace flags."""
    context = span.get_span_context()
    assert context.trace_flags.sampled
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


async def stored_traceparents(
    observer: asyncpg.Connection, jobs: list[Job]
) -> dict[UUID, str | None]:
    rows = await observer.fetch(
        "SELECT id, traceparent FROM jobs WHERE id = ANY($1::uuid[])", [job.id for job in jobs]
    )
    return {row["id"]: row["traceparent"] for row in rows}


async def test_a_job_enqueued_in_a_span_keeps_its_traceparent_and_one_outside_none(
    session: Session, observer: asyncpg.Connection, queue_name: str
) -> None:
    # The same kind of job before, inside and after the span: what a process's calls have
    # checked before is no reason to carry another call's trace, or none.
    tracer = TracerProvider().get_tracer("the application")
    before = await session.enqueue("email", queue=queue_name)
    with tracer.start_as_current_span("POST /orders") as span:
        traced = await session.enqueue("email", queue=queue_name)
        batched = await session.enqueue_many([{"job_type": "email", "queue": queue_name}] * 2)
    untraced = await session.enqueue("email", queue=queue_name)
    await session.commit()

    expected = traceparent_naming(span)
    assert await stored_traceparents(observer, [before, traced, *batched, untraced]) == {
        before.id: None,
        traced.id: expected,
        batched[0].id: expected,
        batched[1].id: expected,
        untraced.id: None,
    }


async def test_a_current_span_that_is_not_valid_leaves_the_traceparent_null(
    session: Session, observer: asyncpg.Connection, queue_name: str
) -> None:
    with trace.use_span(trace.INVALID_SPAN):
        job = await session.enqueue("email", queue=queue_name)
    await session.commit()

    assert await stored_traceparents(observer, [job]) == {job.id: None}


async def test_a_batch_stores_every_field_of_every_job_as_a_read_returns_it(
    session: Session, observer: asyncpg.Connection, queue_name: str
) -> None:
    # One INSERT carries the whole batch (on psycopg: one array per field): each job keeps
    # its own options, nulls included, and the answer is what a later read finds.
    batch = await session.enqueue_many(
        [
            {"job_type": "a", "queue": queue_name, "payload": {"z": 1, "a": [1.5, None]}},
            {
                "job_type": "b", "queue": queue_name, "delay": 60, "max_attempts": 7,
                "initial_delay": 2.5, "backoff": 3, "max_delay": 90, "jitter": True,
                "visibility_timeout": 45, "timeout": 12, "priority": 1,
                "idempotency_key": f"{queue_name}-b", "unique_key": "u-b",
            },
            {"job_type": "c", "queue": queue_name, "run_at": datetime(2031, 2, 3, tzinfo=UTC)},
        ]
    )  # fmt: skip
    await session.commit()

    rows = await observer.fetch(
        "SELECT id, job_type, payload::text, idempotency_key, unique_key, max_attempts,"
        " initial_delay, backoff, max_delay, jitter, visibility_timeout, timeout, priority,"
        " next_run_at - created_at AS wait, next_run_at FROM jobs WHERE queue = $1"
        " ORDER BY job_type",
        queue_name,
    )
    assert [row["id"] for row in rows] == [job.id for job in batch]
    for job, row in zip(batch, rows, strict=True):
        assert (job.job_type, job.idempotency_key, job.unique_key) == (
            row["job_type"], row["idempotency_key"], row["unique_key"],
        )  # fmt: skip
        assert job.payload == msgspec.json.decode(row["payload"])
        assert (job.max_attempts, job.initial_delay, job.backoff, job.max_delay) == (
            row["max_attempts"], row["initial_delay"], row["backoff"], row["max_delay"],
        )  # fmt: skip
        assert (job.jitter, job.visibility_timeout, job.timeout, job.priority) == (
            row["jitter"], row["visibility_timeout"], row["timeout"], row["priority"],
        )  # fmt: skip
        assert job.next_run_at == row["next_run_at"]
    assert [row["wait"].total_seconds() for row in rows[:2]] == [0, 60]
    assert rows[1]["max_attempts"] == 7 and rows[1]["jitter"] is True
    assert rows[2]["next_run_at"].isoformat() == "2031-02-03T00:00:00+00:00"


async def test_a_delay_may_be_a_timedelta(
    session: Session, observer: asyncpg.Connection, queue_name: str
) -> None:
    alone = await session.enqueue("email", queue=queue_name, delay=timedelta(minutes=5))
    [batched] = await session.enqueue_many(
        [{"job_type": "email", "queue": queue_name, "delay": timedelta(seconds=90)}]
    )
    await session.commit()

    waits = await observer.fetch(
        "SELECT id, next_run_at - created_at AS wait FROM jobs WHERE queue = $1", queue_name
    )
    assert {row["id"]: row["wait"] for row in waits} == {
        alone.id: timedelta(minutes=5),
        batched.id: timedelta(seconds=90),
    }


@pytest.mark.parametrize("piece", [job_copy.PIECE, 7], ids=["one piece", "pieces of 7"])
async def test_a_large_batch_stores_what_a_read_returns(
    session: Session,
    observer: asyncpg.Connection,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
    piece: int,
) -> None:
    # Keyless and large: stored by COPY (on psycopg, on a UTF-8 connection), its rows sent
    # in pieces. Each job keeps its own options and run time, and its answer (payload as
    # jsonb reads it back included) is what a read finds.
    monkeypatch.setattr(job_copy, "PIECE", piece)
    later = datetime(2031, 2, 3, tzinfo=UTC)
    specs: list[dict[str, Any]] = [
        {
            "job_type": f"t{index % 3}", "queue": queue_name, "priority": index % 10,
            "max_attempts": 1 + index % 5, "jitter": index % 2 == 0, "timeout": index % 4,
            "payload": {"n": index, "big": 1.5e20, "note": "é", "a": [-0.0, 1e-7]},
            **({"run_at": later} if index % 7 == 0 else {}),
        }
        for index in range(COPY_FROM + 5)
    ]  # fmt: skip
    batch = await session.enqueue_many(specs)
    await session.commit()

    rows = await observer.fetch(
        "SELECT id, job_type, payload::text, max_attempts, jitter, timeout, priority,"
        " next_run_at, created_at, updated_at FROM jobs WHERE queue = $1",
        queue_name,
    )
    by_id = {row["id"]: row for row in rows}
    assert len(by_id) == len(specs)
    for spec, job in zip(specs, batch, strict=True):
        row = by_id[job.id]
        read_back = msgspec.json.decode(row["payload"])
        assert msgspec.json.encode(job.payload) == msgspec.json.encode(read_back)
        assert (job.job_type, job.max_attempts, job.jitter, job.timeout, job.priority) == (
            row["job_type"], row["max_attempts"], row["jitter"], row["timeout"], row["priority"],
        )  # fmt: skip
        assert (job.next_run_at, job.created_at, job.updated_at) == (
            row["next_run_at"], row["created_at"], row["updated_at"],
        )  # fmt: skip
        assert job.next_run_at == spec.get("run_at", job.created_at)


@pytest.mark.parametrize("size", [3, COPY_FROM], ids=["small", "large"])
async def test_a_transaction_begun_by_a_plain_begin_holds_the_batch(
    migrated_dsn: str, observer: asyncpg.Connection, queue_name: str, size: int
) -> None:
    # BEGIN sent as SQL, not through asyncpg's transaction(): no savepoint of asyncpg's.
    conn = await asyncpg.connect(migrated_dsn)
    try:
        await conn.execute("BEGIN")
        dropped = await taskforge.enqueue_many(
            conn, [{"job_type": "a", "queue": queue_name}] * size
        )
        await conn.execute("ROLLBACK")
        await conn.execute("BEGIN")
        kept = await taskforge.enqueue_many(conn, [{"job_type": "b", "queue": queue_name}] * size)
        await conn.execute("COMMIT")
    finally:
        await conn.close()

    assert len(dropped) == len(kept) == size
    assert await stored_ids(observer, queue_name) == {job.id for job in kept}


@pytest.mark.parametrize("in_transaction", [False, True], ids=["alone", "in a transaction"])
async def test_an_asyncpg_connection_in_another_client_encoding_stores_payloads_as_sent(
    migrated_dsn: str, observer: asyncpg.Connection, queue_name: str, in_transaction: bool
) -> None:
    # COPY's text is UTF-8 whatever the connection's encoding: on LATIN1 the INSERT goes
    # (in a transaction of the enqueue's own when the caller has none: several statements).
    conn = await asyncpg.connect(migrated_dsn)
    try:
        await conn.execute("SET client_encoding TO 'LATIN1'")
        batch: list[JobSpec] = [
            {"job_type": "a", "queue": queue_name, "payload": {"name": "José"}}
        ] * COPY_FROM
        if in_transaction:
            async with conn.transaction():
                jobs = await taskforge.enqueue_many(conn, batch)
        else:
            jobs = await taskforge.enqueue_many(conn, batch)
    finally:
        await conn.close()

    stored = await observer.fetch(
        "SELECT payload->>'name' AS name FROM jobs WHERE queue = $1", queue_name
    )
    assert [job.payload for job in jobs] == [{"name": "José"}] * COPY_FROM
    assert [row["name"] for row in stored] == ["José"] * COPY_FROM


def test_a_row_that_cannot_be_made_leaves_the_psycopg_transaction_usable(
    migrated_dsn: str, queue_name: str
) -> None:
    # psycopg's COPY undoes its savepoint for what Postgres answers it with: its rows are
    # all made before it starts.
    ids = [uuid4() for _ in range(COPY_FROM)]
    jobs = [NewJob(id=job_id, queue=queue_name, job_type="t") for job_id in ids[1:]]
    jobs.append(NewJob(id=ids[0], queue=queue_name, job_type="t", payload={"x": object()}))
    with psycopg.Connection.connect(migrated_dsn) as conn:
        with pytest.raises(TypeError):
            psycopg_steps.store(conn, jobs)
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the transaction is usable
        stored = conn.execute("SELECT count(*) FROM jobs WHERE queue = %s", [queue_name])
        assert stored.fetchone() == (0,)


@pytest.mark.parametrize("size", [1, COPY_FROM], ids=["one", "large"])
def test_a_psycopg_connection_in_another_client_encoding_stores_payloads_as_sent(
    migrated_dsn: str, queue_name: str, size: int
) -> None:
    # COPY's text is UTF-8 whatever the connection's encoding: on LATIN1 the INSERT goes,
    # and the answers are read in the connection's encoding.
    with psycopg.Connection.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("SET client_encoding TO 'LATIN1'")
        jobs = taskforge.enqueue_many(
            conn, [{"job_type": "a", "queue": queue_name, "payload": {"name": "José"}}] * size
        )
        conn.execute("SET client_encoding TO 'UTF8'")
        stored = conn.execute(
            "SELECT payload->>'name' FROM jobs WHERE queue = %s", [queue_name]
        ).fetchall()

    assert [job.payload for job in jobs] == [{"name": "José"}] * size
    assert stored == [("José",)] * size


def test_a_psycopg_connection_in_sql_ascii_answers_the_jobs_it_stored(
    migrated_dsn: str, queue_name: str
) -> None:
    # On SQL_ASCII psycopg writes text as UTF-8 and reads it back as bytes: the job it
    # committed is answered, not a decoding error after the commit, a held key's job too.
    keyed: Any = {"job_type": "a", "queue": queue_name, "idempotency_key": queue_name}
    with psycopg.Connection.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("SET client_encoding TO 'SQL_ASCII'")
        first = taskforge.enqueue(conn, "a", {"name": "José"}, queue=queue_name)
        held, again = taskforge.enqueue_many(conn, [keyed, keyed])
        conn.execute("SET client_encoding TO 'UTF8'")
        stored = conn.execute(
            "SELECT payload->>'name' FROM jobs WHERE id = %s", [first.id]
        ).fetchall()

    assert first.payload == {"name": "José"}
    assert stored == [("José",)]
    assert again == found(held)
    assert again.queue == queue_name


class _NumbersAsDecimals(psycopg.types.numeric.NumericLoader):
    """An application's own reading of float8: Decimals."""


@pytest.mark.parametrize(
    ("type_name", "loader"),
    [
        ("float8", _NumbersAsDecimals),
        ("int4", psycopg.types.string.TextLoader),
        ("int2", psycopg.types.string.TextLoader),
        ("bool", psycopg.types.string.TextLoader),
        ("text", psycopg.types.string.ByteaLoader),
    ],
)
def test_a_psycopg_connection_with_its_own_loaders_is_answered_the_job_holding_a_key(
    migrated_dsn: str, queue_name: str, type_name: str, loader: type[psycopg.adapt.Loader]
) -> None:
    # The job holding a key is read whole, every column in the enqueue's own reading.
    keyed: Any = {"job_type": "a", "queue": queue_name, "idempotency_key": queue_name}
    with psycopg.Connection.connect(migrated_dsn) as conn:
        conn.adapters.register_loader(type_name, loader)
        first = taskforge.enqueue(conn, **keyed, max_attempts=4, initial_delay=1.5, jitter=True)
        again = taskforge.enqueue(conn, **keyed)
        conn.rollback()

    assert again == found(first)
    assert (again.max_attempts, again.initial_delay, again.jitter) == (4, 1.5, True)
    assert again.state is JobState.PENDING


def test_a_psycopg_connection_in_another_client_encoding_logs_no_warning_per_enqueue(
    migrated_dsn: str, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # psycopg warns of a JSON loads function it cannot cache (a closure): one per encoding.
    with psycopg.Connection.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("SET client_encoding TO 'LATIN1'")
        with caplog.at_level(logging.WARNING, logger="psycopg"):
            for _ in range(3):
                taskforge.enqueue(conn, "a", {"name": "José"}, queue=queue_name)

    assert [record.getMessage() for record in caplog.records] == []


@pytest.mark.parametrize(
    ("options", "field", "character"),
    [
        ({"payload": {"price": "5 €"}}, "payload", "€"),
        ({"payload": {"日本": 1}}, "payload", "日"),  # a key is text too
        ({"idempotency_key": "注文-1"}, "idempotency_key", "注"),
        ({"unique_key": "注文-1"}, "unique_key", "注"),
    ],
)
async def test_text_the_connections_encoding_cannot_carry_is_a_validation_error(
    session: Session,
    observer: asyncpg.Connection,
    queue_name: str,
    options: dict[str, Any],
    field: str,
    character: str,
) -> None:
    # The driver cannot encode the statement's parameters: nothing is sent, the caller's
    # transaction goes on. A large keyless batch is no exception: COPY's data is UTF-8, so
    # on LATIN1 the INSERT stores it.
    await session.execute("SET client_encoding TO 'LATIN1'")
    spec = {"job_type": "email", "queue": queue_name, **options}
    plain: dict[str, Any] = {"job_type": "email", "queue": queue_name, "payload": {"name": "José"}}
    with pytest.raises(taskforge.ValidationError) as caught:
        await session.enqueue(**spec)
    assert caught.value.code == "validation_error"
    assert caught.value.message == (
        f"{field}: holds {character!r}, which the connection's client encoding LATIN1 cannot carry"
    )
    assert caught.value.details == {"field": field}
    with pytest.raises(taskforge.ValidationError) as caught:
        await session.enqueue_many([plain, spec, plain])
    assert caught.value.details == {"field": f"jobs[1].{field}", "index": 1}
    last = COPY_FROM - 1
    with pytest.raises(taskforge.ValidationError) as caught:
        await session.enqueue_many([plain] * last + [spec])
    assert caught.value.details == {"field": f"jobs[{last}].{field}", "index": last}

    kept = await session.enqueue(**plain)  # the transaction is usable
    await session.commit()
    assert await stored_ids(observer, queue_name) == {kept.id}


@pytest.mark.parametrize(
    "jobs",
    [
        # The first statement stores a chunk; the job the driver cannot encode is in the next.
        [{}] * transactional.CHUNK + [{"payload": {"price": "5 €"}}],
        # The second job waits for the first, which holds its key, to be stored. (A unique
        # key is the queue's own, so no other test holds it.)
        [{"unique_key": "k"}, {"unique_key": "k", "payload": {"price": "5 €"}}],
    ],
    ids=["two chunks", "a shared key"],
)
async def test_a_batch_of_several_statements_is_checked_whole_before_the_first(
    session: Session, observer: asyncpg.Connection, queue_name: str, jobs: list[dict[str, Any]]
) -> None:
    # Nothing of the batch is left in the caller's transaction, whose rollback is the
    # caller's to decide on.
    await session.execute("SET client_encoding TO 'LATIN1'")
    last = len(jobs) - 1
    with pytest.raises(taskforge.ValidationError) as caught:
        await session.enqueue_many([{"job_type": "a", "queue": queue_name, **job} for job in jobs])
    assert caught.value.details == {"field": f"jobs[{last}].payload", "index": last}

    await session.commit()
    assert await stored_ids(observer, queue_name) == set()


async def test_an_asyncpg_connection_in_sql_ascii_refuses_text_beyond_ascii(
    migrated_dsn: str, observer: asyncpg.Connection, queue_name: str
) -> None:
    # asyncpg writes text on SQL_ASCII as ASCII (psycopg writes UTF-8: stored as sent).
    conn = await asyncpg.connect(migrated_dsn)
    try:
        await conn.execute("SET client_encoding TO 'SQL_ASCII'")
        with pytest.raises(taskforge.ValidationError) as caught:
            await taskforge.enqueue(conn, "a", {"name": "José"}, queue=queue_name)
    finally:
        await conn.close()

    assert caught.value.message == (
        "payload: holds 'é', which the connection's client encoding SQL_ASCII cannot carry"
    )
    assert await stored_ids(observer, queue_name) == set()


@pytest.mark.parametrize("size", [1, COPY_FROM], ids=["one", "large"])
def test_a_run_at_is_answered_in_the_sessions_time_zone_as_a_read_gives_it(
    migrated_dsn: str, queue_name: str, size: int
) -> None:
    later = datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)
    with psycopg.Connection.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("SET TimeZone TO 'America/New_York'")
        jobs = taskforge.enqueue_many(
            conn, [{"job_type": "a", "queue": queue_name, "run_at": later}] * size
        )
        [(read,)] = conn.execute(
            "SELECT DISTINCT next_run_at FROM jobs WHERE queue = %s", [queue_name]
        ).fetchall()

    assert {job.next_run_at.isoformat() for job in jobs} == {read.isoformat()}
    assert read.isoformat() == "2031-02-02T23:05:06-05:00"


class _NaiveTimestamps(psycopg.adapt.Loader):
    """An application's own reading of timestamptz: naive UTC datetimes."""

    def load(self, data: Any) -> datetime:
        return datetime.fromisoformat(bytes(data).decode()).astimezone(UTC).replace(tzinfo=None)


@pytest.mark.parametrize("size", [1, COPY_FROM], ids=["one", "large"])
def test_a_psycopg_connection_with_its_own_timestamp_loader_is_answered_in_aware_times(
    migrated_dsn: str, queue_name: str, size: int
) -> None:
    with psycopg.Connection.connect(migrated_dsn, autocommit=True) as conn:
        conn.adapters.register_loader("timestamptz", _NaiveTimestamps)
        jobs = taskforge.enqueue_many(conn, [{"job_type": "a", "queue": queue_name}] * size)
        [(created_at,)] = conn.execute(
            "SELECT DISTINCT created_at FROM jobs WHERE queue = %s", [queue_name]
        ).fetchall()

    assert created_at.tzinfo is None  # the application's loader, on its own reads
    assert {job.created_at for job in jobs} == {created_at.replace(tzinfo=UTC)}
    assert all(job.created_at.tzinfo is not None for job in jobs)


@pytest.mark.parametrize("size", [1, 3], ids=["one", "small"])
def test_a_psycopg_connection_reading_uuids_as_text_gets_its_jobs_created(
    migrated_dsn: str, queue_name: str, size: int
) -> None:
    # An application may read uuid columns as text: the enqueue still matches the rows its
    # INSERT returns to its jobs by id, and answers ids as UUIDs (a held key's job too).
    with psycopg.Connection.connect(migrated_dsn) as conn:
        conn.adapters.register_loader("uuid", psycopg.types.string.TextLoader)
        jobs = taskforge.enqueue_many(conn, [{"job_type": "a", "queue": queue_name}] * size)
        keyed = [{"job_type": "a", "queue": queue_name, "idempotency_key": queue_name}] * 2
        first, again = taskforge.enqueue_many(conn, keyed)  # type: ignore[arg-type]
        conn.commit()
        stored = conn.execute("SELECT id FROM jobs WHERE queue = %s", [queue_name]).fetchall()

    assert {job_id for (job_id,) in stored} == {str(job.id) for job in [*jobs, first]}
    assert all(isinstance(job.id, UUID) for job in [*jobs, first, again])
    assert again == found(first)


async def test_a_large_batch_on_a_connection_with_its_own_timestamp_codec(
    migrated_dsn: str, observer: asyncpg.Connection, queue_name: str
) -> None:
    # The COPY writes the transaction's now(), read as a number: no codec can change it.
    conn = await asyncpg.connect(migrated_dsn)
    try:
        await conn.set_type_codec(
            "timestamptz", schema="pg_catalog", encoder=str,
            decoder=lambda text: datetime.fromisoformat(text).replace(tzinfo=None),
        )  # fmt: skip
        batch = await taskforge.enqueue_many(
            conn, [{"job_type": "email", "queue": queue_name}] * COPY_FROM
        )
    finally:
        await conn.close()

    stored = await observer.fetch("SELECT created_at FROM jobs WHERE queue = $1", queue_name)
    assert {row["created_at"] for row in stored} == {job.created_at for job in batch}
    assert len(stored) == COPY_FROM


async def test_a_large_batch_on_a_connection_with_its_own_jsonb_codec(
    migrated_dsn: str, observer: asyncpg.Connection, queue_name: str
) -> None:
    # An application may decode jsonb its own way: the batch is stored the same.
    conn = await asyncpg.connect(migrated_dsn)
    try:
        # asyncpg's own example: the driver would write any value given for a jsonb
        # column with json.dumps, a text as a JSON string.
        await conn.set_type_codec(
            "jsonb", schema="pg_catalog", encoder=json.dumps, decoder=json.loads
        )
        batch = await taskforge.enqueue_many(
            conn,
            [
                {"job_type": "email", "queue": queue_name, "payload": {"n": n}}
                for n in range(COPY_FROM)
            ],
        )
    finally:
        await conn.close()

    stored = await observer.fetch(
        "SELECT id, payload::text FROM jobs WHERE queue = $1 ORDER BY id", queue_name
    )
    assert [(row["id"], row["payload"]) for row in stored] == [
        (job.id, f'{{"n": {n}}}') for n, job in enumerate(batch)
    ]


TEXT_CODECS = pytest.mark.parametrize(
    "type_name", ["uuid", "timestamptz"], ids=["uuid as text", "timestamptz as text"]
)
"""An application's asyncpg codec that reads and writes a type as Postgres's text: what
`set_type_codec(name, encoder=str, decoder=str)` does, a common way to get text ids."""


@TEXT_CODECS
@pytest.mark.parametrize("size", [1, 5, COPY_FROM], ids=["one", "small", "large"])
@pytest.mark.parametrize("keyed", [False, True], ids=["no keys", "keys"])
async def test_a_connection_that_reads_a_type_as_text_gets_the_same_jobs(
    migrated_dsn: str,
    observer: asyncpg.Connection,
    queue_name: str,
    type_name: str,
    size: int,
    keyed: bool,
) -> None:
    conn = await asyncpg.connect(migrated_dsn)
    try:
        await conn.set_type_codec(type_name, schema="pg_catalog", encoder=str, decoder=str)
        specs: list[JobSpec] = []
        for n in range(size):
            spec: JobSpec = {"job_type": "email", "queue": queue_name, "payload": {"n": n}}
            if keyed:
                spec["idempotency_key"] = f"{queue_name}-{n % 3}"
            specs.append(spec)
        async with conn.transaction():
            await conn.execute("SELECT 1")  # the application's own work comes first
            batch = await taskforge.enqueue_many(conn, specs)
            again = await taskforge.enqueue_many(conn, specs)  # the keys' holders, if keyed
            assert conn.is_in_transaction()
    finally:
        await conn.close()

    stored = {
        row["id"]: row
        for row in await observer.fetch(
            "SELECT id, next_run_at, created_at FROM jobs WHERE queue = $1", queue_name
        )
    }
    for job in [*batch, *again]:
        assert isinstance(job.id, UUID), job.id
        assert isinstance(job.created_at, datetime) and job.created_at.tzinfo is not None
        assert isinstance(job.next_run_at, datetime)
        row = stored[job.id]
        assert (job.created_at, job.next_run_at) == (row["created_at"], row["next_run_at"])
    if keyed:  # a job per key, each holder returned for every later job with its key
        assert len(stored) == min(size, 3)
        assert [job.id for job in again] == [job.id for job in batch]
        assert [job.id for job in batch] == [batch[n % 3].id for n in range(size)]
    else:
        assert len(stored) == 2 * size


@BATCH_SIZES
async def test_a_rolled_back_job_never_exists(
    session: Session, observer: asyncpg.Connection, queue_name: str, size: int
) -> None:
    await session.enqueue("email", queue=queue_name)
    await session.enqueue_many([{"job_type": "email", "queue": queue_name}] * size)

    await session.rollback()

    assert await stored_ids(observer, queue_name) == set()


@BATCH_SIZES
async def test_a_rolled_back_savepoint_drops_only_its_jobs(
    session: Session, observer: asyncpg.Connection, queue_name: str, size: int
) -> None:
    before = await session.enqueue("email", queue=queue_name)
    await session.execute("SAVEPOINT order_lines")
    await session.enqueue_many([{"job_type": "email", "queue": queue_name}] * size)
    await session.execute("ROLLBACK TO SAVEPOINT order_lines")
    after = await session.enqueue("email", queue=queue_name)

    await session.commit()

    assert await stored_ids(observer, queue_name) == {before.id, after.id}


async def test_a_reused_key_returns_the_same_job_within_a_transaction(
    session: Session, observer: asyncpg.Connection, queue_name: str
) -> None:
    one, two = f"{queue_name}-1", f"{queue_name}-2"  # keys are global: one per test
    first = await session.enqueue("email", {"n": 1}, queue=queue_name, idempotency_key=one)
    again = await session.enqueue("email", {"n": 2}, queue=queue_name, idempotency_key=one)
    batch = await session.enqueue_many(
        [
            {"job_type": "email", "queue": queue_name, "idempotency_key": two},
            {"job_type": "email", "queue": queue_name, "idempotency_key": one},
            {"job_type": "email", "queue": queue_name, "idempotency_key": two},
        ]
    )
    await session.commit()

    assert again.id == first.id
    assert again.payload == {"n": 1}
    assert [job.id for job in batch] == [batch[0].id, first.id, batch[0].id]
    assert await stored_ids(observer, queue_name) == {first.id, batch[0].id}


async def test_a_held_unique_key_returns_the_job_holding_it(
    session: Session, observer: asyncpg.Connection, queue_name: str
) -> None:
    first = await session.enqueue("report", {"n": 1}, queue=queue_name, unique_key="daily")
    again = await session.enqueue("report", {"n": 2}, queue=queue_name, unique_key="daily")
    batch = await session.enqueue_many(
        [
            {"job_type": "report", "queue": queue_name, "unique_key": "daily"},
            {"job_type": "report", "queue": queue_name, "unique_key": "weekly"},
        ]
    )
    await session.commit()

    assert again.id == first.id
    assert again.payload == {"n": 1}
    assert batch[0].id == first.id
    assert await stored_ids(observer, queue_name) == {first.id, batch[1].id}


async def test_a_job_found_holding_a_key_is_returned_as_a_conflict_and_a_new_one_not(
    session: Session, queue_name: str
) -> None:
    key, other = f"{queue_name}-1", f"{queue_name}-2"  # keys are global: one per test
    created = await session.enqueue("email", queue=queue_name, idempotency_key=key)
    held = await session.enqueue("report", queue=queue_name, unique_key="daily")
    found = await session.enqueue("email", queue=queue_name, idempotency_key=key)
    unique = await session.enqueue("report", queue=queue_name, unique_key="daily")
    batch = await session.enqueue_many(
        [
            {"job_type": "email", "queue": queue_name, "idempotency_key": other},
            {"job_type": "email", "queue": queue_name, "idempotency_key": key},
            {"job_type": "email", "queue": queue_name, "idempotency_key": other},
            {"job_type": "report", "queue": queue_name, "unique_key": "daily"},
            {"job_type": "email", "queue": queue_name},
        ]
    )
    await session.commit()

    assert (created.conflict, held.conflict) == (False, False)
    assert (found.id, found.conflict) == (created.id, True)
    assert (unique.id, unique.conflict) == (held.id, True)
    assert [job.conflict for job in batch] == [False, True, True, True, False]


async def test_a_reused_key_returns_the_job_another_transaction_committed(
    session: Session, migrated_dsn: str, observer: asyncpg.Connection, queue_name: str
) -> None:
    key = f"order-{queue_name}"
    first = await session.enqueue("email", {"n": 1}, queue=queue_name, idempotency_key=key)
    await session.commit()
    # What the holder went through since is in the answer, as a read of it would show it.
    since = datetime(2030, 1, 2, tzinfo=UTC)
    await observer.execute(
        "UPDATE jobs SET snoozes = 2, hand_backs = 1, unknown_type_since = $2 WHERE id = $1",
        first.id,
        since,
    )

    later = Session(session.driver, await _connect(session.driver, migrated_dsn))
    try:
        await later.begin()
        again = await later.enqueue("email", {"n": 2}, queue=queue_name, idempotency_key=key)
        await later.commit()
    finally:
        closing = later.conn.close()
        if inspect.isawaitable(closing):
            await closing

    assert (again.id, again.payload, again.conflict) == (first.id, {"n": 1}, True)
    assert (again.snoozes, again.hand_backs, again.unknown_type_since) == (2, 1, since)
    assert await stored_ids(observer, queue_name) == {first.id}


@pytest.mark.parametrize(
    ("options", "field"),
    [
        # Errors name the argument as the caller passed it (snake_case), not the API's field.
        ({"job_type": "bad type"}, "job_type"),
        ({"payload": ["not", "an", "object"]}, "payload"),
        ({"payload": {"at": object()}}, "payload"),  # not JSON
        ({"max_attempts": 0}, "max_attempts"),
        ({"delay": 5, "run_at": "2030-01-01T00:00:00Z"}, "run_at"),
        ({"queue": "taskforge:internal"}, "queue"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"priority": 10}, "priority"),  # 0 (highest) to 9 (lowest)
        ({"priority": "1"}, "priority"),
        ({"queue": ""}, "queue"),  # as POST /jobs refuses it, not the default queue
        ({"max_attempts": [3]}, "max_attempts"),  # unhashable: named, not blamed on payload
        # Postgres cannot store NUL and JSON has no NaN: refused before anything is sent,
        # wherever it hides (a set and a dataclass are written as JSON too).
        ({"payload": {"tags": {"a\x00b"}}}, "payload"),
        ({"payload": {"note": Note("a\x00b")}}, "payload"),
        ({"payload": {"x": float("nan")}}, "payload"),
        ({"payload": {"x": [float("-inf")]}}, "payload"),
        ({"payload": {"reading": Reading(float("nan"))}}, "payload"),  # was stored as null
        ({"payload": {"pairs": {(1, 2): "a"}}}, "payload"),  # a key JSON cannot write
        ({"payload": {"n": 10**5000}}, "payload"),  # found only by writing it
    ],
)
async def test_bad_input_is_a_validation_error_and_nothing_is_written(
    session: Session,
    observer: asyncpg.Connection,
    queue_name: str,
    options: dict[str, Any],
    field: str,
) -> None:
    spec = {"job_type": "email", "queue": queue_name, **options}
    with pytest.raises(taskforge.ValidationError) as caught:
        await session.enqueue(**spec)
    assert caught.value.code == "validation_error"
    assert caught.value.details == {"field": field}
    with pytest.raises(taskforge.ValidationError) as caught:
        await session.enqueue_many([{"job_type": "email", "queue": queue_name}, spec])
    assert caught.value.details == {"field": f"jobs[1].{field}", "index": 1}  # as the API
    with pytest.raises(taskforge.ValidationError) as caught:
        await session.enqueue_many([spec])  # a batch of one: still named by its index
    assert caught.value.details == {"field": f"jobs[0].{field}", "index": 0}

    # Nothing was sent: the transaction is intact and commits nothing.
    await session.commit()
    assert await stored_ids(observer, queue_name) == set()


async def test_a_backslash_before_u0000_in_a_payload_is_no_nul(
    session: Session, queue_name: str
) -> None:
    job = await session.enqueue(
        "email", {"path": "C:\\u0000", "note": Note("\\u0000")}, queue=queue_name
    )
    await session.commit()

    assert job.payload == {"path": "C:\\u0000", "note": {"text": "\\u0000"}}


async def test_an_option_of_none_is_left_out_as_the_http_client_leaves_it_out(
    session: Session, queue_name: str
) -> None:
    job = await session.enqueue(
        "email", queue=queue_name, timeout=None, max_attempts=None, run_at=None, priority=None
    )
    await session.commit()

    assert (job.timeout, job.max_attempts, job.priority) == (0.0, 3, 5)


async def test_a_naive_run_at_is_read_as_utc_as_the_http_client_reads_it(
    session: Session, queue_name: str
) -> None:
    job = await session.enqueue("email", queue=queue_name, run_at=datetime(2030, 1, 2, 3, 4))
    await session.commit()

    assert job.next_run_at == datetime(2030, 1, 2, 3, 4, tzinfo=UTC)


@pytest.mark.parametrize("keys", [("b", "a"), ("a", "b"), (None, "a")])
async def test_a_batch_stores_the_first_of_two_jobs_sharing_a_unique_key(
    session: Session, observer: asyncpg.Connection, queue_name: str, keys: tuple[str | None, ...]
) -> None:
    """Whatever their idempotency keys: the HTTP client gives every job a random one."""
    specs = [
        {
            "job_type": f"job-{n}",
            "queue": queue_name,
            "unique_key": "shared",
            "idempotency_key": key and f"{queue_name}-{key}",
        }
        for n, key in enumerate(keys)
    ]

    first, second = await session.enqueue_many(specs)
    await session.commit()

    assert (first.job_type, second.id) == ("job-0", first.id)
    assert await stored_ids(observer, queue_name) == {first.id}


@pytest.mark.parametrize(
    "value",
    [
        1,
        None,  # as refused as any value: an option of None is left out only if it exists
    ],
)
async def test_an_unknown_option_is_a_type_error(session: Session, value: int | None) -> None:
    with pytest.raises(TypeError, match="priority_level"):
        await session.enqueue("email", priority_level=value)
    with pytest.raises(TypeError, match="priority_level"):
        await session.enqueue_many([{"job_type": "email", "priority_level": value}])
    with pytest.raises(TypeError, match=r"countdown \(use delay, in seconds\)"):
        await session.enqueue("email", countdown=value)  # as Celery spells it


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("batched", [False, True], ids=["enqueue", "enqueue_many"])
async def test_a_database_without_taskforges_tables_says_to_migrate(
    scratch_dsn: str, driver: str, batched: bool
) -> None:
    session = Session(driver, await _connect(driver, scratch_dsn))
    stored = (
        session.enqueue_many([{"job_type": "email"}] * 2) if batched else session.enqueue("email")
    )
    try:
        with pytest.raises((asyncpg.UndefinedTableError, psycopg.errors.UndefinedTable)) as missing:
            await stored
    finally:
        closing = session.conn.close()
        if inspect.isawaitable(closing):
            await closing

    assert "run `taskforge migrate`" in "\n".join(missing.value.__notes__)


class Notices:
    """The NOTIFYs on the jobs channel that another connection receives. `settled` waits
    for a marker sent after everything before it: Postgres delivers notices in commit
    order, so every notice of an earlier commit has arrived by then."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.payloads: list[str] = []
        self._marked = asyncio.Event()

    def _on_notice(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if payload == "marker":
            self._marked.set()
        else:
            self.payloads.append(str(payload))

    async def settled(self) -> list[str]:
        self._marked.clear()
        await self.conn.execute(f"NOTIFY {JOBS_CHANNEL}, 'marker'")
        await asyncio.wait_for(self._marked.wait(), timeout=10)
        return self.payloads


@pytest.fixture
async def notices(migrated_dsn: str) -> AsyncIterator[Notices]:
    conn = await asyncpg.connect(migrated_dsn)
    notices = Notices(conn)
    await conn.add_listener(JOBS_CHANNEL, notices._on_notice)
    yield notices
    await conn.close()


@BATCH_SIZES
async def test_a_commit_of_due_jobs_notifies_the_scheduler_once(
    session: Session, notices: Notices, queue_name: str, size: int
) -> None:
    await session.enqueue("email", queue=queue_name)
    await session.enqueue_many([{"job_type": "email", "queue": queue_name}] * size)
    assert await notices.settled() == []  # nothing before the commit

    await session.commit()

    assert await notices.settled() == [""]  # one for the transaction, however many jobs


async def test_a_lone_due_job_and_a_batch_with_one_due_job_each_notify(
    session: Session, notices: Notices, queue_name: str
) -> None:
    # The trigger reads a lone job's row and a batch's rows apart (migration 0018).
    await session.enqueue("email", queue=queue_name)
    await session.commit()
    assert await notices.settled() == [""]

    await session.begin()
    await session.enqueue_many(
        [
            {"job_type": "email", "queue": queue_name, "delay": 3600},
            {"job_type": "email", "queue": queue_name},
        ]
    )
    await session.commit()

    assert await notices.settled() == ["", ""]


async def test_delayed_or_rolled_back_jobs_notify_nobody(
    session: Session, notices: Notices, queue_name: str
) -> None:
    await session.enqueue("email", queue=queue_name, delay=3600)
    await session.commit()
    await session.begin()
    await session.enqueue("email", queue=queue_name)
    await session.rollback()

    assert await notices.settled() == []


async def test_jobs_the_api_stores_as_published_notify_nobody(
    observer: asyncpg.Connection, notices: Notices, queue_name: str
) -> None:
    # The API pushes a due job's hint itself after its commit.
    job = NewJob(id=uuid4(), queue=queue_name, job_type="email", payload={})
    [(_, created, needs_hint)] = await insert_jobs(observer, [job], published=True)

    assert created and needs_hint
    assert await notices.settled() == []


async def test_a_job_committed_in_a_transaction_runs_once(
    session: Session, stack: Stack, queue_name: str
) -> None:
    stack.start_scheduler()
    stack.start_worker()

    [job] = await session.enqueue_many(
        [{"job_type": "ledger_sleep", "payload": {"seconds": 0}, "queue": queue_name}]
    )
    await session.commit()

    await stack.wait_for(str(job.id), "SUCCEEDED")
    assert len(await stack.ledger(str(job.id))) == 1


async def test_the_commit_wakes_the_scheduler_instead_of_its_next_sweep(
    session: Session, stack: Stack, queue_name: str
) -> None:
    """With an hour between sweeps, only the NOTIFY sent with a job gets it a hint once the
    scheduler's first sweep is done (which the first job's run shows)."""
    stack.start_scheduler(SCHEDULER_TICK="3600")
    stack.start_worker()
    first = await session.enqueue("ledger_sleep", {"seconds": 0}, queue=queue_name)
    await session.commit()
    await stack.wait_for(str(first.id), "SUCCEEDED")

    await session.begin()
    job = await session.enqueue("ledger_sleep", {"seconds": 0}, queue=queue_name)
    await session.commit()

    await stack.wait_for(str(job.id), "SUCCEEDED")


async def test_outside_a_transaction_the_job_commits_at_once(
    migrated_dsn: str, observer: asyncpg.Connection, queue_name: str
) -> None:
    conn = await asyncpg.connect(migrated_dsn)
    try:
        jobs = await taskforge.enqueue_many(conn, [{"job_type": "email", "queue": queue_name}] * 2)
    finally:
        await conn.close()
    assert await stored_ids(observer, queue_name) == {job.id for job in jobs}


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg-async", "psycopg-sync"])
async def test_one_job_outside_a_transaction_commits_with_its_insert(
    driver: str, migrated_dsn: str, observer: asyncpg.Connection, queue_name: str
) -> None:
    # One statement, no transaction of the enqueue's own: the job is stored at once, and a
    # second enqueue with its key returns it (a look-up after the INSERT that stored none).
    conn = await _connect(driver, migrated_dsn)
    if driver != "asyncpg":
        await Session(driver, conn)._answer(conn.set_autocommit(True))
    session = Session(driver, conn)
    key = f"{queue_name}-once"
    try:
        first = await session.enqueue("email", queue=queue_name, idempotency_key=key)
        assert await stored_ids(observer, queue_name) == {first.id}
        again = await session.enqueue("email", queue=queue_name, idempotency_key=key)
    finally:
        closing = conn.close()
        if inspect.isawaitable(closing):
            await closing

    assert again.id == first.id
    assert await stored_ids(observer, queue_name) == {first.id}


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_large_batch_outside_a_transaction_is_one_copy_all_or_none(
    driver: str,
    migrated_dsn: str,
    observer: asyncpg.Connection,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One COPY, no transaction of the enqueue's own: an id already stored fails it whole
    # (the enqueue draws fresh ids, so the test hands it a taken one) with JobIdTaken on
    # every driver, and the connection goes on.
    conn = await _connect(driver, migrated_dsn)
    if driver != "asyncpg":
        await Session(driver, conn)._answer(conn.set_autocommit(True))
    session = Session(driver, conn)
    batch = [{"job_type": "email", "queue": queue_name}] * COPY_FROM
    try:
        [taken] = await session.enqueue_many(batch[:1])
        fresh_ids = transactional._ids.new_ids
        with monkeypatch.context() as patch:
            patch.setattr(
                transactional._ids, "new_ids", lambda count: [*fresh_ids(count - 1), taken.id]
            )
            with pytest.raises(JobIdTaken):
                await session.enqueue_many(batch)
        kept = await session.enqueue_many(batch)
    finally:
        closing = conn.close()
        if inspect.isawaitable(closing):
            await closing

    assert await stored_ids(observer, queue_name) == {taken.id, *(job.id for job in kept)}


@pytest.mark.parametrize("keys", [{}, {"idempotency_key": "fresh-key"}], ids=["keyless", "keyed"])
async def test_a_job_whose_id_is_taken_is_refused_alike_on_every_driver(
    session: Session,
    observer: asyncpg.Connection,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
    keys: dict[str, Any],
) -> None:
    # The enqueue draws fresh ids, so the test hands it a taken one, then one id for two
    # jobs of a batch: every driver answers JobIdTaken, whether the job has a key or not,
    # and the transaction goes on.
    taken = await session.enqueue("email", queue=queue_name)
    [twice] = transactional._ids.new_ids(1)
    drawn = iter([[taken.id], [twice, twice]])
    monkeypatch.setattr(transactional._ids, "new_ids", lambda count: next(drawn))

    with pytest.raises(JobIdTaken) as raised:
        await session.enqueue("sms", queue=queue_name, **keys)
    with pytest.raises(JobIdTaken) as raised_in_batch:  # ON CONFLICT would skip the second
        await session.enqueue_many([{"job_type": "sms", "queue": queue_name, **keys}] * 2)

    monkeypatch.undo()
    after = await session.enqueue("sms", queue=queue_name)
    await session.commit()
    assert (raised.value.job_id, raised_in_batch.value.job_id) == (taken.id, twice)
    assert await stored_ids(observer, queue_name) == {taken.id, after.id}


@pytest.mark.parametrize("first", [False, True], ids=["after a job", "first statement"])
async def test_a_large_batch_with_a_taken_id_in_a_transaction_stores_none_of_it(
    session: Session,
    observer: asyncpg.Connection,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
    first: bool,
) -> None:
    # A batch the COPY stores, its last id taken: its savepoint undoes it on every driver,
    # and the transaction keeps what it stored before and goes on. As the first statement,
    # the batch runs in the transaction psycopg begins with it.
    if first:
        taken = await taskforge.enqueue(observer, "email", queue=queue_name)
    else:
        taken = await session.enqueue("email", queue=queue_name)
    fresh_ids = transactional._ids.new_ids
    with monkeypatch.context() as patch:
        patch.setattr(
            transactional._ids, "new_ids", lambda count: [*fresh_ids(count - 1), taken.id]
        )
        with pytest.raises(JobIdTaken) as raised:
            await session.enqueue_many([{"job_type": "sms", "queue": queue_name}] * COPY_FROM)
    after = await session.enqueue("sms", queue=queue_name)
    await session.commit()

    assert raised.value.job_id == taken.id
    assert await stored_ids(observer, queue_name) == {taken.id, after.id}


async def test_a_large_batch_postgres_refuses_in_a_transaction_leaves_it_usable(
    session: Session, observer: asyncpg.Connection, queue_name: str
) -> None:
    # Not a taken id but any error Postgres answers the COPY with (here a check constraint
    # of the application's): the driver's own error, the savepoint undone on every driver.
    constraint = f"refused_{queue_name.replace(':', '_').replace('-', '_')}"
    await observer.execute(
        f"ALTER TABLE jobs ADD CONSTRAINT {constraint}"
        f" CHECK (queue <> '{queue_name}' OR job_type <> 'refused') NOT VALID"
    )
    committed = False
    try:
        before = await session.enqueue("email", queue=queue_name)
        batch = [{"job_type": "sms", "queue": queue_name}] * (COPY_FROM - 1)
        refused = (asyncpg.CheckViolationError, psycopg.errors.CheckViolation)
        with pytest.raises(refused):
            await session.enqueue_many([*batch, {"job_type": "refused", "queue": queue_name}])
        after = await session.enqueue("sms", queue=queue_name)
        await session.commit()
        committed = True
    finally:
        if not committed:  # its locks would keep the constraint from being dropped
            await session.rollback()
        await observer.execute(f"ALTER TABLE jobs DROP CONSTRAINT IF EXISTS {constraint}")

    assert await stored_ids(observer, queue_name) == {before.id, after.id}


@pytest.mark.parametrize("size", [1, COPY_FROM], ids=["one", "large"])
async def test_a_psycopg_pipeline_is_refused_before_anything_is_written(
    migrated_dsn: str, observer: asyncpg.Connection, queue_name: str, size: int
) -> None:
    # In pipeline mode no statement's rows come back before the pipeline syncs: the enqueue
    # says so instead of failing on the way (it used to, with nothing to go by).
    jobs = [{"job_type": "email", "queue": queue_name}] * size
    with (
        psycopg.Connection.connect(migrated_dsn, autocommit=True) as conn,
        conn.pipeline(),
        pytest.raises(TypeError, match="psycopg pipeline"),
    ):
        taskforge.enqueue_many(conn, jobs)  # type: ignore[arg-type]
    async with await psycopg.AsyncConnection.connect(migrated_dsn, autocommit=True) as aconn:
        async with aconn.pipeline():
            with pytest.raises(TypeError, match="psycopg pipeline"):
                await taskforge.enqueue_many(aconn, jobs)  # type: ignore[arg-type]
        stored = await taskforge.enqueue_many(aconn, jobs)  # type: ignore[arg-type]

    assert await stored_ids(observer, queue_name) == {job.id for job in stored}


class AppConnection(psycopg.Connection[Any]):
    """An application's own connection class, as psycopg_pool's connection_class takes."""


class AppAsyncConnection(psycopg.AsyncConnection[Any]):
    pass


@pytest.mark.parametrize("driver", ["psycopg-async", "psycopg-sync"])
async def test_a_subclass_of_a_psycopg_connection_is_taken(
    driver: str, migrated_dsn: str, observer: asyncpg.Connection, queue_name: str
) -> None:
    if driver == "psycopg-sync":
        conn: Any = AppConnection.connect(migrated_dsn)
    else:
        conn = await AppAsyncConnection.connect(migrated_dsn)
    session = Session(driver, conn)
    try:
        job = await session.enqueue("email", queue=queue_name)
        await session.commit()
    finally:
        closing = conn.close()
        if inspect.isawaitable(closing):
            await closing

    assert await stored_ids(observer, queue_name) == {job.id}


@pytest.mark.parametrize("size", [1, 3, COPY_FROM], ids=["one", "small", "large"])
@pytest.mark.parametrize("driver", ["psycopg-async", "psycopg-sync"])
async def test_a_psycopg_connection_whose_cursors_take_dollar_placeholders_is_taken(
    driver: str, migrated_dsn: str, observer: asyncpg.Connection, queue_name: str, size: int
) -> None:
    # An application's connection may make RawCursors (`$1` placeholders, as in asyncpg
    # code ported to psycopg): the enqueue's statements, in `%s`, are sent all the same.
    if driver == "psycopg-sync":
        conn: Any = psycopg.Connection.connect(migrated_dsn, cursor_factory=psycopg.RawCursor)
    else:
        conn = await psycopg.AsyncConnection.connect(
            migrated_dsn, cursor_factory=psycopg.AsyncRawCursor
        )
    session = Session(driver, conn)
    try:
        jobs = await session.enqueue_many([{"job_type": "email", "queue": queue_name}] * size)
        keyed = {"job_type": "email", "queue": queue_name, "idempotency_key": queue_name}
        first, again = await session.enqueue_many([keyed, keyed])
        await session.commit()
    finally:
        closing = conn.close()
        if inspect.isawaitable(closing):
            await closing

    assert again == found(first)
    assert await stored_ids(observer, queue_name) == {job.id for job in [*jobs, first]}


def test_anything_else_than_a_database_connection_is_refused() -> None:
    with pytest.raises(TypeError, match="asyncpg connection or a psycopg 3 connection"):
        taskforge.enqueue(object(), "email")  # type: ignore[call-overload]


def test_a_client_given_for_a_connection_is_told_to_call_its_own_enqueue() -> None:
    with taskforge.SyncClient() as client, pytest.raises(TypeError) as refused:
        taskforge.enqueue_many(client, [{"job_type": "email"}])  # type: ignore[call-overload]
    assert str(refused.value) == (
        "taskforge.enqueue_many takes an asyncpg connection or a psycopg 3 connection, not "
        "SyncClient; over HTTP, call the client's own enqueue_many"
    )


async def test_a_pool_given_for_a_connection_is_told_to_acquire_one() -> None:
    pool = asyncpg.create_pool("postgresql://127.0.0.1/unused")  # never started: no server
    with pytest.raises(TypeError) as refused:
        taskforge.enqueue(pool, "email")  # type: ignore[call-overload]
    assert str(refused.value) == (
        "taskforge.enqueue takes an asyncpg connection or a psycopg 3 connection, not Pool; "
        "acquire one (`async with pool.acquire() as conn:`) and enqueue in its transaction"
    )


def test_one_job_given_for_a_list_of_them_is_refused_saying_so() -> None:
    with pytest.raises(TypeError, match=r"^enqueue_many takes an iterable of jobs.* not a dict"):
        taskforge.enqueue_many(object(), {"job_type": "email"})  # type: ignore[call-overload]


def test_the_psycopg_statements_are_the_asyncpg_ones_with_psycopg_placeholders() -> None:
    assert psycopg_form("SELECT $1::int, $2 WHERE x = $3") == "SELECT %s::int, %s WHERE x = %s"
    with pytest.raises(ValueError, match="out of order"):
        psycopg_form("SELECT $2, $1")
    with pytest.raises(ValueError, match="escaping"):
        psycopg_form("SELECT $1 LIKE 'a%'")
