"""Fixtures shared by every test: where the real services are, and per-run isolation.

Integration tests find Postgres and Redis in this order: TASKFORGE_TEST_POSTGRES_DSN /
TASKFORGE_TEST_REDIS_URL, then testcontainers when a Docker engine answers. With neither
they skip, except under CI=true, where a missing service is a failure.
Each run creates its own database (dropped afterwards) and uses its own Redis key prefix
and queue names, deleting its keys at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from urllib.parse import urlsplit, urlunsplit

import pytest

RUN_ID = uuid.uuid4().hex[:10]


def _unavailable(what: str) -> None:
    message = (
        f"{what} not available: set TASKFORGE_TEST_POSTGRES_DSN / TASKFORGE_TEST_REDIS_URL "
        "or run a Docker engine for testcontainers"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: integration tests must run)")
    pytest.skip(message)


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def _containers() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def postgres_admin_dsn(_containers: ExitStack) -> str:
    """A DSN with rights to create databases."""
    dsn = os.environ.get("TASKFORGE_TEST_POSTGRES_DSN")
    if dsn:
        return dsn
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        container = _containers.enter_context(PostgresContainer("postgres:15-alpine"))
        return str(container.get_connection_url(driver=None))
    _unavailable("Postgres")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def postgres_dsn(postgres_admin_dsn: str) -> Iterator[str]:
    """A fresh, empty database for this test run, dropped at the end."""
    import asyncio

    import asyncpg

    name = f"taskforge_test_{RUN_ID}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(postgres_admin_dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        _unavailable(f"Postgres at {postgres_admin_dsn} ({exc})")
    yield _with_database(postgres_admin_dsn, name)
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def scratch_dsn(postgres_admin_dsn: str) -> Iterator[str]:
    """An empty database of its own (no schema), dropped after the test."""
    import asyncio

    import asyncpg

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(postgres_admin_dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    name = f"taskforge_scratch_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(postgres_admin_dsn, name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def migrated_dsn(postgres_dsn: str) -> str:
    """This run's database with every migration applied."""
    import asyncio

    from taskforge.adapters.postgres.migrations import apply_migrations

    asyncio.run(apply_migrations(postgres_dsn))
    return postgres_dsn


@pytest.fixture(scope="session")
def redis_url(_containers: ExitStack) -> str:
    url = os.environ.get("TASKFORGE_TEST_REDIS_URL")
    if not url and _docker_answers():
        from testcontainers.redis import RedisContainer

        container = _containers.enter_context(RedisContainer("redis:7-alpine"))
        host = container.get_container_host_ip()
        url = f"redis://{host}:{container.get_exposed_port(6379)}/0"
    if not url:
        _unavailable("Redis")
        raise AssertionError("unreachable")
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except redis.RedisError as exc:
        _unavailable(f"Redis at {url} ({exc})")
    return url


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    """The internal key prefix for this run: taskforge:test-<run>:"""
    return f"taskforge:test-{RUN_ID}:"


@pytest.fixture
def queue_name() -> str:
    """A queue name (and so a Redis list key) no other test or run uses."""
    return f"test-{RUN_ID}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def redis_cleanup(redis_url: str, redis_prefix: str) -> AsyncIterator[None]:
    """Deletes this run's keys (its prefix and its test-<run>- queues) after the test."""
    yield
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        for pattern in (f"{redis_prefix}*", f"test-{RUN_ID}-*"):
            keys = [key async for key in client.scan_iter(match=pattern, count=500)]
            if keys:
                await client.delete(*keys)
    finally:
        await client.aclose()
