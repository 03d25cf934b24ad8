"""The HTTP API in process: an httpx client over the ASGI app, on each backend.

Every test that takes `client` runs twice: on the in-memory backend and on Postgres + Redis
(this run's database, migrated once and emptied per test; this run's Redis key prefix and a
queue name of its own). No worker runs unless a test starts one (`roles`): otherwise state
changes come from the API itself.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from dishka import AsyncContainer

from taskforge.adapters.telemetry.logging import JsonFormatter
from taskforge.application.handlers import HandlerRegistry
from taskforge.entrypoints.config import Address, Settings
from taskforge.entrypoints.container import Backend, make_container
from taskforge.entrypoints.http.app import create_app
from taskforge.entrypoints.runtime import schedule, work

BASE_URL = "http://taskforge.test"

JobFactory = Callable[..., Awaitable[dict[str, Any]]]
LogLines = Callable[[], list[dict[str, Any]]]


def postgres_redis_settings(
    request: pytest.FixtureRequest, queue_name: str, redis_prefix: str
) -> Settings:
    dsn = request.getfixturevalue("migrated_dsn")
    url = urlsplit(request.getfixturevalue("redis_url"))
    return Settings(
        postgres_dsn=dsn,
        redis_addr=Address(url.hostname or "localhost", url.port or 6379),
        redis_db=int(url.path.lstrip("/") or 0),
        redis_key_prefix=redis_prefix,
        queue_name=queue_name,
    )


@pytest.fixture(
    params=[
        Backend.MEMORY,
        pytest.param(Backend.POSTGRES_REDIS, marks=pytest.mark.integration),
    ],
    ids=str,
)
def backend(request: pytest.FixtureRequest) -> Backend:
    return Backend(request.param)


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings fields a test changes: `@pytest.mark.parametrize("overrides", [{...}])`."""
    return {}


@pytest.fixture
def settings(
    request: pytest.FixtureRequest,
    backend: Backend,
    queue_name: str,
    redis_prefix: str,
    overrides: dict[str, Any],
) -> Settings:
    """What the app is built with: this backend's settings plus the test's overrides."""
    if backend is Backend.MEMORY:
        return replace(Settings(queue_name=queue_name), **overrides)
    request.getfixturevalue("redis_cleanup")
    return replace(postgres_redis_settings(request, queue_name, redis_prefix), **overrides)


@pytest.fixture
def handlers() -> HandlerRegistry:
    """The handlers a worker started by `roles` runs (none unless a test overrides this)."""
    return HandlerRegistry()


@pytest.fixture
async def container(
    request: pytest.FixtureRequest, backend: Backend, settings: Settings, handlers: HandlerRegistry
) -> AsyncIterator[AsyncContainer]:
    container = make_container(settings, backend, handlers)
    try:
        if backend is Backend.POSTGRES_REDIS:
            await _empty_tables(request.getfixturevalue("migrated_dsn"))
        yield container
    finally:
        await container.close()


async def _empty_tables(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE jobs, dead_letters, queues, workers, schedules")
    finally:
        await conn.close()


@pytest.fixture
async def client(container: AsyncContainer, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(container, settings)
    # Litestar's ASGI signature is narrower than the generic one httpx declares.
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


@dataclass
class Roles:
    """A worker and a scheduler in this process, on the test's container, as `taskforge dev`
    runs them next to the API."""

    container: AsyncContainer
    settings: Settings
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(work(self.container, self.settings, self.stop)),
            asyncio.create_task(schedule(self.container, self.stop)),
        ]

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 30)


@pytest.fixture
async def roles(container: AsyncContainer, settings: Settings) -> AsyncIterator[Roles]:
    """Started by the test (`roles.start()`), stopped gracefully after it."""
    roles = Roles(container, settings)
    try:
        yield roles
    finally:
        await roles.shutdown()


@pytest.fixture
def create_job(client: httpx.AsyncClient) -> JobFactory:
    """POSTs a job (jobType "email" unless given) and returns the created resource."""

    async def create(**fields: Any) -> dict[str, Any]:
        fields.setdefault("jobType", "email")
        response = await client.post("/jobs", json=fields)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    return create


def assert_error(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    """The response is the API's error shape with this status and code (naming `field`)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    if field is not None:
        assert body["details"]["field"] == field, body
        assert field in body["message"]
    return body


@pytest.fixture
def logs() -> Iterator[LogLines]:
    """What TaskForge logged so far in this test, one parsed JSON line each (level INFO)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("taskforge")
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
