"""Priorities end to end in one process: a worker kept busy by a flood of low-priority
jobs starts the high-priority ones enqueued after the flood before any more of the flood.
Once on the in-memory backend, once on Postgres and Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from taskforge.adapters.memory.rate_limiter import InMemoryRateLimiter
from taskforge.adapters.memory.ready_queue import InMemoryReadyQueue
from taskforge.adapters.memory.state import InMemoryState
from taskforge.adapters.postgres import create_pool
from taskforge.adapters.system import SystemClock, Uuid7Source
from taskforge.application.enqueue import EnqueueJobs
from taskforge.application.handlers import HandlerRegistry, JobContext
from taskforge.application.hints import HintDispatcher
from taskforge.application.metrics import JobMetricsRecorder
from taskforge.application.ports import ReadyQueue
from taskforge.application.worker import Worker, WorkerSettings
from taskforge.domain.new_job import NewJob
from tests.job_stores import InMemoryJobs, JobRoles, PostgresJobs

FLOOD = 30
URGENT = 5
CONCURRENCY = 2
DEADLINE = 20.0

_ids = Uuid7Source()


@dataclass
class Backend:
    jobs: JobRoles
    ready_queue: ReadyQueue


@pytest.fixture(params=["memory", pytest.param("postgres+redis", marks=pytest.mark.integration)])
def services(request: pytest.FixtureRequest) -> tuple[str, ReadyQueue] | None:
    """None for the in-memory backend, else the migrated database and a Redis ready queue.
    Resolved here, outside the event loop, because their fixtures run their own."""
    if request.param == "memory":
        return None
    dsn: str = request.getfixturevalue("migrated_dsn")
    ready_queue: ReadyQueue = request.getfixturevalue("redis_ready_queue")
    return dsn, ready_queue


@pytest.fixture
async def backend(services: tuple[str, ReadyQueue] | None) -> AsyncIterator[Backend]:
    if services is None:
        yield Backend(InMemoryJobs(InMemoryState(SystemClock(), _ids)), InMemoryReadyQueue())
        return
    dsn, ready_queue = services
    pool = await create_pool(dsn, min_size=2, max_size=6)
    try:
        async with pool.acquire() as conn:
            await conn.execute("TRUNCATE jobs, dead_letters, queues")
        yield Backend(PostgresJobs(pool), ready_queue)
    finally:
        await pool.close()


async def until(condition: object, what: str) -> None:
    """Poll `condition()` (a callable) until true; fail after DEADLINE seconds."""
    assert callable(condition)
    give_up = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < give_up, f"{what} not reached in {DEADLINE}s"
        await asyncio.sleep(0.01)


async def test_high_priority_jobs_start_before_the_rest_of_a_low_priority_flood(
    backend: Backend, queue_name: str
) -> None:
    started: list[int] = []
    gate = asyncio.Event()
    handlers = HandlerRegistry()

    @handlers.handler("work")
    async def work(ctx: JobContext) -> None:
        started.append(ctx.payload["priority"])
        await gate.wait()

    hints = HintDispatcher(backend.ready_queue)
    enqueue = EnqueueJobs(backend.jobs, hints)
    worker = Worker(
        leases=backend.jobs,
        ready_queue=backend.ready_queue,
        hints=hints,
        rate_limiter=InMemoryRateLimiter(),
        handlers=handlers,
        metrics=JobMetricsRecorder(),
        clock=SystemClock(),
        random=lambda: 0.5,
        settings=WorkerSettings(
            queues=(queue_name,), concurrency=CONCURRENCY, owner="busy", poll_timeout=0.1
        ),
    )

    def jobs_at(priority: int, count: int) -> list[NewJob]:
        return [
            NewJob(
                id=_ids.new_id(),
                queue=queue_name,
                job_type="work",
                payload={"priority": priority},
                priority=priority,
            )
            for _ in range(count)
        ]

    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await enqueue(jobs_at(9, FLOOD))
        await until(lambda: len(started) == CONCURRENCY, "a busy worker")
        await enqueue(jobs_at(0, URGENT))
        await hints.drain()  # the urgent jobs' hints wait in the ready queue

        gate.set()
        await until(lambda: len(started) == FLOOD + URGENT, "every job started")
    finally:
        stop.set()
        await running

    assert started[:CONCURRENCY] == [9] * CONCURRENCY
    assert started[CONCURRENCY : CONCURRENCY + URGENT] == [0] * URGENT
    assert started[CONCURRENCY + URGENT :] == [9] * (FLOOD - CONCURRENCY)
