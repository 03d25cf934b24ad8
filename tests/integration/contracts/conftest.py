"""The contract suites, one module per port: every test runs once on the in-memory adapter
and once on the production one (marked `integration`).

The job store's roles (JobStore, LeaseStore, Sweeps, OperatorMoves) and DeadLetterStore run
on Postgres, directly and through PgBouncer in transaction pooling mode: tests share this
run's database (migrated once) and start from empty tables.
ReadyQueue, RateLimiter and MetricsStore run on Redis, each test under a key prefix of its
own (see tests/integration/conftest.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis

from taskforge.adapters.memory.dead_letter_store import InMemoryDeadLetterStore
from taskforge.adapters.memory.metrics import InMemoryMetricsStore
from taskforge.adapters.memory.rate_limiter import InMemoryRateLimiter
from taskforge.adapters.memory.ready_queue import InMemoryReadyQueue
from taskforge.adapters.memory.schedule_store import InMemoryScheduleStore
from taskforge.adapters.memory.state import InMemoryState
from taskforge.adapters.memory.worker_registry import InMemoryWorkerRegistry
from taskforge.adapters.postgres import (
    PostgresDeadLetterStore,
    PostgresScheduleStore,
    PostgresWorkerRegistry,
    create_pool,
)
from taskforge.adapters.redis.metrics import RedisMetricsStore
from taskforge.adapters.redis.rate_limiter import RedisRateLimiter
from taskforge.adapters.redis.ready_queue import RedisReadyQueue
from taskforge.adapters.system import SystemClock, Uuid7Source
from taskforge.application.ports import (
    DeadLetterStore,
    MetricsStore,
    RateLimiter,
    ReadyQueue,
    ScheduleStore,
    WorkerRegistry,
)
from taskforge.domain.new_job import NewJob
from tests.job_stores import InMemoryJobs, JobRoles, PostgresJobs
from tests.servers import PrivatePgBouncer
from tests.support import redis_from_url

JobFactory = Callable[..., NewJob]
WaitUntilPopping = Callable[[], Awaitable[None]]
LimiterForWorker = Callable[[], RateLimiter]
Stores = tuple[JobRoles, DeadLetterStore, ScheduleStore]

_ids = Uuid7Source()


@dataclass(frozen=True)
class PostgresBackend:
    dsn: str
    transaction_pooler: bool
    """The DSN leads through PgBouncer in transaction pooling mode."""


@pytest.fixture(
    params=[
        "memory",
        pytest.param("postgres", marks=pytest.mark.integration),
        pytest.param("pgbouncer", marks=pytest.mark.integration),
    ]
)
def job_backend(request: pytest.FixtureRequest) -> PostgresBackend | None:
    """Which store a test runs against: None for the in-memory one, else Postgres, directly
    or through PgBouncer. Resolved here, outside the event loop, because the database
    fixtures run their own."""
    if request.param == "memory":
        return None
    dsn: str = request.getfixturevalue("migrated_dsn")
    if request.param == "postgres":
        return PostgresBackend(dsn, transaction_pooler=False)
    bouncer: PrivatePgBouncer = request.getfixturevalue("pgbouncer")
    return PostgresBackend(bouncer.route(dsn), transaction_pooler=True)


@pytest.fixture
async def stores(job_backend: PostgresBackend | None) -> AsyncIterator[Stores]:
    if job_backend is None:
        state = InMemoryState(SystemClock(), Uuid7Source())
        yield InMemoryJobs(state), InMemoryDeadLetterStore(state), InMemoryScheduleStore(state)
        return
    # Several connections, so concurrent calls in a test really race inside Postgres.
    pool = await create_pool(
        job_backend.dsn,
        min_size=4,
        max_size=12,
        transaction_pooler=job_backend.transaction_pooler,
    )
    try:
        async with pool.acquire() as conn:
            await conn.execute("TRUNCATE jobs, dead_letters, queues, workers, schedules")
        yield PostgresJobs(pool), PostgresDeadLetterStore(pool), PostgresScheduleStore(pool)
    finally:
        await pool.close()


@pytest.fixture
async def worker_registry(job_backend: PostgresBackend | None) -> AsyncIterator[WorkerRegistry]:
    if job_backend is None:
        yield InMemoryWorkerRegistry()
        return
    pool = await create_pool(
        job_backend.dsn, min_size=1, max_size=2, transaction_pooler=job_backend.transaction_pooler
    )
    try:
        async with pool.acquire() as conn:
            await conn.execute("TRUNCATE workers")
        yield PostgresWorkerRegistry(pool)
    finally:
        await pool.close()


@pytest.fixture
def jobs(stores: Stores) -> JobRoles:
    return stores[0]


@pytest.fixture
def dead_letters(stores: Stores) -> DeadLetterStore:
    return stores[1]


@pytest.fixture
def schedules(stores: Stores) -> ScheduleStore:
    return stores[2]


@pytest.fixture
def new_job(queue_name: str) -> JobFactory:
    """Builds a NewJob with a fresh time-ordered id in this test's queue; keywords override."""

    def build(**fields: Any) -> NewJob:
        fields.setdefault("id", _ids.new_id())
        fields.setdefault("queue", queue_name)
        fields.setdefault("job_type", "email")
        return NewJob(**fields)

    return build


