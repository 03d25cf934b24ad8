"""Every route answers within REQUEST_DEADLINE, whatever a dependency does: a frozen Redis
(a ready queue whose calls never return) or a store that hangs. In memory, with the frozen
parts injected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TypeVar

import httpx
import pytest
from dishka import Provider, Scope, provide

from taskforge.adapters.memory.metrics import InMemoryMetricsStore
from taskforge.adapters.memory.ready_queue import InMemoryReadyQueue
from taskforge.application.handlers import HandlerRegistry
from taskforge.application.metrics import ClusterMetrics
from taskforge.application.ports import MetricsStore, ReadyQueue
from taskforge.domain.job import ReadyHint
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.container import Backend, make_container
from taskforge.entrypoints.http.app import create_app
from tests.integration.http.conftest import BASE_URL, assert_error

T = TypeVar("T")

DEADLINE = 0.3
ANSWER_WITHIN = 5.0
"""Far above the deadline: the point is that an answer comes, not how fast."""


class FrozenReadyQueue(InMemoryReadyQueue):
    """Redis stopped with SIGSTOP: connections stay open and no call ever returns."""

    frozen = False

    async def _freeze(self) -> None:
        if self.frozen:
            await asyncio.Event().wait()

    async def push(self, hints: Sequence[ReadyHint]) -> None:
        await self._freeze()
        await super().push(hints)

    async def depth(self, queues: Sequence[str]) -> dict[str, int]:
        await self._freeze()
        return await super().depth(queues)

    async def ping(self) -> None:
        await self._freeze()


class StubbornReadyQueue(FrozenReadyQueue):
    """A frozen call that, once cancelled, keeps cleaning up until `released` is set (as
    asyncpg waits for a black-holed server to confirm a cancelled query)."""

    def __init__(self) -> None:
        super().__init__()
        self.released = asyncio.Event()
        self.cleaning_up = asyncio.Event()

    async def _freeze(self) -> None:
        try:
            await super()._freeze()
        except asyncio.CancelledError:
            self.cleaning_up.set()
            await self.released.wait()
            raise


class FrozenMetricsStore(InMemoryMetricsStore):
    """The cluster metrics in a Redis stopped with SIGSTOP: a read never returns."""

    async def read(self) -> ClusterMetrics:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class FrozenQueueProvider(Provider):
    scope = Scope.APP

    @provide(override=True, provides=ReadyQueue)
    def ready_queue(self) -> FrozenReadyQueue:
        return FrozenReadyQueue()


async def answer(request: Awaitable[T]) -> T:
    """The response, or a failure if none comes within ANSWER_WITHIN (in-process, the
    client itself has no network timeout to fall back on)."""
    async with asyncio.timeout(ANSWER_WITHIN):
        return await request


@pytest.fixture
async def app_and_queue() -> AsyncIterator[tuple[httpx.AsyncClient, FrozenReadyQueue]]:
    settings = Settings(request_deadline=DEADLINE)
    container = make_container(
        settings, Backend.MEMORY, HandlerRegistry(), overrides=[FrozenQueueProvider()]
    )
    app = create_app(container, settings)
    queue = await container.get(ReadyQueue)
    assert isinstance(queue, FrozenReadyQueue)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, timeout=ANSWER_WITHIN
        ) as client:
            yield client, queue
    finally:
        queue.frozen = False
        await container.close()


async def test_stats_with_redis_frozen_is_503_within_the_deadline(
    app_and_queue: tuple[httpx.AsyncClient, FrozenReadyQueue],
) -> None:
    client, queue = app_and_queue
    queue.frozen = True

    response = await answer(client.get("/stats"))

    body = assert_error(response, 503, "not_ready")
    assert "REQUEST_DEADLINE" in body["message"]
    assert response.headers["retry-after"] == "1"
    assert response.headers["x-request-id"]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_route_that_finishes_in_time_is_unaffected(
    app_and_queue: tuple[httpx.AsyncClient, FrozenReadyQueue],
) -> None:
    client, _ = app_and_queue
    assert (await client.get("/stats")).status_code == 200


async def test_a_dashboard_page_past_the_deadline_is_an_html_503() -> None:
    class FrozenMetricsProvider(Provider):
        scope = Scope.APP

        @provide(override=True, provides=MetricsStore)
        def metrics_store(self) -> FrozenMetricsStore:
            return FrozenMetricsStore()

    settings = Settings(request_deadline=DEADLINE)
    container = make_container(
        settings, Backend.MEMORY, HandlerRegistry(), overrides=[FrozenMetricsProvider()]
    )
    transport = httpx.ASGITransport(app=create_app(container, settings))  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            response = await answer(client.get("/ui"))
    finally:
        await container.close()

    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["retry-after"] == "1"
    assert "REQUEST_DEADLINE" in response.text
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_metrics_with_redis_frozen_is_503_within_the_deadline(
    app_and_queue: tuple[httpx.AsyncClient, FrozenReadyQueue],
) -> None:
    client, queue = app_and_queue
    queue.frozen = True

    responses = await asyncio.gather(*(answer(client.get("/metrics")) for _ in range(3)))

    for response in responses:
        assert_error(response, 503, "not_ready")


async def test_a_request_whose_cleanup_hangs_is_still_answered_at_the_deadline() -> None:
    settings = Settings(request_deadline=DEADLINE)
    queue = StubbornReadyQueue()

    class StubbornQueueProvider(Provider):
        scope = Scope.APP

        @provide(override=True, provides=ReadyQueue)
        def ready_queue(self) -> StubbornReadyQueue:
            return queue

    container = make_container(
        settings, Backend.MEMORY, HandlerRegistry(), overrides=[StubbornQueueProvider()]
    )
    transport = httpx.ASGITransport(app=create_app(container, settings))  # type: ignore[arg-type]
    queue.frozen = True
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, timeout=ANSWER_WITHIN
        ) as client:
            response = await answer(client.get("/stats"))

            assert_error(response, 503, "not_ready")
            assert response.headers["retry-after"] == "1"
            # The request was cancelled and is still cleaning up: it was not waited for.
            await answer(queue.cleaning_up.wait())
            assert not queue.released.is_set()
            # The abandoned request still ends once its cleanup does; its answer goes nowhere.
            queue.released.set()
            assert (await answer(client.get("/healthz"))).status_code == 200
    finally:
        queue.frozen = False
        queue.released.set()
        await container.close()
