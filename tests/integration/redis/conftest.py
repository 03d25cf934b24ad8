"""Fixtures for the ReadyQueue, RateLimiter and MetricsStore contracts: each contract test runs
once on the in-memory adapter and once on the Redis adapter (marked `integration`).

Redis adapters get a key prefix of their own under the run's prefix and queue names under the
run's queue pattern, so `redis_cleanup` removes every key a test creates.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis

from taskforge.adapters.memory.metrics import InMemoryMetricsStore
from taskforge.adapters.memory.rate_limiter import InMemoryRateLimiter
from taskforge.adapters.memory.ready_queue import InMemoryReadyQueue
from taskforge.adapters.redis.metrics import RedisMetricsStore
from taskforge.adapters.redis.rate_limiter import RedisRateLimiter
from taskforge.adapters.redis.ready_queue import RedisReadyQueue
from taskforge.application.ports import MetricsStore, RateLimiter, ReadyQueue
from tests.support import redis_from_url

WaitUntilPopping = Callable[[], Awaitable[None]]
LimiterForWorker = Callable[[], RateLimiter]


def with_query(url: str, **params: str) -> str:
    """`url` with extra query parameters (redis-py reads client options from the query)."""
    parts = urlsplit(url)
    query = "&".join(part for part in (parts.query, urlencode(params)) if part)
    return urlunsplit(parts._replace(query=query))


@pytest.fixture(
    params=[
        pytest.param("memory"),
        pytest.param("redis", marks=pytest.mark.integration),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """Which implementation a contract test runs against."""
    return str(request.param)


@pytest.fixture
def key_prefix(redis_prefix: str) -> str:
    """An internal key prefix only this test uses, under the run's prefix."""
    return f"{redis_prefix}{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def client_name() -> str:
    """Names this test's Redis connections, so CLIENT LIST can find them."""
    return f"taskforge-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis_client(
    redis_url: str, client_name: str, redis_cleanup: None
) -> AsyncIterator[Redis]:
    client = redis_from_url(with_query(redis_url, client_name=client_name))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def redis_ready_queue(redis_client: Redis, key_prefix: str) -> RedisReadyQueue:
    return RedisReadyQueue(redis_client, key_prefix)


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
def queues(queue_name: str) -> list[str]:
    """Three queue names, in the order a worker serves them; colons as in `jobs:ready`."""
    return [f"{queue_name}:{suffix}" for suffix in ("first", "second", "third")]


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