@pytest.fixture(
    params=[
        pytest.param("memory"),
        pytest.param("redis", marks=pytest.mark.integration),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """Which implementation a ReadyQueue, RateLimiter or MetricsStore test runs against."""
    return str(request.param)


@pytest.fixture
def ready_queue(backend: str, request: pytest.FixtureRequest) -> ReadyQueue:
    if backend == "memory":
        return InMemoryReadyQueue()
    queue: RedisReadyQueue = request.getfixturevalue("redis_ready_queue")
    return queue


@pytest.fixture
def metrics_store(backend: str, request: pytest.FixtureRequest) -> MetricsStore:
    if backend == "memory":
        return InMemoryMetricsStore()
    client: Redis = request.getfixturevalue("redis_client")
    return RedisMetricsStore(client, request.getfixturevalue("key_prefix"))


@pytest.fixture
def wait_until_popping(backend: str, request: pytest.FixtureRequest) -> WaitUntilPopping:
    """Returns once a pop started in another task is waiting for a hint."""
    if backend == "memory":

        async def until_parked() -> None:
            # The in-memory pop parks on its condition within a few turns of the event loop;
            # it checks for hints before parking, so an earlier push still wakes it.
            for _ in range(10):
                await asyncio.sleep(0)

        return until_parked

    client: Redis = request.getfixturevalue("redis_client")
    name: str = request.getfixturevalue("client_name")

    async def until_blocked() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            clients = await client.client_list()
            if any(c.get("name") == name and c.get("cmd") == "brpop" for c in clients):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the pop never blocked in BRPOP")

    return until_blocked


@pytest.fixture
async def redis_limiter_for_worker(
    redis_url: str, key_prefix: str, redis_cleanup: None
) -> AsyncIterator[LimiterForWorker]:
    """Each worker gets its own client (its own connections) and limiter object."""
    clients: list[Redis] = []

    def new_worker() -> RateLimiter:
        client = redis_from_url(redis_url)
        clients.append(client)
        return RedisRateLimiter(client, key_prefix)

    try:
        yield new_worker
    finally:
        for client in clients:
            await client.aclose()


@pytest.fixture
def limiter_for_worker(backend: str, request: pytest.FixtureRequest) -> LimiterForWorker:
    """Makes the limiter one more worker would use. In memory every worker of the process
    shares the one limiter; on Redis each worker has its own client and limiter object."""
    if backend == "memory":
        shared = InMemoryRateLimiter()
        return lambda: shared
    factory: LimiterForWorker = request.getfixturevalue("redis_limiter_for_worker")
    return factory
