"""Every route answers within REQUEST_DEADLINE, whatever a dependency does: a frozen Redis
(a ready queue whose calls never return) or a store that hangs. In memory, with the frozen
parts injected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence

import httpx
import pytest
from dishka import Provider, Scope, provide

from taskforge.adapters.memory.ready_queue import InMemoryReadyQueue
from taskforge.application.handlers import HandlerRegistry
from taskforge.application.ports import ReadyQueue
from taskforge.domain.job import ReadyHint
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.container import Backend, make_container
from taskforge.entrypoints.http.app import create_app
from tests.integration.http.conftest import BASE_URL, assert_error

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


class FrozenQueueProvider(Provider):
    scope = Scope.APP

    @provide(override=True, provides=ReadyQueue)
    def ready_queue(self) -> FrozenReadyQueue:
        return FrozenReadyQueue()


async def answer(request: Awaitable[httpx.Response]) -> httpx.Response:
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


async def test_a_route_that_finishes_in_time_is_unaffected(
    app_and_queue: tuple[httpx.AsyncClient, FrozenReadyQueue],
) -> None:
    client, _ = app_and_queue
    assert (await client.get("/stats")).status_code == 200


async def test_metrics_with_redis_frozen_is_503_within_the_deadline(
    app_and_queue: tuple[httpx.AsyncClient, FrozenReadyQueue],
) -> None:
    client, queue = app_and_queue
    queue.frozen = True

    responses = await asyncio.gather(*(answer(client.get("/metrics")) for _ in range(3)))

    for response in responses:
        assert_error(response, 503, "not_ready")
