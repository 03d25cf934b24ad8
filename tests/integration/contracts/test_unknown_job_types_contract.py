"""Contract: a worker with no handler for a job's type, on every job store and worker
registry. It hands the job back without using an attempt, reports itself to the registry,
and dead-letters the job only once no live worker serving its queue has had a handler for
UNKNOWN_TYPE_GRACE seconds (by the worker's injected clock)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from taskforge.adapters.memory.rate_limiter import InMemoryRateLimiter
from taskforge.adapters.memory.ready_queue import InMemoryReadyQueue
from taskforge.application.handlers import HandlerRegistry
from taskforge.application.hints import HintDispatcher
from taskforge.application.metrics import JobMetricsRecorder
from taskforge.application.ports import WorkerRegistry
from taskforge.application.scheduler import SchedulerSettings, SchedulerTick, run_scheduler
from taskforge.application.worker import Worker, WorkerSettings
from taskforge.domain.job import Job, ReadyHint
from taskforge.domain.new_job import NewJob
from taskforge.domain.states import JobState
from tests.clock import ManualClock
from tests.job_stores import JobRoles

JobFactory = Callable[..., NewJob]
DEADLINE = 10.0
GRACE = 300.0


@dataclass
class PreviousRelease:
    """A worker without the job's handler, and a scheduler that publishes what it hands back."""

    jobs: JobRoles
    ready_queue: InMemoryReadyQueue
    clock: ManualClock

    async def job_until(self, job: Job, holds: Callable[[Job], bool]) -> Job:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            stored = await self.jobs.get(job.id)
            if stored is not None and holds(stored):
                return stored
            await asyncio.sleep(0.01)
        raise AssertionError(f"job {job.id} never got there: {await self.jobs.get(job.id)}")


@pytest.fixture
async def previous_release(
    jobs: JobRoles, worker_registry: WorkerRegistry, queue_name: str
) -> AsyncIterator[PreviousRelease]:
    clock = ManualClock(datetime.now(UTC))
    ready_queue = InMemoryReadyQueue()
    hints = HintDispatcher(ready_queue)
    handlers = HandlerRegistry()
    handlers.register("email", lambda ctx: None)
    worker = Worker(
        leases=jobs,
        ready_queue=ready_queue,
        hints=hints,
        rate_limiter=InMemoryRateLimiter(),
        handlers=handlers,
        metrics=JobMetricsRecorder(),
        clock=clock,
        random=lambda: 0.5,
        settings=WorkerSettings(
            queues=(queue_name,),
            concurrency=2,
            owner="previous-release",
            poll_timeout=0.05,
            heartbeat_tick=0.02,
            unknown_type_grace=GRACE,
            unknown_type_delay=0,
        ),
        workers=worker_registry,
    )
    scheduling = SchedulerSettings(batch_size=100, tick_interval=0.02, republish_after=5.0)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(worker.run(stop)),
        asyncio.create_task(
            run_scheduler(SchedulerTick(jobs, ready_queue, hints, scheduling), scheduling, stop)
        ),
    ]
    try:
        yield PreviousRelease(jobs, ready_queue, clock)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE)


async def test_a_job_of_an_unknown_type_is_handed_back_until_the_grace_ends(
    previous_release: PreviousRelease,
    worker_registry: WorkerRegistry,
    new_job: JobFactory,
    queue_name: str,
) -> None:
    cluster = previous_release
    job = (await cluster.jobs.add(new_job(job_type="report-v2"))).job
    await cluster.ready_queue.push([ReadyHint(queue_name, job.id)])

    back = await cluster.job_until(job, lambda job: job.hand_backs >= 2)
    assert back.state is not JobState.DLQ
    assert back.unknown_type_since is not None
    [worker] = await worker_registry.list_live(now=cluster.clock.now())
    assert (worker.worker_id, worker.job_types) == ("previous-release", ("email",))

    cluster.clock.advance(GRACE)
    dead = await cluster.job_until(job, lambda job: job.state is JobState.DLQ)

    assert dead.reason == "unknown job type"
    assert dead.attempt_count == 1
    assert dead.hand_backs >= 2
