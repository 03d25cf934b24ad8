"""What only the Postgres store has: the state machine trigger, transactions that roll back,
and connection failures reported as Unavailable."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import msgspec
import pytest

from taskforge.adapters.jsonb import jsonb_form
from taskforge.adapters.postgres import PostgresJobStore, create_pool, job_copy
from taskforge.adapters.postgres._fragments import ATTEMPTS_EXHAUSTED
from taskforge.adapters.postgres.connection import _init_connection
from taskforge.adapters.postgres.dashboard import PostgresDeadLetterGroups
from taskforge.adapters.postgres.job_copy import COPY_FROM
from taskforge.adapters.postgres.job_lists import find_statement
from taskforge.adapters.postgres.job_store import (
    SELECT_JOBS_BY_IDEMPOTENCY_KEY,
    SELECT_TAKEN_IDS,
    insert_jobs,
)
from taskforge.adapters.postgres.lease_store import CLAIM_DUE_JOBS
from taskforge.adapters.postgres.operator_moves import SELECT_UNIQUE_KEY_HOLDER
from taskforge.adapters.postgres.queue_pauses import RESUME
from taskforge.adapters.postgres.sweeps import (
    FIND_NEVER_PUBLISHED,
    FIND_UNPUBLISHED,
    FOLD_JOB_COUNTS,
    FOLD_LOCK,
    MARK_UNPUBLISHED,
    PROMOTE_DUE,
    PostgresSweeps,
)
from taskforge.adapters.system import Uuid7Source
from taskforge.application.ports import ListFilter
from taskforge.domain.errors import JobIdTaken, Unavailable
from taskforge.domain.new_job import NewJob
from taskforge.domain.policy import MAX_ATTEMPTS_LIMIT, RetryPolicy, attempts_exhausted
from taskforge.domain.states import JobState, can_transition
from taskforge.domain.validation import written_out_growth
from tests.job_stores import PostgresJobs
from tests.servers import PrivatePgBouncer
from tests.support import free_port

INVALID_TRANSITION_SQLSTATE = "TF001"
"""Raised by the `jobs_state_transition` trigger when an UPDATE makes an illegal move; the
store's own statements never meet it (each names the states it moves from)."""

INSERT_IN_STATE = """
INSERT INTO jobs (
    id, queue, job_type, state, max_attempts, initial_delay, backoff, max_delay, jitter,
    visibility_timeout, next_run_at, lease_token, lease_expires_at
)
VALUES (
    $1, 'trigger-probe', 'probe', $2::text, 3, 1, 2, 300, false, 30, now(),
    CASE WHEN $2::text = 'RUNNING' THEN gen_random_uuid() END,
    CASE WHEN $2::text = 'RUNNING' THEN now() + interval '30 seconds' END
)
"""

# Keeps the lease columns consistent with the target state, so only the trigger can object.
MOVE_TO_STATE = """
UPDATE jobs SET
    state = $2::text,
    lease_token = CASE WHEN $2::text = 'RUNNING' THEN gen_random_uuid() END,
    lease_expires_at = CASE WHEN $2::text = 'RUNNING' THEN now() + interval '30 seconds' END
WHERE id = $1
"""


