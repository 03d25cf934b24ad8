"""Fixtures shared by every test: where the real services are, and per-run isolation.

Integration tests find Postgres and Redis by themselves (`tests/servers.py`): the servers
named in TASKFORGE_TEST_POSTGRES_DSN / TASKFORGE_TEST_REDIS_URL, else the ones on the
default local ports, else private servers started for this run from the machine's own
binaries, else containers when a Docker engine answers. With none of them the run stops
with one line that says what to install; nothing is skipped. The run's summary says which
server each backend was and how many tests used it.
Each run creates its own database (dropped afterwards) and uses its own Redis key prefix
and queue names, deleting its keys at the end.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.servers import (
    Found,
    PrivatePgBouncer,
    ServicesUnavailable,
    find_postgres,
    find_redis,
)

RUN_ID = uuid.uuid4().hex[:10]
RUN_PREFIX = f"taskforge:test-{RUN_ID}:"
"""The internal Redis key prefix of this run."""

_found: dict[str, Found] = {}
_tests_using: Counter[str] = Counter()
_BACKEND_FIXTURES = {"postgres_admin_dsn": "Postgres", "redis_url": "Redis"}


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def _servers() -> Iterator[ExitStack]:
    """Owns the private servers and containers this run started, stopping them at the end."""
    with ExitStack() as stack:
        yield stack


def _find(backend: str, finder: Callable[[ExitStack], Found], stack: ExitStack) -> str:
    try:
        found = finder(stack)
    except ServicesUnavailable as exc:
        pytest.exit(f"{backend} for the integration tests: {exc}", returncode=3)
    _found[backend] = found
    return found.url


@pytest.fixture(autouse=True)
def _count_backend_use(request: pytest.FixtureRequest) -> Iterator[None]:
    """Counts, after each test, which real servers it used (for the run's summary)."""
    yield
    used = request.fixturenames
    for fixture, backend in _BACKEND_FIXTURES.items():
        if fixture in used:
            _tests_using[backend] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_sep("-", "backends")
    for backend, found in _found.items():
        count = _tests_using[backend]
        terminalreporter.write_line(
            f"{backend}: {count} test{'' if count == 1 else 's'} on {found.where}"
        )
    if not _found:
        terminalreporter.write_line("no test used Postgres or Redis (in-memory backend only)")


@pytest.fixture(scope="session")
def postgres_admin_dsn(_servers: ExitStack) -> str:
    """A DSN with rights to create databases."""
    return _find("Postgres", find_postgres, _servers)


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

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
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
def pgbouncer(postgres_admin_dsn: str, _servers: ExitStack) -> PrivatePgBouncer:
    """A PgBouncer of this run in transaction pooling mode, in front of the test Postgres
    (every database passed through), logging in as the admin DSN's role."""
    parts = urlsplit(postgres_admin_dsn)
    try:
        bouncer = PrivatePgBouncer.create(
            (parts.hostname or "127.0.0.1", parts.port or 5432),
            {parts.username or "postgres": parts.password or ""},
        )
    except ServicesUnavailable as exc:
        pytest.exit(f"PgBouncer for the integration tests: {exc}", returncode=3)
    _servers.callback(bouncer.remove)
    return bouncer


@pytest.fixture(scope="session")
def redis_url(_servers: ExitStack) -> str:
    url = _find("Redis", find_redis, _servers)
    # Runs before a private server this run started is stopped (the stack unwinds last first).
    _servers.callback(_delete_run_keys, url)
    return url


def _delete_run_keys(url: str) -> None:
    """At the end of the run, what tests left under this run's names: its internal prefix
    and its `test-<run>-` queues (a test that used `queue_name` without `redis_cleanup`)."""
    import warnings

    from redis import RedisError

    from tests.support import delete_keys

    try:
        delete_keys(url, (f"{RUN_PREFIX}*", f"test-{RUN_ID}-*"))
    except RedisError as exc:
        warnings.warn(f"could not delete this run's Redis keys: {exc}", stacklevel=1)


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    """The internal key prefix for this run: taskforge:test-<run>:"""
    return RUN_PREFIX


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
