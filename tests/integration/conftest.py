"""Fixtures for every test that talks to Redis directly: a client of its own and a key
prefix of its own under the run's prefix, with queue names under the run's queue pattern,
so `redis_cleanup` removes every key a test creates."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from taskforge.adapters.redis.ready_queue import RedisReadyQueue
from tests.support import redis_from_url, with_query


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
def queues(queue_name: str) -> list[str]:
    """Three queue names, in the order a worker serves them; colons as in `jobs:ready`."""
    return [f"{queue_name}:{suffix}" for suffix in ("first", "second", "third")]