@pytest.fixture
async def connection(migrated_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(migrated_dsn)
    try:
        yield conn
    finally:
        await conn.execute("DELETE FROM jobs WHERE queue = 'trigger-probe'")
        await conn.execute("DELETE FROM job_counts WHERE queue = 'trigger-probe'")
        await conn.close()


# Evaluates the store's SQL form of the rule over one made-up `jobs` row.
SQL_ATTEMPTS_EXHAUSTED = f"""
SELECT {ATTEMPTS_EXHAUSTED}
FROM (VALUES ($1::int, $2::int)) AS jobs (attempt_count, max_attempts)
"""


async def trigger_allows(conn: asyncpg.Connection, current: JobState, target: JobState) -> bool:
    job_id = uuid4()
    await conn.execute(INSERT_IN_STATE, job_id, current.value)
    try:
        await conn.execute(MOVE_TO_STATE, job_id, target.value)
    except asyncpg.PostgresError as exc:
        if exc.sqlstate != INVALID_TRANSITION_SQLSTATE:
            raise
        return False
    return True


@pytest.mark.parametrize(
    ("attempt_count", "max_attempts"),
    [
        (attempt_count, max_attempts)
        for max_attempts in (1, 2, 3, MAX_ATTEMPTS_LIMIT)
        # never run, one short of the limit, at it, and past it (a lowered limit)
        for attempt_count in (0, max_attempts - 1, max_attempts, max_attempts + 1)
    ],
)
async def test_store_sql_agrees_with_the_domain_on_exhausted_attempts(
    connection: asyncpg.Connection, attempt_count: int, max_attempts: int
) -> None:
    in_sql = await connection.fetchval(SQL_ATTEMPTS_EXHAUSTED, attempt_count, max_attempts)
    assert in_sql == attempts_exhausted(attempt_count, max_attempts)


def _json_values(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value of the kinds a payload holds, floats of every magnitude."""
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.choice([0.0, -0.0, 1.0, 0.1, 1e16, 1e-5, 5e-324, 1.7976931348623157e308])
    if kind == 1:
        return rng.choice([-1, 1]) * rng.random() * 10 ** rng.randrange(-30, 30)
    if kind == 2:
        return rng.choice([0, -7, 2**53, 2**63 - 1, True, False, None])
    if kind == 3:
        return rng.choice(["", "a", "é", "日本", "tab\there", "\\u0041"])
    if kind == 4:
        return [_json_values(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["", "a", "b", "aa", "é", "z" * 3, "Z", "日", "ab", "ba"]
    return {rng.choice(keys): _json_values(rng, depth + 1) for _ in range(rng.randrange(5))}


async def test_jsonb_form_is_what_a_jsonb_column_reads_back(
    connection: asyncpg.Connection,
) -> None:
    # The answers to a batch stored by COPY carry jsonb_form(payload) where the INSERT
    # read the stored payload back: both must be the same JSON, key order included.
    rng = random.Random(20261206)
    payloads = [{"p": _json_values(rng)} for _ in range(2000)]

    texts = await connection.fetch(
        "SELECT (value::jsonb)::text FROM unnest($1::text[]) AS payloads (value)",
        [msgspec.json.encode(payload).decode() for payload in payloads],
    )

    for payload, (text,) in zip(payloads, texts, strict=True):
        read_back = msgspec.json.decode(text)
        assert msgspec.json.encode(jsonb_form(payload)) == msgspec.json.encode(read_back)


@pytest.mark.parametrize(
    ("current", "target"),
    list(itertools.product(JobState, JobState)),
    ids=lambda state: state.value,
)
async def test_database_trigger_agrees_with_the_domain_transition_table(
    connection: asyncpg.Connection, current: JobState, target: JobState
) -> None:
    assert await trigger_allows(connection, current, target) == can_transition(current, target)


async def test_refused_transition_names_the_job_and_both_states(
    connection: asyncpg.Connection,
) -> None:
    job_id = uuid4()
    await connection.execute(INSERT_IN_STATE, job_id, "SUCCEEDED")

    with pytest.raises(asyncpg.PostgresError) as refused:
        await connection.execute(MOVE_TO_STATE, job_id, "PENDING")

    assert refused.value.sqlstate == INVALID_TRANSITION_SQLSTATE
    assert str(job_id) in str(refused.value)
    assert "SUCCEEDED -> PENDING" in str(refused.value)


async def test_updates_that_leave_state_alone_are_not_checked(
    connection: asyncpg.Connection,
) -> None:
    job_id = uuid4()
    await connection.execute(INSERT_IN_STATE, job_id, "SUCCEEDED")

    await connection.execute("UPDATE jobs SET last_error = 'note' WHERE id = $1", job_id)

    assert await connection.fetchval("SELECT last_error FROM jobs WHERE id = $1", job_id) == "note"


async def test_unreachable_database_is_reported_unavailable() -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/taskforge"

    with pytest.raises(Unavailable) as unavailable:
        await create_pool(dsn)

    assert unavailable.value.service == "postgres"


async def test_a_pooler_nobody_named_is_reported_unavailable_saying_so(
    scratch_dsn: str, pgbouncer: PrivatePgBouncer
) -> None:
    # POSTGRES_DSN through PgBouncer without POSTGRES_POOLER=pgbouncer: a statement the
    # connection prepared on one server session is run on another. A database of its own
    # gives PgBouncer one server session, which another client's transaction then holds.
    dsn = pgbouncer.route(scratch_dsn)
    pool = await create_pool(dsn, min_size=1, max_size=1)
    other = await asyncpg.connect(dsn, statement_cache_size=0)
    jobs = PostgresJobStore(pool)
    try:
        await jobs.ping()
        async with other.transaction():
            await other.execute("SELECT 1")
            with pytest.raises(Unavailable) as unavailable:
                await jobs.ping()
    finally:
        await other.close()
        await pool.close()

    assert unavailable.value.cause.startswith('prepared statement "__asyncpg_stmt_')
    assert unavailable.value.cause.endswith(
        '" does not exist: a pooler in transaction mode (PgBouncer) lies between this process'
        " and Postgres: set POSTGRES_POOLER=pgbouncer"
    )


async def test_store_calls_after_the_pool_closed_are_unavailable(
    migrated_dsn: str,
) -> None:
    pool = await create_pool(migrated_dsn)
    jobs = PostgresJobStore(pool)
    await pool.close()

    with pytest.raises(Unavailable):
        await jobs.get(UUID(int=1))
    with pytest.raises(Unavailable):
        await jobs.ping()


async def test_lost_connection_is_reported_unavailable_or_replaced(
    migrated_dsn: str, connection: asyncpg.Connection
) -> None:
    pool = await create_pool(migrated_dsn, min_size=1, max_size=1)
    try:
        jobs = PostgresJobStore(pool)
        async with pool.acquire() as pooled:
            backend = await pooled.fetchval("SELECT pg_backend_pid()")
        # The server ends the pooled session, as a restart or a failover would.
        await connection.execute("SELECT pg_terminate_backend($1)", backend)
        # pg_terminate_backend only signals; wait until the session is really gone.
        deadline = asyncio.get_running_loop().time() + 10
        while await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", backend
        ):
            assert asyncio.get_running_loop().time() < deadline, "backend never exited"
            await asyncio.sleep(0.01)

        # Whether the pool notices the closed socket before handing the connection out is a
        # race: the call either runs on a fresh connection or reports the store unavailable,
        # never an unclassified driver error; and the call after it always works.
        with contextlib.suppress(Unavailable):
            await jobs.ping()
        await jobs.ping()
    finally:
        await pool.close()


class PruneBeforeLookup:
    """A connection that deletes the jobs holding the looked-up idempotency keys just
    before the lookup runs, as a retention prune landing between the two statements."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.pruned = 0

    async def fetch(self, statement: str, *args: object) -> list[asyncpg.Record]:
        if statement == SELECT_JOBS_BY_IDEMPOTENCY_KEY and not self.pruned:
            status = await self._conn.execute(
                "DELETE FROM jobs WHERE idempotency_key = ANY($1::text[])", args[0]
            )
            self.pruned = int(status.split()[-1])
        return await self._conn.fetch(statement, *args)


class DeleteBeforeIdLookup:
    """A connection that deletes the jobs holding the looked-up ids just before the lookup
    runs, as a retention prune landing between the INSERT and it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.deleted = 0

    def is_in_transaction(self) -> bool:
        return self._conn.is_in_transaction()

    async def fetchrow(self, statement: str, *args: object) -> asyncpg.Record | None:
        return await self._conn.fetchrow(statement, *args)

    async def fetch(self, statement: str, *args: object) -> list[asyncpg.Record]:
        if statement == SELECT_TAKEN_IDS and not self.deleted:
            status = await self._conn.execute("DELETE FROM jobs WHERE id = ANY($1)", args[0])
            self.deleted = int(status.split()[-1])
        return await self._conn.fetch(statement, *args)


def _alike(row: dict[str, Any]) -> dict[str, Any]:
    """A stored job's columns but for its id, its queue and the moment it was stored; the
    other timestamps as "that moment" where they hold it."""
    created = row.pop("created_at")
    del row["id"], row["queue"]
    for name in ("next_run_at", "published_at", "updated_at"):
        if row[name] == created:
            row[name] = "when stored"
    return row


@pytest.mark.parametrize("published", [True, False])
async def test_a_batch_by_copy_and_jobs_one_by_one_store_the_rows_the_insert_stores(
    migrated_dsn: str, monkeypatch: pytest.MonkeyPatch, published: bool
) -> None:
    # Every column, so that a column a later migration adds (and the batch INSERT fills)
    # cannot be missed by the COPY or by a single job's INSERTs: the same batch stored
    # four ways, row for row alike but for the ids and the moment each was stored.
    ids = Uuid7Source()
    soon = datetime.now(UTC) + timedelta(hours=1)
    past = datetime(2020, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

    def batch(queue: str) -> list[NewJob]:
        return [
            NewJob(
                id=ids.new_id(), queue=queue, job_type=f"t{index % 3}",
                payload={"n": index, "big": 1.5e20, "note": "é", "a": [-0.0, 1e-7]},
                policy=RetryPolicy(max_attempts=1 + index % 4, jitter=index % 2 == 0),
                visibility_timeout=10 + index % 3, timeout=index % 5, priority=index % 10,
                run_at=(None, soon, past)[index % 3],
                traceparent=(
                    None if index % 2 else "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                ),
            )
            for index in range(COPY_FROM)
        ]  # fmt: skip

    conn = await asyncpg.connect(migrated_dsn)
    await _init_connection(conn)
    rows: dict[str, list[dict[str, Any]]] = {}
    answers: dict[str, list[tuple[bool, bool]]] = {}
    try:
        monkeypatch.setattr(job_copy, "PIECE", 7)  # the rows sent in pieces
        ways = (("copy", COPY_FROM), ("insert", COPY_FROM + 1), ("one", 0), ("one in one", 0))
        for way, copy_from in ways:
            monkeypatch.setattr(job_copy, "COPY_FROM", copy_from)
            queue = f"copy-probe-{way}"
            if way.startswith("one"):  # each job alone, or each by itself in one transaction
                async with contextlib.AsyncExitStack() as stack:
                    if way == "one in one":
                        await stack.enter_async_context(conn.transaction())
                    added = [
                        result
                        for new_job in batch(queue)
                        for result in await insert_jobs(conn, [new_job], published=published)
                    ]
            else:
                async with conn.transaction():
                    added = await insert_jobs(conn, batch(queue), published=published)
            answers[way] = [(created, needs_hint) for _, created, needs_hint in added]
            stored = await conn.fetch("SELECT * FROM jobs WHERE queue = $1 ORDER BY id", queue)
            rows[way] = [_alike(dict(row)) for row in stored]
    finally:
        await conn.execute("DELETE FROM jobs WHERE queue LIKE 'copy-probe-%'")
        await conn.close()

    assert answers["copy"] == answers["insert"] == answers["one"] == answers["one in one"]
    assert rows["copy"] == rows["insert"] == rows["one"] == rows["one in one"]


@pytest.mark.parametrize("published", [True, False])
async def test_a_job_alone_stores_the_row_its_batch_stores_with_keys_and_delays(
    migrated_dsn: str, published: bool
) -> None:
    # What the COPY never stores, the single job's INSERT against the batch's: keys, a
    # delay (kept as its distance from the moment stored), run_at, none of them.
    ids = Uuid7Source()

    def batch(way: str) -> list[NewJob]:
        return [
            NewJob(
                id=ids.new_id(), queue=f"one-probe-{way}", job_type="t", payload={"n": index},
                idempotency_key=f"{way}-key-{index}" if index % 2 else None,
                unique_key=f"unique-{index}" if index % 3 == 0 else None,
                delay=(None, 30.25, 0.0)[index % 3] if index % 4 else None,
                run_at=datetime(2020, 1, 2, tzinfo=UTC) if index % 4 == 0 else None,
                priority=index % 10,
            )
            for index in range(12)
        ]  # fmt: skip

    def alike(row: dict[str, Any], way: str) -> dict[str, Any]:
        if row["idempotency_key"] is not None:
            row["idempotency_key"] = row["idempotency_key"].removeprefix(f"{way}-")
        if row["next_run_at"] > row["created_at"]:
            row["next_run_at"] = row["next_run_at"] - row["created_at"]
        return _alike(row)

    conn = await asyncpg.connect(migrated_dsn)
    await _init_connection(conn)
    rows: dict[str, list[dict[str, Any]]] = {}
    try:
        async with conn.transaction():
            await insert_jobs(conn, batch("batch"), published=published)
        for new_job in batch("one"):
            await insert_jobs(conn, [new_job], published=published)
        for way in ("batch", "one"):
            stored = await conn.fetch(
                "SELECT * FROM jobs WHERE queue = $1 ORDER BY id", f"one-probe-{way}"
            )
            rows[way] = [alike(dict(row), way) for row in stored]
    finally:
        await conn.execute("DELETE FROM jobs WHERE queue LIKE 'one-probe-%'")
        await conn.close()

    assert rows["one"] == rows["batch"]
    assert timedelta(seconds=30.25) in [row["next_run_at"] for row in rows["one"]]


@pytest.mark.parametrize("in_transaction", [False, True], ids=["alone", "in a transaction"])
async def test_one_job_whose_id_is_taken_leaves_the_connection_usable(
    migrated_dsn: str, in_transaction: bool
) -> None:
    # Alone its INSERT fails on the id and aborts nothing; in a transaction the INSERT skips
    # the id, so the caller's transaction goes on and keeps what it stored before.
    ids = Uuid7Source()
    holder = NewJob(id=ids.new_id(), queue="taken-probe", job_type="t")
    before = NewJob(id=ids.new_id(), queue="taken-probe", job_type="t")
    conn = await asyncpg.connect(migrated_dsn)
    await _init_connection(conn)
    try:
        await insert_jobs(conn, [holder])
        async with contextlib.AsyncExitStack() as stack:
            if in_transaction:
                await stack.enter_async_context(conn.transaction())
            await insert_jobs(conn, [before], published=False)
            with pytest.raises(JobIdTaken) as raised:
                await insert_jobs(conn, [NewJob(id=holder.id, queue="taken-probe", job_type="u")])
            assert await conn.fetchval("SELECT 1") == 1
        stored = await conn.fetch("SELECT id, job_type FROM jobs WHERE queue = 'taken-probe'")
    finally:
        await conn.execute("DELETE FROM jobs WHERE queue = 'taken-probe'")
        await conn.close()

    assert raised.value.job_id == holder.id
    assert sorted((row["id"], row["job_type"]) for row in stored) == [
        (holder.id, "t"),
        (before.id, "t"),
    ]


async def test_a_taken_id_in_the_last_piece_undoes_the_pieces_sent_before_it(
    migrated_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Postgres has written the earlier pieces when the last one meets the taken id: the
    # savepoint undoes them all, and the caller's transaction goes on.
    monkeypatch.setattr(job_copy, "PIECE", 7)
    ids = Uuid7Source()
    taken = NewJob(id=ids.new_id(), queue="copy-probe-taken", job_type="t")
    batch = [
        NewJob(id=ids.new_id(), queue="copy-probe-taken", job_type="t")
        for _ in range(COPY_FROM - 1)
    ] + [NewJob(id=taken.id, queue="copy-probe-taken", job_type="t")]
    conn = await asyncpg.connect(migrated_dsn)
    await _init_connection(conn)
    try:
        await insert_jobs(conn, [taken])
        async with conn.transaction():
            with pytest.raises(JobIdTaken) as raised:
                await insert_jobs(conn, batch, published=False)
            assert await conn.fetchval("SELECT 1") == 1  # the transaction is usable
        stored = await conn.fetch("SELECT id FROM jobs WHERE queue = 'copy-probe-taken'")
    finally:
        await conn.execute("DELETE FROM jobs WHERE queue = 'copy-probe-taken'")
        await conn.close()

    assert raised.value.job_id == taken.id
    assert [row["id"] for row in stored] == [taken.id]


async def test_a_row_that_cannot_be_made_mid_copy_leaves_the_transaction_usable(
    migrated_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rows are made as the COPY runs: one that cannot be written (a payload value with
    # no JSON form, which only the store's own encoder finds) fails it after earlier pieces
    # went out, and the savepoint undoes them.
    monkeypatch.setattr(job_copy, "PIECE", 7)
    ids = Uuid7Source()
    batch = [
        NewJob(id=ids.new_id(), queue="copy-probe-unwritable", job_type="t")
        for _ in range(COPY_FROM)
    ]
    batch[-1] = NewJob(
        id=ids.new_id(), queue="copy-probe-unwritable", job_type="t", payload={"x": object()}
    )
    conn = await asyncpg.connect(migrated_dsn)
    await _init_connection(conn)
    try:
        async with conn.transaction():
            with pytest.raises(TypeError):
                await insert_jobs(conn, batch, published=False)
            assert await conn.fetchval("SELECT 1") == 1  # the transaction is usable
        stored = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE queue = 'copy-probe-unwritable'"
        )
    finally:
        await conn.close()

    assert stored == 0


async def test_a_key_freed_between_insert_and_lookup_is_taken_by_the_new_job(
    migrated_dsn: str,
) -> None:
    conn = await asyncpg.connect(migrated_dsn)
    await _init_connection(conn)
    ids = Uuid7Source()
    key = f"pruned-{uuid4()}"

    def new_job() -> NewJob:
        return NewJob(id=ids.new_id(), queue="prune-probe", job_type="email", idempotency_key=key)

    try:
        [(holder, _, _)] = await insert_jobs(conn, [new_job()])
        first, second = new_job(), new_job()
        pruning = PruneBeforeLookup(conn)

        results = await insert_jobs(pruning, [first, second])  # type: ignore[arg-type]

        assert pruning.pruned == 1
        # The job stored on the second try is due: it needs its hint; the one yielding not.
        assert [(job.id, created, needs_hint) for job, created, needs_hint in results] == [
            (first.id, True, True),
            (first.id, False, False),
        ]
        stored = await conn.fetch("SELECT id FROM jobs WHERE idempotency_key = $1", key)
        assert [row["id"] for row in stored] == [first.id]
        assert holder.id != first.id
    finally:
        await conn.execute("DELETE FROM jobs WHERE queue = 'prune-probe'")
        await conn.close()


async def test_one_job_whose_id_is_freed_before_the_lookup_is_stored_after_all(
    migrated_dsn: str,
) -> None:
    # In a transaction, its INSERT met a job holding its id, gone by the look-up: not
    # JobIdTaken, stored.
    conn = await asyncpg.connect(migrated_dsn)
    await _init_connection(conn)
    ids = Uuid7Source()
    try:
        [(holder, _, _)] = await insert_jobs(
            conn, [NewJob(id=ids.new_id(), queue="prune-probe", job_type="email")]
        )
        again = NewJob(id=holder.id, queue="prune-probe", job_type="sms")
        deleting = DeleteBeforeIdLookup(conn)

        async with conn.transaction():
            [(job, created, _)] = await insert_jobs(deleting, [again])  # type: ignore[arg-type]

        assert deleting.deleted == 1
        assert (job.id, job.job_type, created) == (holder.id, "sms", True)
        stored = await conn.fetch("SELECT job_type FROM jobs WHERE id = $1", holder.id)
        assert [row["job_type"] for row in stored] == ["sms"]
    finally:
        await conn.execute("DELETE FROM jobs WHERE queue = 'prune-probe'")
        await conn.close()


PLAN_PROBE_QUEUE = "plan-probe"

FILL_PENDING_BACKLOG = """
INSERT INTO jobs (
    id, queue, job_type, state, max_attempts, initial_delay, backoff, max_delay, jitter,
    visibility_timeout, priority, next_run_at
)
SELECT gen_random_uuid(), $1, 'probe', 'PENDING', 3, 1, 2, 300, false, 30,
       (n % 10)::smallint, now() - make_interval(secs => n % 1000)
FROM generate_series(1, $2) AS n
"""


async def plan_of(conn: asyncpg.Connection, statement: str, *args: object) -> str:
    rows = await conn.fetch(f"EXPLAIN {statement}", *args)
    return "\n".join(row[0] for row in rows)


async def test_a_large_backlog_is_claimed_and_published_through_the_priority_indexes(
    connection: asyncpg.Connection,
) -> None:
    # 20,000 due jobs no hint was published for: sorting them all for every claim or sweep
    # would cost a full scan each time; the priority indexes (migration 0010) give the order.
    transaction = connection.transaction()
    await transaction.start()
    try:
        await connection.execute(FILL_PENDING_BACKLOG, PLAN_PROBE_QUEUE, 20_000)
        await connection.execute("ANALYZE jobs")

        claim = await plan_of(connection, CLAIM_DUE_JOBS, [PLAN_PROBE_QUEUE], "w", 10)
        sweep = await plan_of(connection, FIND_NEVER_PUBLISHED, 500)
    finally:
        await transaction.rollback()  # the table and its statistics as they were

    assert "jobs_pending_by_queue_priority_due" in claim, claim
    assert "jobs_pending_unpublished_by_priority_due" in sweep, sweep
    for plan in (claim, sweep):
        assert "Sort Key: jobs.priority" not in plan, plan  # no sort of the whole backlog


# Mostly finished jobs, as a table that has run for a while holds, a few of them waiting.
FILL_LISTED = """
INSERT INTO jobs (
    id, queue, job_type, state, max_attempts, initial_delay, backoff, max_delay, jitter,
    visibility_timeout, next_run_at, finished_at, created_at
)
SELECT gen_random_uuid(), $1 || (n % 4)::text, 'probe',
       (ARRAY['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED', 'DLQ', 'CANCELLED', 'PENDING'])[n % 6 + 1],
       3, 1, 2, 300, false, 30, now(), now(), now() - make_interval(secs => n)
FROM generate_series(1, $2) AS n
"""


def rows_read_from_jobs(node: dict[str, Any]) -> int:
    """Rows the plan's scans of `jobs` read: those they returned and those they filtered out."""
    read = 0
    if node.get("Relation Name") == "jobs":
        returned = node["Actual Rows"] * node["Actual Loops"]
        read += returned + node.get("Rows Removed by Filter", 0)
        read += node.get("Rows Removed by Index Recheck", 0)
    return read + sum(rows_read_from_jobs(child) for child in node.get("Plans", []))


async def test_job_lists_read_only_their_page_through_the_state_led_indexes(
    connection: asyncpg.Connection,
) -> None:
    # 60,000 jobs, half of them SUCCEEDED. A page at offset N with a state filter reads at
    # most N + limit jobs from its index; without one, at most that much from each state's
    # walk (migration 0015 left two list indexes, both led by state). Pages far deeper than
    # here are timed on a million jobs by the bench's big-table scenario instead: on a
    # table this small Postgres rightly prefers reading it whole to a walk that long.
    queue = f"{PLAN_PROBE_QUEUE}-"
    limit = 50
    filters = [
        ListFilter(),
        ListFilter(state=JobState.SUCCEEDED),
        ListFilter(queue=f"{queue}1"),
        ListFilter(queue=f"{queue}1", state=JobState.PENDING),
    ]
    transaction = connection.transaction()
    await transaction.start()
    try:
        await connection.execute(FILL_LISTED, queue, 60_000)
        await connection.execute("ANALYZE jobs")
        read = {}
        for where in filters:
            statement, arguments = find_statement(where)
            for offset in (0, 500):
                explained = await connection.fetchval(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", limit, offset, *arguments
                )
                read[where, offset] = rows_read_from_jobs(json.loads(explained)[0]["Plan"])
    finally:
        await transaction.rollback()

    for (where, offset), rows in read.items():
        walks = 1 if where.state is not None else len(JobState)
        # The walks, then the page's own rows by primary key.
        assert offset + limit <= rows <= walks * (offset + limit) + limit, (where, offset, rows)


COUNT_PROBE_JOBS = """
SELECT state, count(*) AS jobs FROM jobs WHERE queue = 'trigger-probe' GROUP BY state
"""
MAINTAINED_PROBE_COUNTS = """
SELECT state, sum(jobs) AS jobs FROM job_counts WHERE queue = 'trigger-probe'
GROUP BY state HAVING sum(jobs) <> 0
"""


async def test_maintained_job_counts_match_the_table_through_moves_deletes_and_folding(
    connection: asyncpg.Connection,
) -> None:
    async def counted() -> dict[str, int]:
        return {row["state"]: row["jobs"] for row in await connection.fetch(COUNT_PROBE_JOBS)}

    async def maintained() -> dict[str, int]:
        rows = await connection.fetch(MAINTAINED_PROBE_COUNTS)
        return {row["state"]: row["jobs"] for row in rows}

    ids = [uuid4() for _ in range(6)]
    for job_id in ids:
        await connection.execute(INSERT_IN_STATE, job_id, "PENDING")
    for job_id in ids[:4]:
        await connection.execute(MOVE_TO_STATE, job_id, "RUNNING")
    await connection.execute(MOVE_TO_STATE, ids[0], "SUCCEEDED")
    await connection.execute(MOVE_TO_STATE, ids[1], "DLQ")
    await connection.execute("UPDATE jobs SET updated_at = now() WHERE id = $1", ids[2])
    await connection.execute("DELETE FROM jobs WHERE id = $1", ids[5])
    before_folding = await maintained()

    async with connection.transaction():
        assert await connection.fetchval(FOLD_LOCK)
        assert await connection.fetchval(FOLD_JOB_COUNTS) > 0
    rows_per_state = await connection.fetch(
        "SELECT state, count(*) AS n FROM job_counts WHERE queue = 'trigger-probe' GROUP BY state"
    )

    assert (
        before_folding == await counted() == {"PENDING": 1, "RUNNING": 2, "SUCCEEDED": 1, "DLQ": 1}
    )
    assert await maintained() == await counted()
    assert all(row["n"] == 1 for row in rows_per_state)


class TruncateDuringFold(PostgresSweeps):
    """Postgres sweeps whose fold, once its statement ran and before it commits, lets a
    TRUNCATE of jobs on another connection start and waits until that TRUNCATE is held up."""

    def __init__(self, pool: asyncpg.Pool, other: asyncpg.Connection) -> None:
        super().__init__(pool)
        self.other = other
        self.truncating: asyncio.Task[str] | None = None

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        async with super()._connection() as conn:
            yield _TruncateAfterFolding(conn, self)


class _TruncateAfterFolding:
    def __init__(self, conn: Any, sweeps: TruncateDuringFold) -> None:
        self._conn = conn
        self._sweeps = sweeps

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def fetchval(self, statement: str, *args: object) -> Any:
        value = await self._conn.fetchval(statement, *args)
        if statement == FOLD_JOB_COUNTS:
            other = self._sweeps.other
            truncating = asyncio.ensure_future(other.execute("TRUNCATE jobs, dead_letters"))
            self._sweeps.truncating = truncating
            pid = other.get_server_pid()
            async with asyncio.timeout(10):
                while not truncating.done():
                    if await self._conn.fetchval(WAIT_EVENT_TYPE, pid) == "Lock":
                        break
                    await asyncio.sleep(0.01)
        return value


WAIT_EVENT_TYPE = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1"


async def test_a_truncate_while_the_counts_are_folded_leaves_no_count_behind(
    migrated_dsn: str,
) -> None:
    # TRUNCATE jobs empties job_counts too (migration 0013); a fold under way meanwhile
    # must not put back the sum of the jobs it had folded.
    pool = await create_pool(migrated_dsn, min_size=1, max_size=2)
    other = await asyncpg.connect(migrated_dsn)
    try:
        async with pool.acquire() as conn:
            for _ in range(2):  # two counts rows for one (queue, state): something to fold
                await conn.execute(INSERT_IN_STATE, uuid4(), "PENDING")
        sweeps = TruncateDuringFold(pool, other)

        folded = await sweeps.fold_job_counts()
        assert sweeps.truncating is not None
        await sweeps.truncating

        async with pool.acquire() as conn:
            left = await conn.fetch("SELECT queue, state, jobs FROM job_counts")
        assert folded == 2
        assert [tuple(row) for row in left] == []
    finally:
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM jobs WHERE queue = 'trigger-probe'")
            await conn.execute("DELETE FROM job_counts WHERE queue = 'trigger-probe'")
        await other.close()
        await pool.close()


INSERT_SEVERAL_IN_STATES = """
INSERT INTO jobs (
    id, queue, job_type, state, max_attempts, initial_delay, backoff, max_delay, jitter,
    visibility_timeout, next_run_at, lease_token, lease_expires_at
)
SELECT gen_random_uuid(), queue, 'probe', state, 3, 1, 2, 300, false, 30, now(),
       CASE WHEN state = 'RUNNING' THEN gen_random_uuid() END,
       CASE WHEN state = 'RUNNING' THEN now() + interval '30 seconds' END
FROM unnest($1::text[], $2::text[]) AS incoming (queue, state)
"""
APPENDED_COUNTS = """
SELECT queue, state, jobs FROM job_counts WHERE queue LIKE 'trigger-probe%'
ORDER BY queue, state, jobs
"""


async def test_an_insert_appends_one_counts_row_per_queue_and_state_it_stored(
    connection: asyncpg.Connection,
) -> None:
    # The INSERT trigger (migration 0018) groups a statement of several jobs and appends the
    # row of a statement of one as it is; either way the sums are the jobs stored.
    other = "trigger-probe-other"
    pairs = [
        ("trigger-probe", "PENDING"),
        (other, "PENDING"),
        ("trigger-probe", "RUNNING"),
        ("trigger-probe", "PENDING"),
        ("trigger-probe", "PENDING"),
        (other, "PENDING"),
    ]
    lone = uuid4()
    try:
        await connection.execute(
            INSERT_SEVERAL_IN_STATES, [queue for queue, _ in pairs], [state for _, state in pairs]
        )
        await connection.execute(INSERT_IN_STATE, lone, "PENDING")
        # A statement that stores nothing (its one row skipped) appends nothing.
        await connection.execute(f"{INSERT_IN_STATE} ON CONFLICT DO NOTHING", lone, "PENDING")

        appended = [tuple(row) for row in await connection.fetch(APPENDED_COUNTS)]
    finally:
        await connection.execute("DELETE FROM jobs WHERE queue = $1", other)
        await connection.execute("DELETE FROM job_counts WHERE queue = $1", other)

    assert appended == [
        ("trigger-probe", "PENDING", 1),
        ("trigger-probe", "PENDING", 3),
        ("trigger-probe", "RUNNING", 1),
        (other, "PENDING", 2),
    ]


async def test_a_group_purge_skips_a_dead_letter_being_replayed_instead_of_deadlocking(
    migrated_dsn: str,
) -> None:
    # A replay (or a retry) locks the job's row, then deletes its dead letter. A purge that
    # locked the dead letter first and then waited for the job's row closed a cycle with it,
    # and Postgres aborted one of the two as a deadlock (a 500) after a second's stall.
    pool = await create_pool(migrated_dsn, min_size=1, max_size=2)
    conn = await asyncpg.connect(migrated_dsn)
    ids = Uuid7Source()
    jobs, groups = PostgresJobs(pool), PostgresDeadLetterGroups(pool)
    job_type = f"purge-probe-{uuid4().hex[:8]}"
    try:
        dead = []
        for _ in range(2):
            added = await jobs.add(NewJob(id=ids.new_id(), queue="purge-probe", job_type=job_type))
            dead.append(await jobs.dead_letter(added.job.id, "order 7 not found"))
        replayed, purged = dead
        async with asyncio.timeout(10), conn.transaction():
            # The replay's two writes, in its order, with the purge between them.
            await conn.execute("UPDATE jobs SET updated_at = now() WHERE id = $1", replayed.id)
            purge = asyncio.create_task(groups.purge(job_type, "order N not found", 100))
            await asyncio.wait({purge}, timeout=0.5)
            await conn.execute("DELETE FROM dead_letters WHERE job_id = $1", replayed.id)
        assert await purge == 1
        assert await jobs.get(purged.id) is None
        assert await jobs.get(replayed.id) is not None
    finally:
        await conn.execute("DELETE FROM jobs WHERE queue = 'purge-probe'")
        await conn.close()
        await pool.close()


async def test_a_claim_under_way_when_a_queue_is_paused_ends_before_the_pause_answers(
    migrated_dsn: str,
) -> None:
    # A claim checks the pause in its statement's snapshot. One that had begun, here held up
    # by a row lock, used to claim its job after the pause had answered; now the pause
    # waits for it, and a claim that begins while the pause is being stored sees the pause
    # (here a claim of due jobs, as workers make while Redis is away).
    pool = await create_pool(migrated_dsn, min_size=1, max_size=4)
    conn = await asyncpg.connect(migrated_dsn)
    ids = Uuid7Source()
    jobs = PostgresJobs(pool)
    queue = f"pause-probe-{uuid4().hex[:8]}"
    try:
        held, free = [
            (await jobs.add(NewJob(id=ids.new_id(), queue=queue, job_type="email"))).job
            for _ in range(2)
        ]
        answered: list[str] = []
        async with asyncio.timeout(10):
            async with conn.transaction():
                await conn.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", held.id)
                first = asyncio.create_task(jobs.claim([held.id], "worker-1"))
                first.add_done_callback(lambda _: answered.append("first claim"))
                await asyncio.wait({first}, timeout=0.3)
                pause = asyncio.create_task(jobs.pause(queue))
                pause.add_done_callback(lambda _: answered.append("pause"))
                await asyncio.wait({pause}, timeout=0.3)
                second = asyncio.create_task(jobs.claim_due([queue], 10, "worker-2"))
                second.add_done_callback(lambda _: answered.append("second claim"))
                await asyncio.wait({second}, timeout=0.3)
            claimed_first, _, claimed_second = await asyncio.gather(first, pause, second)

        assert answered == ["first claim", "pause", "second claim"]
        assert [job.id for job in claimed_first] == [held.id]
        assert claimed_second == []
        assert (await stored_state(jobs, free.id)) is JobState.PENDING
    finally:
        await conn.execute("DELETE FROM jobs WHERE queue = $1", queue)
        await conn.execute("DELETE FROM queues WHERE name = $1", queue)
        await conn.close()
        await pool.close()


async def stored_state(jobs: PostgresJobs, job_id: UUID) -> JobState:
    job = await jobs.get(job_id)
    assert job is not None
    return job.state


class CancelHolderBeforeLookup(PostgresJobs):
    """Postgres job roles whose connections cancel the job holding a unique key just before
    the look-up of that holder runs, as a holder finishing between the refused move and
    the look-up that explains it."""

    def __init__(self, pool: asyncpg.Pool, holder: UUID) -> None:
        super().__init__(pool)
        self.holder: UUID | None = holder

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        async with super()._connection() as conn:
            yield _CancelHolderFirst(conn, self)


class _CancelHolderFirst:
    def __init__(self, conn: Any, jobs: CancelHolderBeforeLookup) -> None:
        self._conn = conn
        self._jobs = jobs

    async def fetchrow(self, statement: str, *args: object) -> asyncpg.Record | None:
        if statement == SELECT_UNIQUE_KEY_HOLDER and self._jobs.holder is not None:
            holder, self._jobs.holder = self._jobs.holder, None
            await self._conn.execute(
                "UPDATE jobs SET state = 'CANCELLED', finished_at = now() WHERE id = $1", holder
            )
        row: asyncpg.Record | None = await self._conn.fetchrow(statement, *args)
        return row

    async def fetchval(self, statement: str, *args: object) -> Any:
        return await self._conn.fetchval(statement, *args)


@pytest.mark.parametrize("move", ["retry", "replay"])
async def test_a_unique_key_freed_before_its_holder_is_looked_up_is_taken_by_the_move(
    migrated_dsn: str, move: str
) -> None:
    # The move met the unique key's holder, which finished before the look-up that names
    # it: the move is tried again and takes the key, instead of failing with the raw
    # unique violation (a 500).
    pool = await create_pool(migrated_dsn, min_size=1, max_size=2)
    ids = Uuid7Source()
    jobs = PostgresJobs(pool)
    key = f"race-{uuid4().hex[:8]}"

    def new_job() -> NewJob:
        return NewJob(id=ids.new_id(), queue="trigger-probe", job_type="email", unique_key=key)

    try:
        first = (await jobs.add(new_job())).job
        await jobs.dead_letter(first.id, None)
        holder = (await jobs.add(new_job())).job
        racing = CancelHolderBeforeLookup(pool, holder.id)

        moved = await (racing.retry_now(first.id) if move == "retry" else racing.replay(first.id))

        assert racing.holder is None  # the holder was looked up, and had finished
        assert (moved.id, moved.state) == (first.id, JobState.PENDING)
        assert await stored_state(jobs, holder.id) is JobState.CANCELLED
    finally:
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM jobs WHERE queue = 'trigger-probe'")
            await conn.execute("DELETE FROM job_counts WHERE queue = 'trigger-probe'")
        await pool.close()


FILL_FINISHED = """
INSERT INTO jobs (
    id, queue, job_type, state, max_attempts, initial_delay, backoff, max_delay, jitter,
    visibility_timeout, next_run_at, finished_at
)
SELECT gen_random_uuid(), $1, 'probe', 'SUCCEEDED', 3, 1, 2, 300, false, 30, now(), now()
FROM generate_series(1, $2)
"""


def rows_removed_by_join_filters(node: dict[str, Any]) -> int:
    """Pairs of rows the plan's joins compared and threw away."""
    removed = int(node.get("Rows Removed by Join Filter", 0))
    return removed + sum(rows_removed_by_join_filters(child) for child in node.get("Plans", []))


async def plan_over_an_unknown_backlog(
    connection: asyncpg.Connection,
    fill: str,
    statement: str,
    args: tuple[object, ...],
    *,
    paused: bool = False,
) -> dict[str, Any]:
    """EXPLAIN ANALYZE of `statement` over 2,000 jobs that `fill` adds after the statistics
    were taken on 20,000 finished ones (their queue paused first, with `paused`); all of it
    rolled back, the table and its statistics as they were."""
    transaction = connection.transaction()
    await transaction.start()
    try:
        await connection.execute(FILL_FINISHED, f"{PLAN_PROBE_QUEUE}-done", 20_000)
        await connection.execute("ANALYZE jobs")
        await connection.execute(fill, PLAN_PROBE_QUEUE, 2_000)
        if paused:
            await connection.execute(
                "INSERT INTO queues (name, paused, paused_at, updated_at) "
                "VALUES ($1, true, now(), now())",
                PLAN_PROBE_QUEUE,
            )
        explained = await connection.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", *args)
    finally:
        await transaction.rollback()
    [plan] = json.loads(explained) if isinstance(explained, str) else explained
    found: dict[str, Any] = plan["Plan"]
    return found


async def test_resuming_a_backlog_the_statistics_do_not_know_finds_its_jobs_by_key(
    connection: asyncpg.Connection,
) -> None:
    # The statistics were taken while the queue was empty; a backlog piled up during the
    # pause. Resuming it compared every pending job with every job it published (a queue of
    # 12,000 took 44 s, past any request deadline, and stayed paused).
    plan = await plan_over_an_unknown_backlog(
        connection, FILL_PENDING_BACKLOG, RESUME, (PLAN_PROBE_QUEUE, 1_000), paused=True
    )

    assert plan["Actual Rows"] == 1_000
    assert rows_removed_by_join_filters(plan) < 2_000


FILL_FAILED_BACKLOG = FILL_PENDING_BACKLOG.replace("'PENDING'", "'FAILED'")


@pytest.mark.parametrize(
    ("fill", "statement", "args"),
    [
        (FILL_FAILED_BACKLOG, PROMOTE_DUE, (500,)),
        (FILL_PENDING_BACKLOG, FIND_UNPUBLISHED, ([PLAN_PROBE_QUEUE], [0], 500, 30.0)),
        (FILL_PENDING_BACKLOG, MARK_UNPUBLISHED, (1000, UUID(int=0))),
        (FILL_PENDING_BACKLOG, CLAIM_DUE_JOBS, ([PLAN_PROBE_QUEUE], "w", 10)),
    ],
    ids=["promote", "republish", "mark-unpublished", "claim-due"],
)
async def test_a_sweep_over_a_backlog_the_statistics_do_not_know_finds_its_jobs_by_key(
    connection: asyncpg.Connection, fill: str, statement: str, args: tuple[object, ...]
) -> None:
    # Statistics taken while no job was in the backlog's state: each sweep compared every
    # job of that state with every job it had locked (seconds a batch for 20,000 jobs).
    plan = await plan_over_an_unknown_backlog(connection, fill, statement, args)

    assert plan["Actual Rows"] > 0
    assert rows_removed_by_join_filters(plan) < 2_000


async def test_a_number_written_out_in_full_grows_no_more_than_the_validation_counts(
    migrated_dsn: str,
) -> None:
    # The bound on a payload's or a result's numbers counts each number's growth as jsonb
    # writes it back: it must not be less than what Postgres does to it (the few characters
    # of numbers near 1e-5, counted as none, aside).
    spread = random.Random(7)
    numbers = [1e308, -1.7976931348623157e308, 5e-324, 1e-300, 1e16, 9.9e15, 1e-5, 9.99e-6]
    numbers += [
        spread.uniform(1, 10) * 10.0 ** spread.randint(-320, 300) * spread.choice((1, -1))
        for _ in range(400)
    ]
    conn = await asyncpg.connect(migrated_dsn)
    try:
        for number in numbers:
            sent = msgspec.json.encode(number).decode()
            stored = await conn.fetchval("SELECT $1::text::jsonb::text", sent)
            assert len(stored) - len(sent) <= written_out_growth(number) + 2, (sent, stored)
    finally:
        await conn.close()
