"""The worker against the in-memory adapters on the real clock, with short timings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

import taskforge
from taskforge.adapters.memory.dead_letter_store import InMemoryDeadLetterStore
from taskforge.adapters.memory.rate_limiter import InMemoryRateLimiter
from taskforge.adapters.memory.ready_queue import InMemoryReadyQueue
from taskforge.adapters.memory.state import InMemoryState
from taskforge.adapters.memory.worker_registry import InMemoryWorkerRegistry
from taskforge.adapters.system import SystemClock, Uuid7Source
from taskforge.application.enqueue import EnqueueJob
from taskforge.application.handlers import HandlerRegistry, JobContext, Snooze, TerminalError
from taskforge.application.hints import HintDispatcher
from taskforge.application.metrics import UNREGISTERED_JOB_TYPE
from taskforge.application.ports import (
    Clock,
    JobTracer,
    LeaseStore,
    RateGrant,
    RateLimiter,
    WorkerRegistry,
)
from taskforge.application.scheduler import SchedulerSettings, SchedulerTick, run_scheduler
from taskforge.application.worker import (
    RUN_SPAN,
    TooManyAbandonedThreads,
    Worker,
    WorkerSettings,
    _Settler,
)
from taskforge.domain.errors import Unavailable
from taskforge.domain.job import Job, Lease, ReadyHint
from taskforge.domain.new_job import NewJob
from taskforge.domain.outcome import WORKER_ERROR_REASON, Settlement, Succeeded
from taskforge.domain.policy import RetryPolicy
from taskforge.domain.result import RESULT_REFUSED_REASON, UnstorableResult
from taskforge.domain.states import JobState
from taskforge.domain.workers import WorkerStatus
from tests.clock import ManualClock
from tests.job_stores import InMemoryJobs

from .conftest import OUT_OF_MEMORY, FreezableReadyQueue, RecordingTracer

pytestmark = pytest.mark.asyncio

DEADLINE = 10.0


@dataclass
class RecordingMetrics:
    counts: Counter[str] = field(default_factory=Counter)
    peak_busy: int = 0
    job_types: Counter[str] = field(default_factory=Counter)

    def job_started(self, queue: str, job_type: str, time_in_queue: float) -> None:
        self.counts["started"] += 1
        self.job_types[job_type] += 1

    def job_finished(self, queue: str, job_type: str, runtime: float, succeeded: bool) -> None:
        self.counts["succeeded" if succeeded else "failed"] += 1
        self.job_types[job_type] += 1

    def job_snoozed(self, queue: str, job_type: str, runtime: float) -> None:
        self.counts["snoozed"] += 1
        self.job_types[job_type] += 1

    def job_interrupted(self, queue: str) -> None:
        self.counts["interrupted"] += 1

    def concurrency_throttled(self, queue: str) -> None:
        self.counts["concurrency_throttled"] += 1

    def rate_throttled(self, queue: str, count: int) -> None:
        self.counts["rate_throttled"] += count

    def utilization(self, queue: str, busy: int, slots: int) -> None:
        self.peak_busy = max(self.peak_busy, busy)

    def lease_lost(self, queue: str) -> None:
        self.counts["lease_lost"] += 1


@dataclass
class Cluster:
    """One in-memory store, a worker and optionally a scheduler, on the real clock."""

    state: InMemoryState
    jobs: InMemoryJobs
    dead_letters: InMemoryDeadLetterStore
    ready_queue: InMemoryReadyQueue
    hints: HintDispatcher
    handlers: HandlerRegistry
    metrics: RecordingMetrics
    ids: Uuid7Source
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start_worker(
        self,
        tracer: JobTracer | None = None,
        *,
        clock: Clock | None = None,
        workers: WorkerRegistry | None = None,
        leases: LeaseStore | None = None,
        rate_limiter: RateLimiter | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        **overrides: Any,
    ) -> Worker:
        settings = WorkerSettings(
            **{
                "queues": ("jobs:ready",),
                "concurrency": 4,
                "owner": "test-worker",
                "poll_timeout": 0.05,
                "heartbeat_tick": 0.02,
                **overrides,
            }
        )
        worker = Worker(
            leases=leases or self.jobs,
            ready_queue=self.ready_queue,
            hints=self.hints,
            rate_limiter=rate_limiter or InMemoryRateLimiter(),
            handlers=self.handlers,
            metrics=self.metrics,
            clock=clock or SystemClock(),
            random=lambda: 0.5,
            settings=settings,
            tracer=tracer,
            workers=workers,
            monotonic=monotonic,
        )
        self.tasks.append(asyncio.create_task(worker.run(self.stop)))
        return worker

    def start_scheduler(self) -> None:
        settings = SchedulerSettings(batch_size=100, tick_interval=0.02, republish_after=5.0)
        tick = SchedulerTick(self.jobs, self.ready_queue, self.hints, settings)
        self.tasks.append(asyncio.create_task(run_scheduler(tick, settings, self.stop)))

    async def enqueue(self, job_type: str, **fields: Any) -> Job:
        new = NewJob(id=self.ids.new_id(), queue="jobs:ready", job_type=job_type, **fields)
        return (await EnqueueJob(self.jobs, self.hints)(new)).job

    async def wait_for(self, job_id: UUID, *states: JobState) -> Job:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            job = await self.jobs.get(job_id)
            if job is not None and job.state in states:
                return job
            await asyncio.sleep(0.01)
        raise AssertionError(f"job {job_id} never reached {states}: {await self.jobs.get(job_id)}")

    async def wait_until(self, job_id: UUID, holds: Callable[[Job], bool]) -> Job:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            job = await self.jobs.get(job_id)
            if job is not None and holds(job):
                return job
            await asyncio.sleep(0.01)
        raise AssertionError(f"job {job_id} never got there: {await self.jobs.get(job_id)}")

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), DEADLINE)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    ids = Uuid7Source()
    state = InMemoryState(SystemClock(), ids)
    ready_queue = InMemoryReadyQueue()
    cluster = Cluster(
        state=state,
        jobs=InMemoryJobs(state),
        dead_letters=InMemoryDeadLetterStore(state),
        ready_queue=ready_queue,
        hints=HintDispatcher(ready_queue),
        handlers=HandlerRegistry(),
        metrics=RecordingMetrics(),
        ids=ids,
    )
    yield cluster
    if not cluster.stop.is_set():
        await cluster.shutdown()


def handler(cluster: Cluster, job_type: str) -> Callable[[Callable[[JobContext], Any]], Any]:
    return cluster.handlers.handler(job_type)


FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.05, backoff=2.0, max_delay=1.0)


async def test_a_job_runs_once_and_succeeds(cluster: Cluster) -> None:
    seen: list[dict[str, Any]] = []

    @handler(cluster, "email")
    async def email(ctx: JobContext) -> None:
        seen.append(ctx.payload)

    cluster.start_worker()
    job = await cluster.enqueue("email", payload={"to": "a@b.com"})

    done = await cluster.wait_for(job.id, JobState.SUCCEEDED)

    assert seen == [{"to": "a@b.com"}]
    assert done.attempt_count == 1
    assert done.finished_at is not None
    # the worker reports the outcome just after settling it
    await eventually(lambda: _holds(cluster.metrics.counts["succeeded"] >= 1), "the success report")
    assert cluster.metrics.counts["succeeded"] == 1


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_a_handlers_return_value_is_kept_as_the_jobs_result(
    cluster: Cluster, sync: bool
) -> None:
    value = {"sent": True, "ids": (1, 2), "name": "Zoë", "ratio": 0.5, "none": None}

    if sync:

        @handler(cluster, "report")
        def report_sync(ctx: JobContext) -> dict[str, Any]:
            return value

    else:

        @handler(cluster, "report")
        async def report(ctx: JobContext) -> dict[str, Any]:
            return value

    cluster.start_worker()
    job = await cluster.enqueue("report")

    done = await cluster.wait_for(job.id, JobState.SUCCEEDED)

    # Stored as JSON reads it back: the tuple is a list.
    assert done.result == {"sent": True, "ids": [1, 2], "name": "Zoë", "ratio": 0.5, "none": None}


async def test_a_handler_returning_none_leaves_no_result(cluster: Cluster) -> None:
    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        return None

    cluster.start_worker()
    job = await cluster.enqueue("noop")

    done = await cluster.wait_for(job.id, JobState.SUCCEEDED)

    assert done.result is None


class NotJson:
    pass


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"tags": {"a"}}, "result refused: not JSON: set at $.tags"),
        ([b"raw"], "result refused: not JSON: bytes at $[0]"),
        ({"ratio": float("nan")}, "result refused: not JSON: nan at $.ratio"),
        (NotJson(), "result refused: not JSON: NotJson at $"),
        ({1: "one"}, "result refused: not JSON: a key of type int at $ (keys are strings)"),
        (
            {"text": "a\x00b"},
            "result refused: a NUL character (\\u0000) at $.text cannot be stored",
        ),
    ],
    ids=["set", "bytes", "nan", "object", "int-key", "nul"],
)
async def test_a_result_that_is_not_json_dead_letters_the_job_at_once(
    cluster: Cluster, value: object, error: str
) -> None:
    @handler(cluster, "odd")
    async def odd(ctx: JobContext) -> object:
        return value

    cluster.start_worker()
    job = await cluster.enqueue("odd", policy=FAST_RETRY)

    dead = await cluster.wait_for(job.id, JobState.DLQ)

    assert (dead.attempt_count, dead.reason, dead.last_error) == (1, RESULT_REFUSED_REASON, error)
    assert dead.result is None
    entry = await cluster.dead_letters.get(job.id)
    assert entry is not None
    assert (entry.reason, entry.last_error) == (RESULT_REFUSED_REASON, error)


class Opaque:
    """Has no JSON form."""


@dataclass
class Receipt:
    number: int
    detail: object


async def test_a_typed_task_returning_fields_that_are_not_json_dead_letters_the_job_at_once(
    cluster: Cluster,
) -> None:
    @taskforge.task("receipt", registry=cluster.handlers)
    async def receipt(ctx: JobContext) -> Receipt:
        return Receipt(number=1, detail=Opaque())

    cluster.start_worker()
    job = await cluster.enqueue("receipt", policy=FAST_RETRY)

    dead = await cluster.wait_for(job.id, JobState.DLQ)

    error = "result refused: not JSON: Opaque at $.detail"
    assert (dead.attempt_count, dead.reason, dead.last_error) == (1, RESULT_REFUSED_REASON, error)
    assert dead.result is None


async def test_a_typed_task_returning_a_list_of_records_succeeds_with_their_fields(
    cluster: Cluster,
) -> None:
    @taskforge.task("receipts", registry=cluster.handlers)
    async def receipts(ctx: JobContext) -> list[Receipt]:
        return [Receipt(number=1, detail="a"), Receipt(number=2, detail=["b"])]

    cluster.start_worker()
    job = await cluster.enqueue("receipts", policy=FAST_RETRY)

    done = await cluster.wait_for(job.id, JobState.SUCCEEDED)

    assert done.result == [{"number": 1, "detail": "a"}, {"number": 2, "detail": ["b"]}]


async def test_a_result_larger_than_max_result_bytes_dead_letters_the_job(
    cluster: Cluster,
) -> None:
    @handler(cluster, "big")
    async def big(ctx: JobContext) -> dict[str, str]:
        return {"text": "x" * 90}  # 101 bytes as JSON

    @handler(cluster, "fits")
    async def fits(ctx: JobContext) -> dict[str, str]:
        return {"text": "x" * 89}  # 100 bytes as JSON: exactly the limit

    cluster.start_worker(max_result_bytes=100)
    too_big = await cluster.enqueue("big", policy=FAST_RETRY)
    just_right = await cluster.enqueue("fits")

    dead = await cluster.wait_for(too_big.id, JobState.DLQ)
    done = await cluster.wait_for(just_right.id, JobState.SUCCEEDED)

    assert (dead.attempt_count, dead.reason, dead.result) == (1, RESULT_REFUSED_REASON, None)
    assert dead.last_error == (
        "result refused: too large: 101 bytes as JSON, over 100 bytes (MAX_RESULT_BYTES)"
    )
    assert done.result == {"text": "x" * 89}


async def test_failing_job_retries_then_lands_in_dlq(cluster: Cluster) -> None:
    attempts: list[int] = []

    @handler(cluster, "fail")
    async def fail(ctx: JobContext) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError(f"attempt {ctx.attempt} failed")

    cluster.start_worker()
    cluster.start_scheduler()
    job = await cluster.enqueue("fail", policy=FAST_RETRY)

    dead = await cluster.wait_for(job.id, JobState.DLQ)

    assert attempts == [1, 2, 3]
    assert (dead.attempt_count, dead.retry_count) == (3, 2)
    assert dead.last_error == "RuntimeError: attempt 3 failed"
    entry = await cluster.dead_letters.get(job.id)
    assert entry is not None
    assert entry.reason == "attempts exhausted"
    assert entry.attempts == 3


async def test_terminal_error_goes_to_dlq_without_retrying(cluster: Cluster) -> None:
    @handler(cluster, "bad")
    async def bad(ctx: JobContext) -> None:
        raise TerminalError("payload can never work")

    cluster.start_worker()
    job = await cluster.enqueue("bad", policy=FAST_RETRY)

    dead = await cluster.wait_for(job.id, JobState.DLQ)

    assert dead.attempt_count == 1
    assert dead.reason == "terminal error"
    assert dead.last_error == "TerminalError: payload can never work"


async def test_without_a_grace_an_unknown_job_type_is_dead_lettered_at_once(
    cluster: Cluster,
) -> None:
    cluster.start_worker(unknown_type_grace=0)
    job = await cluster.enqueue("nobody-handles-this", policy=FAST_RETRY)

    dead = await cluster.wait_for(job.id, JobState.DLQ)

    assert dead.attempt_count == 1
    assert dead.reason == "unknown job type"
    assert dead.last_error is not None
    assert "nobody-handles-this" in dead.last_error


async def test_sync_handler_runs_in_a_thread(cluster: Cluster) -> None:
    threads: list[int] = []

    @handler(cluster, "sync")
    def sync(ctx: JobContext) -> None:
        threads.append(threading.get_ident())

    cluster.start_worker()
    job = await cluster.enqueue("sync")

    await cluster.wait_for(job.id, JobState.SUCCEEDED)

    assert threads
    assert threads[0] != threading.get_ident()


async def test_cancelled_running_job_is_interrupted_at_its_next_heartbeat(cluster: Cluster) -> None:
    started = asyncio.Event()
    interrupted = asyncio.Event()

    @handler(cluster, "sleep")
    async def sleep(ctx: JobContext) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    cluster.start_worker()
    job = await cluster.enqueue("sleep", visibility_timeout=1.0)
    await asyncio.wait_for(started.wait(), DEADLINE)
    began = time.monotonic()

    await cluster.jobs.cancel(job.id, "user requested")
    await asyncio.wait_for(interrupted.wait(), DEADLINE)

    assert time.monotonic() - began < 1.0  # one heartbeat is visibilityTimeout/3
    assert cluster.metrics.counts["lease_lost"] == 1
    await asyncio.sleep(0.1)  # a late settle would land now; it must not
    final = await cluster.jobs.get(job.id)
    assert final is not None
    assert final.state is JobState.CANCELLED


async def test_heartbeats_keep_a_long_job_leased(cluster: Cluster) -> None:
    @handler(cluster, "slow")
    async def slow(ctx: JobContext) -> None:
        await asyncio.sleep(2.5)  # 2.5 x the visibility timeout

    cluster.start_worker()
    job = await cluster.enqueue("slow", visibility_timeout=1.0)

    done = await cluster.wait_for(job.id, JobState.SUCCEEDED)

    assert done.attempt_count == 1
    assert cluster.metrics.counts["lease_lost"] == 0


async def test_without_heartbeats_a_job_may_run_at_most_its_visibility_timeout(
    cluster: Cluster,
) -> None:
    @handler(cluster, "slow")
    async def slow(ctx: JobContext) -> None:
        await asyncio.sleep(30)

    cluster.start_worker(heartbeat=False)
    job = await cluster.enqueue("slow", visibility_timeout=1.0, policy=FAST_RETRY)

    failed = await cluster.wait_for(job.id, JobState.FAILED)

    assert failed.last_error is not None
    assert "timed out" in failed.last_error


async def test_without_heartbeats_a_late_claim_leaves_the_handler_what_is_left_of_its_lease(
    cluster: Cluster,
) -> None:
    """The lease runs from when the claim was sent: a handler that started the full
    visibility timeout after a late answer would still run when the scheduler reaps the job
    and another worker starts it."""
    stopped_after: list[float] = []

    @handler(cluster, "slow")
    async def slow(ctx: JobContext) -> None:
        started = time.monotonic()
        try:
            await asyncio.sleep(30)
        finally:
            stopped_after.append(time.monotonic() - started)

    class SlowClaims(InMemoryJobs):
        async def claim(self, job_ids: Sequence[UUID], owner: str) -> list[Job]:
            claimed = await super().claim(job_ids, owner)
            await asyncio.sleep(0.5)  # the answer comes back late
            return claimed

    cluster.start_worker(leases=SlowClaims(cluster.state), heartbeat=False)
    job = await cluster.enqueue("slow", visibility_timeout=1.0, policy=FAST_RETRY)

    failed = await cluster.wait_for(job.id, JobState.FAILED)

    assert failed.last_error == "timed out after 1s (visibility timeout)"
    assert len(stopped_after) == 1
    assert stopped_after[0] < 0.8  # about 0.5 s: what was left of the lease


async def test_a_job_retried_while_its_cancelled_attempt_runs_here_stops_that_attempt(
    cluster: Cluster,
) -> None:
    """Cancel, then retry now, while the handler still runs: this worker claims the new
    attempt before its next heartbeat would find the old lease gone. The old attempt stops
    at once and the new one keeps its lease (renewed: it runs longer than the visibility
    timeout) until it succeeds; it is neither run a third time nor dead-lettered."""
    runs: list[str] = []
    started = asyncio.Event()

    @handler(cluster, "work")
    async def work(ctx: JobContext) -> None:
        run = f"run {sum(entry.endswith('started') for entry in runs) + 1}"
        runs.append(f"{run} started")
        started.set()
        try:
            await asyncio.sleep(30 if run == "run 1" else 1.5)
        except asyncio.CancelledError:
            runs.append(f"{run} interrupted")
            raise
        runs.append(f"{run} finished")

    cluster.start_worker(concurrency=2)
    job = await cluster.enqueue("work", visibility_timeout=1.2, policy=FAST_RETRY)
    await asyncio.wait_for(started.wait(), DEADLINE)

    await cluster.jobs.cancel(job.id, "operator")
    cluster.hints.send([await cluster.jobs.retry_now(job.id)])  # as POST /jobs/{id}/retry
    done = await cluster.wait_for(job.id, JobState.SUCCEEDED, JobState.FAILED, JobState.DLQ)

    assert done.state is JobState.SUCCEEDED
    assert sorted(runs) == ["run 1 interrupted", "run 1 started", "run 2 finished", "run 2 started"]
    assert runs.index("run 1 interrupted") < runs.index("run 2 finished")
    assert cluster.metrics.counts["lease_lost"] == 1


async def test_hints_whose_claim_failed_go_back_and_their_job_runs_without_the_scheduler(
    cluster: Cluster,
) -> None:
    """No scheduler runs here: only the hint put back can bring the job to a worker."""
    ran = asyncio.Event()

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        ran.set()

    class OneFailedClaim(InMemoryJobs):
        failed = False

        async def claim(self, job_ids: Sequence[UUID], owner: str) -> list[Job]:
            if not self.failed:
                self.failed = True
                raise Unavailable("postgres", "a blip")
            return await super().claim(job_ids, owner)

    leases = OneFailedClaim(cluster.state)
    cluster.start_worker(leases=leases)
    job = await cluster.enqueue("noop")

    await asyncio.wait_for(ran.wait(), 5.0)

    assert leases.failed
    assert (await cluster.wait_for(job.id, JobState.SUCCEEDED)).attempt_count == 1


async def test_two_attempts_of_one_job_are_settled_in_separate_writes() -> None:
    """The store answers a write of settlements with the ids it applied: two attempts of
    one job in one write (an earlier one fenced off) could not be told apart, so the later
    one waits for the next write, and each gets its own answer."""
    state = InMemoryState(SystemClock(), Uuid7Source())
    writes: list[list[Lease]] = []

    class RecordingStore(InMemoryJobs):
        async def settle(self, settlements: Sequence[Settlement]) -> set[UUID]:
            writes.append([settlement.lease for settlement in settlements])
            return {lease.job_id for lease in writes[-1] if lease != fenced}

    job_id, other_id = uuid4(), uuid4()
    fenced, current = Lease(job_id=job_id, token=uuid4()), Lease(job_id=job_id, token=uuid4())
    other = Lease(job_id=other_id, token=uuid4())
    settler = _Settler(
        RecordingStore(state), WorkerSettings(queues=("q",), concurrency=1, owner="w")
    )
    running = asyncio.create_task(settler.run())
    try:
        answers = await asyncio.gather(
            *(settler.submit(Succeeded(lease=lease)) for lease in (fenced, other, current))
        )
    finally:
        settler.close()
        await running

    assert answers == [False, True, True]
    assert writes == [[fenced, other], [current]]


@pytest.mark.parametrize("heartbeat", [True, False])
async def test_a_worker_beats_only_with_heartbeats_on(cluster: Cluster, heartbeat: bool) -> None:
    cluster.start_worker(heartbeat=heartbeat)
    await asyncio.sleep(0.05)

    names = {task.get_name() for task in asyncio.all_tasks()}

    assert ("taskforge-heartbeat" in names) is heartbeat
    assert "taskforge-settler" in names


async def test_concurrency_limits_how_many_jobs_run_at_once(cluster: Cluster) -> None:
    running = 0
    peak = 0

    @handler(cluster, "busy")
    async def busy(ctx: JobContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    cluster.start_worker(concurrency=2)
    jobs = [await cluster.enqueue("busy") for _ in range(6)]

    for job in jobs:
        await cluster.wait_for(job.id, JobState.SUCCEEDED)

    assert peak == 2
    assert cluster.metrics.counts["concurrency_throttled"] > 0


async def test_rate_limit_spaces_out_job_starts(cluster: Cluster) -> None:
    starts: list[float] = []

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        starts.append(time.monotonic())

    cluster.start_worker(concurrency=10, rate_limit_per_sec=5.0)
    jobs = [await cluster.enqueue("noop") for _ in range(10)]

    for job in jobs:
        await cluster.wait_for(job.id, JobState.SUCCEEDED)

    # A bucket of 5 permits refilling at 5/s: at most 5 + 5 starts in any one second.
    for first in starts:
        assert sum(1 for t in starts if first <= t < first + 1.0) <= 10
    assert starts[-1] - starts[0] >= 0.8  # the second five had to wait for permits
    assert cluster.metrics.counts["rate_throttled"] >= 5


async def test_shutdown_lets_short_jobs_finish(cluster: Cluster) -> None:
    started = asyncio.Event()

    @handler(cluster, "short")
    async def short(ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(0.2)

    cluster.start_worker(shutdown_grace=5.0)
    job = await cluster.enqueue("short")
    await asyncio.wait_for(started.wait(), DEADLINE)

    await cluster.shutdown()

    final = await cluster.jobs.get(job.id)
    assert final is not None
    assert final.state is JobState.SUCCEEDED


async def test_shutdown_hands_back_jobs_that_outlive_the_grace_period(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()

    @handler(cluster, "long")
    async def long(ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(30)

    cluster.start_worker(shutdown_grace=0.1)
    job = await cluster.enqueue("long")
    await asyncio.wait_for(started.wait(), DEADLINE)
    began = time.monotonic()

    with caplog.at_level(logging.INFO, logger="taskforge.worker"):
        await cluster.shutdown()

    assert "stopping: waiting up to 0.1s for 1 job(s)" in caplog.messages  # not "0s"

    assert time.monotonic() - began < 2.0
    final = await cluster.jobs.get(job.id)
    assert final is not None
    assert final.state is JobState.PENDING
    assert final.attempt_count == 0  # the interrupted attempt does not count
    hints = await cluster.ready_queue.pop(["jobs:ready"], 10, 0)
    assert [hint.job_id for hint in hints] == [job.id]


def blocking_handler(cluster: Cluster, job_type: str) -> asyncio.Event:
    """Registers a handler of `job_type` that sets the event returned, then waits until it
    is cancelled."""
    started = asyncio.Event()

    @handler(cluster, job_type)
    async def block(ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(30)

    return started


async def test_an_attempt_stopped_at_shutdown_counts_as_interrupted(cluster: Cluster) -> None:
    started = blocking_handler(cluster, "long")
    cluster.start_worker(shutdown_grace=0.1)
    await cluster.enqueue("long")
    await asyncio.wait_for(started.wait(), DEADLINE)

    await cluster.shutdown()

    assert cluster.metrics.counts == Counter(started=1, interrupted=1)


async def test_an_attempt_stopped_on_its_lost_lease_counts_as_interrupted(
    cluster: Cluster,
) -> None:
    started = blocking_handler(cluster, "sleep")
    cluster.start_worker()
    job = await cluster.enqueue("sleep", visibility_timeout=1.0)
    await asyncio.wait_for(started.wait(), DEADLINE)

    await cluster.jobs.cancel(job.id, "user requested")

    await eventually(lambda: _holds(cluster.metrics.counts["interrupted"] == 1), "the interrupt")
    assert cluster.metrics.counts == Counter(started=1, lease_lost=1, interrupted=1)


async def test_shutdown_with_a_frozen_ready_queue_hands_back_and_exits_within_the_grace(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    queue = freezable_ready_queue(cluster)
    started = asyncio.Event()

    @handler(cluster, "long")
    async def long(ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(30)

    cluster.start_worker(shutdown_grace=0.1, queue_grace=0.2)
    job = await cluster.enqueue("long")
    await cluster.hints.drain()
    await asyncio.wait_for(started.wait(), DEADLINE)
    queue.mode = "frozen"  # a SIGSTOPped Redis: no call returns
    began = time.monotonic()

    await cluster.shutdown()

    assert time.monotonic() - began < 2.0  # not held by the hint that cannot be sent
    final = await cluster.jobs.get(job.id)
    assert final is not None and final.state is JobState.PENDING  # the scheduler republishes it
    assert final.attempt_count == 0
    warned = "could not send the hints of 1 job(s) handed back, the scheduler will: no answer"
    assert any(record.getMessage().startswith(warned) for record in caplog.records)


async def test_shutdown_sends_no_hints_while_the_ready_queue_is_known_unreachable(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    queue = freezable_ready_queue(cluster)

    @handler(cluster, "long")
    async def long(ctx: JobContext) -> None:
        await asyncio.sleep(30)

    # A push would wait out the whole queue_grace; the queue is not tried again meanwhile.
    cluster.start_worker(shutdown_grace=0.1, queue_grace=5.0, queue_retry_interval=60.0)
    queue.mode = "down"
    job, _, _ = await cluster.jobs.add(
        NewJob(id=cluster.ids.new_id(), queue="jobs:ready", job_type="long")
    )
    await cluster.wait_for(job.id, JobState.RUNNING)  # claimed from the store: no hint
    queue.mode = "frozen"
    began = time.monotonic()

    await cluster.shutdown()

    assert time.monotonic() - began < 2.0
    final = await cluster.jobs.get(job.id)
    assert final is not None and final.state is JobState.PENDING  # the scheduler republishes it
    assert final.attempt_count == 0
    warned = "ready queue unreachable: not sending the hints of 1 job(s) handed back"
    assert any(record.getMessage().startswith(warned) for record in caplog.records)


async def test_shutdown_hands_back_the_job_of_a_handler_that_ignores_cancellation(
    cluster: Cluster,
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    @handler(cluster, "stubborn")
    async def stubborn(ctx: JobContext) -> str:
        started.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)  # every cancellation swallowed
        return "late"

    @handler(cluster, "long")
    async def long(ctx: JobContext) -> None:
        await asyncio.sleep(30)

    cluster.start_worker(shutdown_grace=0.1, interrupt_grace=0.2)
    stuck = await cluster.enqueue("stubborn")
    other = await cluster.enqueue("long")
    await cluster.wait_for(other.id, JobState.RUNNING)
    await asyncio.wait_for(started.wait(), DEADLINE)
    began = time.monotonic()

    try:
        await cluster.shutdown()

        assert time.monotonic() - began < 2.0
        for job in (stuck, other):
            final = await cluster.jobs.get(job.id)
            assert final is not None
            assert (final.state, final.attempt_count) == (JobState.PENDING, 0)
        hints = await cluster.ready_queue.pop(["jobs:ready"], 10, 0)
        assert {hint.job_id for hint in hints} == {stuck.id, other.id}
    finally:
        release.set()
    await asyncio.sleep(0.05)  # what the handler returns now is discarded
    final = await cluster.jobs.get(stuck.id)
    assert final is not None
    assert (final.state, final.result) == (JobState.PENDING, None)
    # Both attempts were stopped at shutdown, the late return included: neither failed.
    assert cluster.metrics.counts == Counter(started=2, interrupted=2)


async def test_a_job_handed_back_at_shutdown_is_hinted_at_its_priority(cluster: Cluster) -> None:
    started = asyncio.Event()

    @handler(cluster, "long")
    async def long(ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(30)

    cluster.start_worker(shutdown_grace=0.1)
    job = await cluster.enqueue("long", priority=2)
    await asyncio.wait_for(started.wait(), DEADLINE)

    await cluster.shutdown()

    hints = await cluster.ready_queue.pop(["jobs:ready"], 10, 0)
    assert [(hint.job_id, hint.priority) for hint in hints] == [(job.id, 2)]


async def test_hints_deferred_by_the_rate_limit_keep_their_priority(cluster: Cluster) -> None:
    starts: list[int] = []

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        starts.append(ctx.payload["priority"])

    priorities = (4, 0, 3, 4, 0, 3)
    jobs = [await cluster.enqueue("noop", priority=p, payload={"priority": p}) for p in priorities]
    await cluster.hints.drain()
    cluster.start_worker(concurrency=4, rate_limit_per_sec=2.0)

    for job in jobs:
        await cluster.wait_for(job.id, JobState.SUCCEEDED)

    # The first pop takes the 0s and 3s; two permits run the 0s and the 3s are put back,
    # still ahead of the 4s (put back at the default priority, 5, they would come last).
    assert starts == [0, 0, 3, 3, 4, 4]
    assert cluster.metrics.counts["rate_throttled"] >= 2


async def test_a_queue_waiting_for_rate_permits_does_not_hold_up_another_queue(
    cluster: Cluster,
) -> None:
    starts: dict[str, list[float]] = {"slow": [], "other": []}

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        starts[ctx.queue].append(time.monotonic())

    enqueue = EnqueueJob(cluster.jobs, cluster.hints)
    for _ in range(40):  # a backlog ahead of the other queue's job, in pop order too
        await enqueue(NewJob(id=cluster.ids.new_id(), queue="slow", job_type="noop"))
    other = await enqueue(NewJob(id=cluster.ids.new_id(), queue="other", job_type="noop"))
    await cluster.hints.drain()
    began = time.monotonic()
    cluster.start_worker(queues=("slow", "other"), concurrency=10, rate_limit_per_sec=2.0)

    await cluster.wait_for(other.job.id, JobState.SUCCEEDED)

    # The other queue's permits are its own: its job starts at once, not after the backlog
    # has trickled out at 2 jobs/s (20 s).
    assert starts["other"][0] - began < 1.5
    # and the backlog keeps to its rate meanwhile: a burst of 2, then 2 a second
    elapsed = time.monotonic() - began
    assert len(starts["slow"]) <= 2 + 2 * elapsed + 1


class RecordingRateLimiter(InMemoryRateLimiter):
    """An InMemoryRateLimiter that records each queue it is asked about, with the rate."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[tuple[str, float]] = set()

    async def acquire(self, queue: str, rate_per_sec: float, wanted: int) -> RateGrant:
        self.asked.add((queue, rate_per_sec))
        return await super().acquire(queue, rate_per_sec, wanted)


async def test_each_queue_a_worker_serves_takes_its_own_rate_and_one_without_is_not_limited(
    cluster: Cluster,
) -> None:
    starts: dict[str, list[float]] = {"sms": [], "mail": [], "internal": []}

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        starts[ctx.queue].append(time.monotonic())

    enqueue = EnqueueJob(cluster.jobs, cluster.hints)
    jobs = [
        (await enqueue(NewJob(id=cluster.ids.new_id(), queue=queue, job_type="noop"))).job
        for queue, count in (("sms", 6), ("mail", 30), ("internal", 30))
        for _ in range(count)
    ]
    await cluster.hints.drain()
    limiter = RecordingRateLimiter()
    cluster.start_worker(
        queues=("sms", "mail", "internal"),
        concurrency=100,
        rate_limiter=limiter,
        rate_limit_per_sec=2.0,  # sms: the rate of the queues not listed
        queue_rate_limits={"mail": 20.0, "internal": 0.0},
    )

    for job in jobs:
        await cluster.wait_for(job.id, JobState.SUCCEEDED)

    assert limiter.asked == {("sms", 2.0), ("mail", 20.0)}  # never about "internal"
    # sms: a burst of 2, then 2 a second; mail: a burst of 20, then 20 a second.
    assert starts["sms"][-1] - starts["sms"][0] >= 1.8
    assert 0.4 <= starts["mail"][-1] - starts["mail"][0] < 7  # 0.5 s; at sms's 2/s, 14 s
    assert cluster.metrics.counts["rate_throttled"] >= 4 + 10


async def test_a_queue_rate_of_zero_lifts_the_default_rate_limit(cluster: Cluster) -> None:
    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        return None

    limiter = RecordingRateLimiter()
    cluster.start_worker(
        concurrency=20,
        rate_limiter=limiter,
        rate_limit_per_sec=1.0,
        queue_rate_limits={"jobs:ready": 0.0},
    )
    began = time.monotonic()
    jobs = [await cluster.enqueue("noop") for _ in range(10)]

    for job in jobs:
        await cluster.wait_for(job.id, JobState.SUCCEEDED)

    assert time.monotonic() - began < 5  # at 1/s, 9 s
    assert limiter.asked == set()
    assert cluster.metrics.counts["rate_throttled"] == 0


async def test_a_job_is_picked_up_within_milliseconds_by_an_idle_worker(cluster: Cluster) -> None:
    started: list[float] = []

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        started.append(time.monotonic())

    cluster.start_worker(poll_timeout=5.0)
    await asyncio.sleep(0.05)  # let the worker block in its pop
    enqueued = time.monotonic()
    job = await cluster.enqueue("noop")

    await cluster.wait_for(job.id, JobState.SUCCEEDED)

    assert started[0] - enqueued < 0.5  # woken by the push, not by the 5 s poll timeout


async def test_metrics_name_job_types_without_a_handler_as_one_label(cluster: Cluster) -> None:
    @handler(cluster, "email")
    async def email(ctx: JobContext) -> None:
        return None

    cluster.start_worker(unknown_type_grace=0)
    known = await cluster.enqueue("email")
    invented = [await cluster.enqueue(f"invented-{n}", policy=FAST_RETRY) for n in range(3)]

    await cluster.wait_for(known.id, JobState.SUCCEEDED)
    for job in invented:
        await cluster.wait_for(job.id, JobState.DLQ)

    # job_started and job_finished: two reports per attempt; the last one follows the settle
    expected = {"email": 2, UNREGISTERED_JOB_TYPE: 6}
    await eventually(
        lambda: _holds(sum(cluster.metrics.job_types.values()) >= 8), "the attempts' reports"
    )
    assert cluster.metrics.job_types == expected


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_each_attempt_runs_in_a_span_that_continues_the_jobs_trace(cluster: Cluster) -> None:
    seen: list[str | None] = []

    @handler(cluster, "flaky")
    async def flaky(ctx: JobContext) -> None:
        seen.append(ctx.traceparent)
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")

    tracer = RecordingTracer()
    cluster.start_worker(tracer=tracer)
    cluster.start_scheduler()
    job = await cluster.enqueue("flaky", policy=FAST_RETRY, traceparent=TRACEPARENT)

    await cluster.wait_for(job.id, JobState.SUCCEEDED)

    first, second = tracer.spans
    assert [span.name for span in tracer.spans] == [RUN_SPAN, RUN_SPAN]
    assert [span.parent for span in tracer.spans] == [TRACEPARENT, TRACEPARENT]
    assert first.attributes == {
        "job_id": str(job.id),
        "queue": "jobs:ready",
        "job_type": "flaky",
        "attempt": 1,
        "outcome": "retry",
    }
    assert (second.attributes["attempt"], second.attributes["outcome"]) == (2, "succeeded")
    assert first.error == "RuntimeError: first attempt fails"
    assert second.error is None
    assert all(span.entered and span.ended for span in tracer.spans)
    # The handler sees its attempt's span, so what it calls joins the trace.
    assert seen == [first.traceparent, second.traceparent]


async def test_a_handler_sees_the_lease_token_of_its_own_attempt(cluster: Cluster) -> None:
    tokens: list[UUID | None] = []

    @handler(cluster, "fail_once")
    async def fail_once(ctx: JobContext) -> None:
        tokens.append(ctx.lease_token)
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")

    cluster.start_worker()
    cluster.start_scheduler()
    job = await cluster.enqueue("fail_once", policy=FAST_RETRY)

    await cluster.wait_for(job.id, JobState.SUCCEEDED)

    assert len(tokens) == 2
    assert None not in tokens
    assert tokens[0] != tokens[1]  # each attempt holds its own lease


async def test_a_handler_sees_when_its_job_was_enqueued(cluster: Cluster) -> None:
    seen: list[datetime | None] = []

    @handler(cluster, "aged")
    async def aged(ctx: JobContext) -> None:
        seen.append(ctx.created_at)
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")

    cluster.start_worker()
    cluster.start_scheduler()
    job = await cluster.enqueue("aged", policy=FAST_RETRY)

    await cluster.wait_for(job.id, JobState.SUCCEEDED)

    assert seen == [job.created_at, job.created_at]  # the enqueue's time, every attempt


async def test_a_timeout_the_handler_raises_is_an_ordinary_failure(cluster: Cluster) -> None:
    @handler(cluster, "flaky_http")
    async def flaky_http(ctx: JobContext) -> None:
        raise TimeoutError("upstream took too long")

    cluster.start_worker(heartbeat=False)
    job = await cluster.enqueue("flaky_http", visibility_timeout=30.0, policy=FAST_RETRY)

    failed = await cluster.wait_for(job.id, JobState.FAILED, JobState.DLQ)

    assert failed.last_error == "TimeoutError: upstream took too long"


async def test_a_nul_in_an_error_message_is_stored_escaped(cluster: Cluster) -> None:
    @handler(cluster, "nul")
    async def nul(ctx: JobContext) -> None:
        raise TerminalError("bad\x00byte")

    cluster.start_worker()
    job = await cluster.enqueue("nul")

    dead = await cluster.wait_for(job.id, JobState.DLQ)

    assert dead.last_error == "TerminalError: bad\\x00byte"


class TamperedStore(InMemoryJobs):
    """The in-memory store, but claimed jobs come out altered by `alter`, and settling any
    job of `refused` raises: what a store holding odd data (or a bug) could do."""

    def __init__(
        self,
        cluster: Cluster,
        alter: Callable[[Job], Job] = lambda job: job,
        refused: frozenset[UUID] = frozenset(),
    ) -> None:
        super().__init__(cluster.state)
        self.alter = alter
        self.refused = refused
        self.heartbeats: list[set[UUID]] = []

    async def claim(self, job_ids: Sequence[UUID], owner: str) -> list[Job]:
        return [self.alter(job) for job in await super().claim(job_ids, owner)]

    async def settle(self, settlements: Sequence[Settlement]) -> set[UUID]:
        if any(settlement.lease.job_id in self.refused for settlement in settlements):
            raise TypeError("cannot encode this job's settlement")
        return await super().settle(settlements)


async def _holds(value: bool) -> bool:
    return value


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {DEADLINE}s"
        await asyncio.sleep(0.01)


async def test_a_job_whose_run_at_came_back_as_minus_infinity_runs_and_frees_its_slot(
    cluster: Cluster,
) -> None:
    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        return None

    # asyncpg reads Postgres' -infinity back as a naive datetime.min: no instant at all.
    cluster.jobs = TamperedStore(cluster, alter=lambda job: replace(job, next_run_at=datetime.min))
    cluster.start_worker(concurrency=1)
    odd = await cluster.enqueue("noop")
    after = await cluster.enqueue("noop")

    await cluster.wait_for(odd.id, JobState.SUCCEEDED)
    await cluster.wait_for(after.id, JobState.SUCCEEDED)


class BrokenMetrics(RecordingMetrics):
    def job_started(self, queue: str, job_type: str, time_in_queue: float) -> None:
        if job_type == "cursed":
            raise RuntimeError("metrics broke")
        super().job_started(queue, job_type, time_in_queue)


async def test_a_failure_of_the_workers_own_bookkeeping_fails_the_attempt_and_frees_its_slot(
    cluster: Cluster,
) -> None:
    @handler(cluster, "cursed")
    async def cursed(ctx: JobContext) -> None:
        raise AssertionError("never reached: the worker fails before the handler runs")

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        return None

    cluster.metrics = BrokenMetrics()
    cluster.start_worker(concurrency=1)
    cursed_job = await cluster.enqueue("cursed", policy=FAST_RETRY)
    after = await cluster.enqueue("noop")

    failed = await cluster.wait_for(cursed_job.id, JobState.FAILED)
    await cluster.wait_for(after.id, JobState.SUCCEEDED)  # the one slot was given back

    assert failed.last_error == "RuntimeError: metrics broke"
    [error] = (await cluster.jobs.get(cursed_job.id) or failed).errors
    assert error.traceback is not None
    assert "job_started" in error.traceback


async def test_a_job_whose_failure_cannot_even_be_decided_is_dead_lettered(
    cluster: Cluster,
) -> None:
    @handler(cluster, "fail")
    async def fail(ctx: JobContext) -> None:
        raise RuntimeError("handler failed")

    # Attempt 0 does not exist: the backoff for it cannot be computed.
    cluster.jobs = TamperedStore(cluster, alter=lambda job: replace(job, attempt_count=0))
    cluster.start_worker(concurrency=1)
    job = await cluster.enqueue("fail", policy=FAST_RETRY)

    dead = await cluster.wait_for(job.id, JobState.DLQ)

    assert dead.reason == WORKER_ERROR_REASON
    assert dead.last_error is not None
    assert "attempt is 1-based" in dead.last_error


async def test_a_settlement_the_store_refuses_does_not_take_its_batch_with_it(
    cluster: Cluster,
) -> None:
    release = asyncio.Event()

    @handler(cluster, "together")
    async def together(ctx: JobContext) -> None:
        await release.wait()  # all three finish at once, so they settle in one batch

    jobs = [await cluster.enqueue("together", visibility_timeout=1.0) for _ in range(3)]
    refused = jobs[1].id
    cluster.jobs = TamperedStore(cluster, refused=frozenset({refused}))
    worker = cluster.start_worker(concurrency=3)
    await eventually(lambda: _is(worker.running == 3), "three jobs running")

    release.set()

    for job in (jobs[0], jobs[2]):
        await cluster.wait_for(job.id, JobState.SUCCEEDED)
    await eventually(lambda: _is(worker.running == 0), "every slot freed")

    # Its lease is no longer renewed: it runs out, and the scheduler will re-run the job.
    async def lease_expired() -> bool:
        job = await cluster.jobs.get(refused)
        assert job is not None and job.lease_expires_at is not None
        return job.lease_expires_at < datetime.now(UTC)

    await eventually(lease_expired, "the refused job's lease expiring")


async def _is(value: bool) -> bool:
    return value


async def test_a_failed_attempt_keeps_its_error_with_the_traceback(cluster: Cluster) -> None:
    def parse_invoice(payload: dict[str, Any]) -> None:
        raise KeyError("amount")

    @handler(cluster, "invoice")
    async def invoice(ctx: JobContext) -> None:
        parse_invoice(ctx.payload)

    cluster.start_worker()
    job = await cluster.enqueue("invoice", policy=FAST_RETRY)

    await cluster.wait_for(job.id, JobState.FAILED)

    stored = await cluster.jobs.get(job.id)
    assert stored is not None
    [error] = stored.errors
    assert (error.attempt, error.error) == (1, "KeyError: 'amount'")
    assert error.traceback is not None
    assert error.traceback.startswith("Traceback (most recent call last):")
    assert "parse_invoice" in error.traceback
    assert error.traceback.endswith("KeyError: 'amount'\n")


async def test_dead_lettering_a_job_logs_one_line_with_its_reason(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    @handler(cluster, "bad")
    async def bad(ctx: JobContext) -> None:
        raise TerminalError("no such customer")

    cluster.start_worker()
    with caplog.at_level(logging.WARNING, logger="taskforge.worker"):
        job = await cluster.enqueue("bad")
        await cluster.wait_for(job.id, JobState.DLQ)
        await eventually(lambda: _is(bool(_dead_letter_lines(caplog))), "the log line")

    [line] = _dead_letter_lines(caplog)
    assert str(job.id) in line.getMessage()
    assert "terminal error" in line.getMessage()
    fields = vars(line)
    assert (fields["job_id"], fields["queue"], fields["job_type"], fields["reason"]) == (
        str(job.id),
        "jobs:ready",
        "bad",
        "terminal error",
    )


async def test_with_tracing_the_dead_letter_line_carries_the_trace_id_of_its_attempt(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    @handler(cluster, "bad")
    async def bad(ctx: JobContext) -> None:
        raise TerminalError("no such customer")

    tracer = RecordingTracer()
    cluster.start_worker(tracer=tracer)
    with caplog.at_level(logging.WARNING, logger="taskforge.worker"):
        job = await cluster.enqueue("bad", traceparent=TRACEPARENT)
        await cluster.wait_for(job.id, JobState.DLQ)
        await eventually(lambda: _is(bool(_dead_letter_lines(caplog))), "the log line")

    [line] = _dead_letter_lines(caplog)
    [span] = tracer.spans
    assert vars(line)["trace_id"] == span.traceparent.split("-")[1]


def _dead_letter_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if "dead-lettered" in record.getMessage()]


async def test_an_async_handler_past_its_timeout_is_cancelled_and_fails_as_retryable(
    cluster: Cluster,
) -> None:
    cancelled: list[int] = []

    @handler(cluster, "hang")
    async def hang(ctx: JobContext) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(ctx.attempt)
            raise

    cluster.start_worker()
    cluster.start_scheduler()
    job = await cluster.enqueue(
        "hang", timeout=0.2, policy=RetryPolicy(max_attempts=2, initial_delay=0.05)
    )

    dead = await cluster.wait_for(job.id, JobState.DLQ)

    assert cancelled == [1, 2]
    assert dead.reason == "attempts exhausted"
    assert [(e.attempt, e.error) for e in dead.errors] == [
        (1, "timed out after 0.2s (job timeout)"),
        (2, "timed out after 0.2s (job timeout)"),
    ]
    # The traceback shows where the handler was when it was cancelled.
    assert dead.errors[0].traceback is not None
    assert "in hang" in dead.errors[0].traceback


async def test_a_sync_handler_past_its_timeout_is_abandoned_and_its_slot_freed(
    cluster: Cluster,
) -> None:
    release = threading.Event()
    saw_cancel: list[bool] = []

    @handler(cluster, "stuck")
    def stuck(ctx: JobContext) -> None:
        release.wait(DEADLINE)  # a call that ignores every deadline
        saw_cancel.append(ctx.cancelled.is_set())

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        return None

    worker = cluster.start_worker(concurrency=1)
    job = await cluster.enqueue("stuck", timeout=0.2, policy=FAST_RETRY)
    after = await cluster.enqueue("noop")

    failed = await cluster.wait_for(job.id, JobState.FAILED)
    await cluster.wait_for(after.id, JobState.SUCCEEDED)  # the slot was freed at once

    assert failed.last_error == "timed out after 0.2s (job timeout)"
    stored = await cluster.jobs.get(job.id)
    assert stored is not None
    trace = stored.errors[0].traceback
    assert trace is not None
    assert "Stack of the handler's thread" in trace
    assert "in stuck" in trace
    assert (worker.abandoned_threads, worker.abandoned_threads_total) == (1, 1)

    release.set()

    await eventually(lambda: _is(worker.abandoned_threads == 0), "the thread returning")
    assert worker.abandoned_threads_total == 1
    assert saw_cancel == [True]  # a handler that polls ctx.cancelled learns it timed out


async def test_a_sync_handler_polling_ctx_cancelled_runs_on_until_its_timeout(
    cluster: Cluster,
) -> None:
    steps: list[int] = []

    @handler(cluster, "steps")
    def steps_until_cancelled(ctx: JobContext) -> str:
        for step in range(1_000):
            if ctx.cancelled:  # read as a flag, as the README's "poll ctx.cancelled" reads
                return "stopped"
            steps.append(step)
            time.sleep(0.01)
        return "done"

    cluster.start_worker()
    job = await cluster.enqueue("steps", timeout=0.2, policy=FAST_RETRY)

    failed = await cluster.wait_for(job.id, JobState.FAILED)

    assert failed.last_error == "timed out after 0.2s (job timeout)"
    assert len(steps) > 1  # it ran until the time limit, not stopping at its first poll


async def test_past_its_bound_of_abandoned_threads_the_worker_drains_and_stops(
    cluster: Cluster,
) -> None:
    release = threading.Event()

    @handler(cluster, "stuck")
    def stuck(ctx: JobContext) -> None:
        release.wait(DEADLINE)

    worker = cluster.start_worker(concurrency=1, max_abandoned_threads=1)
    running = cluster.tasks.pop()  # awaited here, not by the fixture
    try:
        first = await cluster.enqueue("stuck", timeout=0.1, policy=FAST_RETRY)
        await cluster.wait_for(first.id, JobState.FAILED)
        assert not running.done()  # at the bound, the worker goes on
        second = await cluster.enqueue("stuck", timeout=0.1, policy=FAST_RETRY)

        with pytest.raises(TooManyAbandonedThreads, match="2 abandoned handler threads"):
            await asyncio.wait_for(running, DEADLINE)

        assert worker.abandoned_threads == 2
        assert (await cluster.wait_for(second.id, JobState.FAILED)).last_error == (
            "timed out after 0.1s (job timeout)"
        )
    finally:
        release.set()


async def test_sync_handlers_run_as_many_at_once_as_the_worker_has_slots(
    cluster: Cluster,
) -> None:
    # One more than asyncio's default thread pool runs at once on this machine.
    slots = min(32, (os.cpu_count() or 1) + 4) + 1
    everyone_in = threading.Barrier(slots, timeout=DEADLINE)

    @handler(cluster, "meet")
    def meet(ctx: JobContext) -> None:
        everyone_in.wait()

    cluster.start_worker(concurrency=slots)
    jobs = [await cluster.enqueue("meet") for _ in range(slots)]

    for job in jobs:
        await cluster.wait_for(job.id, JobState.SUCCEEDED)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot describe myself")


async def test_an_error_that_cannot_be_printed_still_fails_the_attempt(cluster: Cluster) -> None:
    @handler(cluster, "odd")
    async def odd(ctx: JobContext) -> None:
        raise Unprintable

    cluster.start_worker()
    job = await cluster.enqueue("odd", policy=FAST_RETRY)

    failed = await cluster.wait_for(job.id, JobState.FAILED)

    assert failed.last_error == "Unprintable: <str() failed>"


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize(
    ("raised", "error"),
    [
        (KeyboardInterrupt, "KeyboardInterrupt"),
        (SystemExit(3), "SystemExit: 3"),
        (asyncio.CancelledError, "CancelledError"),
    ],
)
async def test_a_base_exception_the_handler_raises_fails_the_attempt_and_the_worker_goes_on(
    cluster: Cluster, sync: bool, raised: BaseException | type[BaseException], error: str
) -> None:
    def quit_(ctx: JobContext) -> None:
        raise raised

    async def quit_async(ctx: JobContext) -> None:
        raise raised

    cluster.handlers.register("quit", quit_ if sync else quit_async)

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        return None

    cluster.start_worker()
    job = await cluster.enqueue("quit", policy=FAST_RETRY)

    failed = await cluster.wait_for(job.id, JobState.FAILED)

    assert failed.last_error == error
    stored = await cluster.jobs.get(job.id)
    assert stored is not None
    trace = stored.errors[0].traceback
    assert trace is not None
    assert "in quit_" in trace
    after = await cluster.enqueue("noop")
    await cluster.wait_for(after.id, JobState.SUCCEEDED)  # the worker still runs


@pytest.mark.parametrize(
    ("sync", "error"),
    [
        (False, "RuntimeError: coroutine raised StopIteration"),  # Python's own (PEP 479)
        (True, "RuntimeError: handler raised StopIteration"),  # the same rule for threads
    ],
    ids=["async", "sync"],
)
async def test_a_stop_iteration_the_handler_raises_fails_the_attempt(
    cluster: Cluster, sync: bool, error: str
) -> None:
    # `next()` on an exhausted iterator: an asyncio future cannot hold StopIteration, so
    # passed back from a handler's thread as it is, the attempt would never end.
    def first_row(ctx: JobContext) -> object:
        return next(iter([]))

    async def first_row_async(ctx: JobContext) -> object:
        return next(iter([]))

    cluster.handlers.register("first-row", first_row if sync else first_row_async)
    cluster.start_worker()
    job = await cluster.enqueue("first-row", policy=FAST_RETRY)

    failed = await cluster.wait_for(job.id, JobState.FAILED)

    assert failed.last_error == error
    stored = await cluster.jobs.get(job.id)
    assert stored is not None
    trace = stored.errors[0].traceback
    assert trace is not None
    assert "in first_row" in trace
    assert "StopIteration" in trace


async def test_a_generator_exit_a_sync_handler_raises_fails_the_attempt(cluster: Cluster) -> None:
    # Passed back as it is, it closed the worker's attempt coroutine unsettled: the job
    # stayed RUNNING until its lease ran out.
    def closes(ctx: JobContext) -> None:
        raise GeneratorExit

    cluster.handlers.register("closes", closes)
    cluster.start_worker()
    job = await cluster.enqueue("closes", policy=FAST_RETRY)

    failed = await cluster.wait_for(job.id, JobState.FAILED)

    assert failed.last_error == "RuntimeError: handler raised GeneratorExit"


def freezable_ready_queue(cluster: Cluster) -> FreezableReadyQueue:
    """A FreezableReadyQueue that `cluster`'s workers and hints use from now on."""
    queue = FreezableReadyQueue()
    cluster.ready_queue = queue
    cluster.hints = HintDispatcher(queue)
    return queue


class FreezingRateLimiter:
    """A rate limiter on the same server as `queue`, which freezes right after a pop: the
    limiter's call is the first that gets no answer."""

    def __init__(self, queue: FreezableReadyQueue) -> None:
        self.queue = queue

    async def acquire(self, queue: str, rate_per_sec: float, wanted: int) -> RateGrant:
        self.queue.mode = "frozen"
        await self.queue._outage()
        raise AssertionError("a frozen server answers nothing")


@pytest.mark.parametrize(
    ("outage", "reason"),
    [("frozen", "no answer within 0.1s"), ("down", "redis unavailable: connection refused")],
)
async def test_jobs_keep_running_from_the_store_while_the_ready_queue_is_unreachable(
    cluster: Cluster, outage: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    queue = freezable_ready_queue(cluster)

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        return None

    cluster.start_worker(queue_grace=0.05, queue_retry_interval=0.1, direct_poll_max=0.05)
    queue.mode = outage
    stored = [
        (
            await cluster.jobs.add(
                NewJob(id=cluster.ids.new_id(), queue="jobs:ready", job_type="noop")
            )
        )[0]
        for _ in range(20)
    ]  # committed while Redis is out: no hint exists for any of them

    for job in stored:
        await cluster.wait_for(job.id, JobState.SUCCEEDED)
    warned = f"ready queue unreachable ({reason}); claiming due jobs from the store"
    assert warned in [record.getMessage() for record in caplog.records]


async def test_a_ready_queue_that_freezes_before_the_rate_limit_answers_does_not_stall_dispatch(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    queue = freezable_ready_queue(cluster)

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        return None

    job = await cluster.enqueue("noop")
    await cluster.hints.drain()
    cluster.start_worker(
        rate_limiter=FreezingRateLimiter(queue),
        rate_limit_per_sec=100.0,
        queue_grace=0.05,
        queue_retry_interval=0.1,
        direct_poll_max=0.05,
    )

    # Its hint was popped, the server froze before the limiter answered, and the hint
    # could not go back: the job is claimed from the store within the queue's grace.
    await cluster.wait_for(job.id, JobState.SUCCEEDED)
    warned = "ready queue unreachable (no answer within 0.05s); claiming due jobs from the store"
    assert warned in [record.getMessage() for record in caplog.records]


async def test_the_worker_returns_to_hints_once_the_ready_queue_answers(cluster: Cluster) -> None:
    queue = freezable_ready_queue(cluster)

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        return None

    cluster.start_worker(queue_grace=0.05, queue_retry_interval=0.1)
    queue.mode = "down"
    first, _, _ = await cluster.jobs.add(
        NewJob(id=cluster.ids.new_id(), queue="jobs:ready", job_type="noop")
    )
    await cluster.wait_for(first.id, JobState.SUCCEEDED)
    pops_during_outage = queue.pops

    queue.mode = None
    second = await cluster.enqueue("noop")
    await cluster.wait_for(second.id, JobState.SUCCEEDED)
    deadline = time.monotonic() + DEADLINE
    while queue.pops <= pops_during_outage:
        assert time.monotonic() < deadline, "the worker never popped hints again"
        await asyncio.sleep(0.01)


async def test_a_ready_queue_that_serves_pops_but_takes_no_hints_does_not_stall_dispatch(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    # A Redis out of memory under noeviction: pops answer (empty: no hint gets in), every
    # write that adds is refused. Jobs enqueued meanwhile run, claimed from the store.
    queue = freezable_ready_queue(cluster)
    queue.mode = "full"

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        return None

    with caplog.at_level(logging.INFO, logger="taskforge.worker"):
        cluster.start_worker(queue_grace=0.05, queue_retry_interval=0.1)
        stored, _, _ = await cluster.jobs.add(
            NewJob(id=cluster.ids.new_id(), queue="jobs:ready", job_type="noop")
        )
        await cluster.wait_for(stored.id, JobState.SUCCEEDED)
        warned = (
            f"ready queue unreachable (redis unavailable: {OUT_OF_MEMORY}); "
            "claiming due jobs from the store"
        )
        assert warned in [record.getMessage() for record in caplog.records]
        pops_while_full = queue.pops

        queue.mode = None  # memory again: back to hints
        later = await cluster.enqueue("noop")
        await cluster.wait_for(later.id, JobState.SUCCEEDED)
        deadline = time.monotonic() + DEADLINE
        while queue.pops <= pops_while_full:
            assert time.monotonic() < deadline, "the worker never popped hints again"
            await asyncio.sleep(0.01)
    assert "ready queue answers again; back to hints" in [r.getMessage() for r in caplog.records]


class PingCounting(InMemoryReadyQueue):
    def __init__(self) -> None:
        super().__init__()
        self.pings = 0

    async def ping(self) -> None:
        self.pings += 1


async def test_an_idle_worker_checks_that_hints_can_arrive_once_per_retry_interval(
    cluster: Cluster,
) -> None:
    queue = PingCounting()
    cluster.ready_queue = queue
    cluster.hints = HintDispatcher(queue)
    now = [100.0]
    cluster.start_worker(monotonic=lambda: now[0], queue_retry_interval=5.0)
    deadline = time.monotonic() + DEADLINE
    while queue.pings < 1:
        assert time.monotonic() < deadline, "an idle worker never checked the ready queue"
        await asyncio.sleep(0.01)

    await asyncio.sleep(0.3)  # six empty pops of 0.05 s, all within the interval
    assert queue.pings == 1

    now[0] += 5.0
    while queue.pings < 2:
        assert time.monotonic() < deadline, "the interval passed and no check followed"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert queue.pings == 2


class SlowToConnect(FreezableReadyQueue):
    """A ready queue whose client needs `connecting` seconds to open its connection (asking
    Sentinels in turn, the first of them gone): a call cancelled meanwhile leaves it
    unconnected, and the next call starts over. Counts the pings: started, under way at
    once, cancelled."""

    def __init__(self, connecting: float) -> None:
        super().__init__()
        self.connecting = connecting
        self.connected = False
        self.pings = 0
        self.pinging = 0
        self.most_pings_at_once = 0
        self.cancelled_pings = 0

    async def _connect(self) -> None:
        if not self.connected:
            await asyncio.sleep(self.connecting)
            self.connected = True

    async def pop(self, queues: Sequence[str], max_count: int, timeout: float) -> list[ReadyHint]:
        await self._connect()
        return await super().pop(queues, max_count, timeout)

    async def ping(self) -> None:
        self.pings += 1
        self.pinging += 1
        self.most_pings_at_once = max(self.most_pings_at_once, self.pinging)
        try:
            await self._connect()
        except asyncio.CancelledError:
            self.cancelled_pings += 1
            raise
        finally:
            self.pinging -= 1
        await super().ping()


def slow_to_connect(cluster: Cluster, connecting: float) -> SlowToConnect:
    """A SlowToConnect queue that `cluster`'s workers and hints use from now on."""
    queue = SlowToConnect(connecting)
    cluster.ready_queue = queue
    cluster.hints = HintDispatcher(queue)
    return queue


async def test_a_probe_slower_than_the_grace_is_left_to_finish_and_no_other_starts_meanwhile(
    cluster: Cluster,
) -> None:
    queue = slow_to_connect(cluster, connecting=2.0)
    # The first pop outlives poll_timeout + queue_grace (0.1 s): claiming from the store.
    cluster.start_worker(queue_grace=0.05, queue_retry_interval=0.05)
    deadline = time.monotonic() + DEADLINE
    while not queue.pings:
        assert time.monotonic() < deadline, "the worker never probed the ready queue"
        await asyncio.sleep(0.01)

    await asyncio.sleep(0.5)  # ten tries' worth, all while the first probe is out

    assert (queue.pings, queue.pinging, queue.cancelled_pings) == (1, 1, 0)


async def test_the_worker_returns_to_hints_once_a_probe_slower_than_the_grace_answers(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    queue = slow_to_connect(cluster, connecting=0.3)

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        return None

    with caplog.at_level(logging.INFO, logger="taskforge.worker"):
        cluster.start_worker(queue_grace=0.05, queue_retry_interval=0.1)
        deadline = time.monotonic() + DEADLINE
        while not queue.pops:
            assert time.monotonic() < deadline, "the worker never popped hints"
            await asyncio.sleep(0.01)
        job = await cluster.enqueue("noop")
        await cluster.wait_for(job.id, JobState.SUCCEEDED)

    assert queue.cancelled_pings == 0
    assert queue.most_pings_at_once == 1
    messages = [record.getMessage() for record in caplog.records]
    assert "ready queue answers again; back to hints" in messages


async def test_without_the_ready_queue_a_queue_waiting_for_permits_does_not_hold_up_another(
    cluster: Cluster,
) -> None:
    queue = freezable_ready_queue(cluster)
    queue.mode = "down"
    starts: dict[str, list[float]] = {"slow": [], "other": []}

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        starts[ctx.queue].append(time.monotonic())

    for _ in range(40):  # due before the other queue's job: first in claim order
        await cluster.jobs.add(NewJob(id=cluster.ids.new_id(), queue="slow", job_type="noop"))
    other, _, _ = await cluster.jobs.add(
        NewJob(id=cluster.ids.new_id(), queue="other", job_type="noop")
    )
    began = time.monotonic()
    cluster.start_worker(
        queues=("slow", "other"),
        concurrency=10,
        rate_limit_per_sec=2.0,
        queue_grace=0.05,
        queue_retry_interval=0.1,
        direct_poll_max=0.1,
    )

    await cluster.wait_for(other.id, JobState.SUCCEEDED)

    assert starts["other"][0] - began < 1.5  # not after the backlog, at 2 jobs/s (20 s)
    elapsed = time.monotonic() - began
    assert len(starts["slow"]) <= 2 + 2 * elapsed + 1  # the backlog within its own rate


async def test_a_lasting_outage_is_recalled_in_the_workers_log_every_minute(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    queue = freezable_ready_queue(cluster)
    queue.mode = "down"
    elapsed = [0.0]

    with caplog.at_level(logging.WARNING, logger="taskforge.worker"):
        cluster.start_worker(
            queue_grace=0.05,
            queue_retry_interval=1.0,
            direct_poll_min=0.01,
            direct_poll_max=0.01,
            monotonic=lambda: elapsed[0],
        )
        for _ in range(130):  # 130 s by the worker's clock, a probe due every second
            await asyncio.sleep(0.02)
            elapsed[0] += 1.0
        await cluster.shutdown()

    said = [r.getMessage() for r in caplog.records if "ready queue" in r.getMessage()]
    assert said[0].startswith("ready queue unreachable (redis unavailable")
    # At the first probe a minute (by the worker's clock) after the last line: at 60 s and
    # 120 s, or a second or two later should the loop wake late on a busy machine.
    recalled = [
        re.fullmatch(
            r"ready queue still unreachable after (\d+)s \(.*\); claiming due jobs from the store",
            message,
        )
        for message in said[1:]
    ]
    assert all(recalled), said
    first, second = (int(match[1]) for match in recalled if match)
    assert 60 <= first <= 63 and 60 <= second - first <= 63


async def test_without_the_ready_queue_permits_come_back_as_the_workers_own_clock_moves(
    cluster: Cluster,
) -> None:
    """The pacing of claims from the store reads the worker's injected `monotonic`: while it
    stands still no permit comes back, however long the wall clock runs."""
    queue = freezable_ready_queue(cluster)
    queue.mode = "down"
    started: list[UUID] = []

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        started.append(ctx.job_id)

    for _ in range(30):
        await cluster.jobs.add(NewJob(id=cluster.ids.new_id(), queue="jobs:ready", job_type="noop"))
    now = 1000.0
    cluster.start_worker(
        concurrency=30,
        rate_limit_per_sec=100.0,  # starts with 100 * direct_poll_min = 5 permits
        queue_grace=0.05,
        direct_poll_min=0.05,
        direct_poll_max=0.05,
        monotonic=lambda: now,
    )

    async def started_then_held(count: int) -> None:
        deadline = time.monotonic() + DEADLINE
        while len(started) < count:
            assert time.monotonic() < deadline, f"{len(started)} started"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # claims every 0.05 s meanwhile: none gets a permit
        assert len(started) == count

    await started_then_held(5)
    now += 0.1  # 10 permits more
    await started_then_held(15)


async def test_without_the_ready_queue_each_queue_takes_its_own_rate_and_one_without_none(
    cluster: Cluster,
) -> None:
    queue = freezable_ready_queue(cluster)
    queue.mode = "down"
    started: Counter[str] = Counter()

    @handler(cluster, "noop")
    async def noop(ctx: JobContext) -> None:
        started[ctx.queue] += 1

    for name in ("slow", "fast", "free") * 10:
        await cluster.jobs.add(NewJob(id=cluster.ids.new_id(), queue=name, job_type="noop"))
    cluster.start_worker(
        queues=("slow", "fast", "free"),
        concurrency=30,
        rate_limit_per_sec=20.0,  # slow: starts with 20 * direct_poll_min = 1 permit
        queue_rate_limits={"fast": 100.0, "free": 0.0},  # 5 permits; no limit
        queue_grace=0.05,
        direct_poll_min=0.05,
        direct_poll_max=0.05,
        monotonic=lambda: 1000.0,  # no permit comes back
    )

    deadline = time.monotonic() + DEADLINE
    while started != {"slow": 1, "fast": 5, "free": 10}:
        assert time.monotonic() < deadline, f"started {dict(started)}"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # claims every 0.05 s meanwhile: no queue gets more
    assert started == {"slow": 1, "fast": 5, "free": 10}


def _other_worker(clock: ManualClock, job_types: tuple[str, ...]) -> WorkerStatus:
    return WorkerStatus(
        worker_id="new-version",
        host="node-2",
        pid=7,
        queues=("jobs:ready",),
        job_types=job_types,
        concurrency=4,
        busy_slots=0,
        started_at=clock.now(),
        heartbeat_at=clock.now(),
    )


async def test_a_job_of_an_unknown_type_is_handed_back_without_using_an_attempt(
    cluster: Cluster,
) -> None:
    clock = ManualClock()
    cluster.start_worker(clock=clock, workers=InMemoryWorkerRegistry(), unknown_type_delay=60)
    job = await cluster.enqueue("new-type")

    back = await cluster.wait_until(job.id, lambda job: job.hand_backs == 1)

    assert back.state is JobState.PENDING
    assert back.attempt_count == 0
    assert back.unknown_type_since == clock.now()
    assert back.next_run_at > back.updated_at  # due again after the delay, for other workers
    assert cluster.metrics.counts["failed"] == 0


async def test_a_types_first_hand_back_for_want_of_a_handler_is_a_warning_the_next_are_not(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    # A misspelt job type looks like this: said once, loudly, then quietly at each hand-back.
    with caplog.at_level(logging.INFO, logger="taskforge.worker"):
        cluster.start_scheduler()
        cluster.start_worker(workers=InMemoryWorkerRegistry(), unknown_type_delay=0)
        job = await cluster.enqueue("typo_email")
        await cluster.wait_until(job.id, lambda job: job.hand_backs >= 3)
        another = await cluster.enqueue("typo_email")  # the same mistake: said already
        await cluster.wait_until(another.id, lambda job: job.hand_backs >= 1)
        await cluster.shutdown()

    said = [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if record.getMessage().startswith(f"job {job.id}:")
    ]
    assert said[0] == (
        logging.WARNING,
        f"job {job.id}: no live worker serving jobs:ready has a handler for 'typo_email'; it"
        " is handed back until one does, and dead-lettered after UNKNOWN_TYPE_GRACE (300s)"
        " without one",
    )
    assert len(said) >= 3
    assert {level for level, _ in said[1:]} == {logging.INFO}
    assert {
        record.levelno
        for record in caplog.records
        if record.getMessage().startswith(f"job {another.id}:")
    } == {logging.INFO}


async def test_an_unknown_type_is_dead_lettered_once_no_worker_had_it_for_the_grace(
    cluster: Cluster,
) -> None:
    clock = ManualClock()
    cluster.start_scheduler()
    cluster.start_worker(
        clock=clock, workers=InMemoryWorkerRegistry(), unknown_type_grace=300, unknown_type_delay=0
    )
    job = await cluster.enqueue("new-type")
    await cluster.wait_until(job.id, lambda job: job.hand_backs >= 2)

    clock.advance(300)
    dead = await cluster.wait_for(job.id, JobState.DLQ)

    assert dead.reason == "unknown job type"
    assert dead.last_error is not None
    assert "'new-type'" in dead.last_error and "UNKNOWN_TYPE_GRACE 300s" in dead.last_error
    assert dead.attempt_count == 1  # the hand-backs used none


async def handed_back_for_lack_of_a_handler(cluster: Cluster, clock: ManualClock) -> Job:
    """A job of a type no worker has a handler for, once handed back three times by a worker
    whose UNKNOWN_TYPE_GRACE is 300 s (and that has it due again at once)."""
    cluster.start_scheduler()
    cluster.start_worker(
        clock=clock, workers=InMemoryWorkerRegistry(), unknown_type_grace=300, unknown_type_delay=0
    )
    job = await cluster.enqueue("new-type")
    return await cluster.wait_until(job.id, lambda job: job.hand_backs >= 3)


async def test_hand_backs_count_no_attempt_in_the_metrics_and_the_dead_letter_one(
    cluster: Cluster,
) -> None:
    clock = ManualClock()
    job = await handed_back_for_lack_of_a_handler(cluster, clock)

    assert cluster.metrics.counts == Counter()  # no handler ran: no attempt, no time in queue
    assert cluster.metrics.job_types == Counter()

    clock.advance(300)
    await cluster.wait_for(job.id, JobState.DLQ)

    # The dead letter used the job's attempt: one attempt started, and it failed.
    await eventually(lambda: _holds(cluster.metrics.counts["failed"] == 1), "the failure report")
    assert cluster.metrics.counts == Counter(started=1, failed=1)
    assert cluster.metrics.job_types == Counter({UNREGISTERED_JOB_TYPE: 2})


async def test_the_unknown_type_error_states_the_time_waited_in_whole_seconds(
    cluster: Cluster,
) -> None:
    clock = ManualClock()
    job = await handed_back_for_lack_of_a_handler(cluster, clock)

    clock.advance(300.175)
    dead = await cluster.wait_for(job.id, JobState.DLQ)

    assert dead.last_error == (
        "no handler for jobType 'new-type': no live worker serving queue 'jobs:ready' "
        "has had one for 300s (UNKNOWN_TYPE_GRACE 300s)"
    )


async def test_the_grace_starts_only_once_no_live_worker_serving_the_queue_has_the_type(
    cluster: Cluster,
) -> None:
    clock = ManualClock()
    registry = InMemoryWorkerRegistry()
    await registry.report(_other_worker(clock, ("new-type",)))
    cluster.start_scheduler()
    cluster.start_worker(clock=clock, workers=registry, unknown_type_delay=0)
    job = await cluster.enqueue("new-type")

    while_known = await cluster.wait_until(job.id, lambda job: job.hand_backs >= 2)
    assert while_known.unknown_type_since is None

    # The worker that had it is gone for longer than the grace: it is no longer live, and
    # the grace counts from the first hand-back that found no one.
    clock.advance(3600)
    started = await cluster.wait_until(job.id, lambda job: job.unknown_type_since is not None)
    assert started.state is not JobState.DLQ
    assert started.unknown_type_since == clock.now()


async def test_a_snoozed_job_waits_without_using_an_attempt(cluster: Cluster) -> None:
    @handler(cluster, "poll")
    async def poll(ctx: JobContext) -> None:
        raise Snooze(3600)

    cluster.start_worker()
    job = await cluster.enqueue("poll")

    snoozed = await cluster.wait_until(job.id, lambda job: job.snoozes == 1)

    assert snoozed.state is JobState.PENDING
    assert snoozed.attempt_count == 0
    waits = (snoozed.next_run_at - snoozed.updated_at).total_seconds()
    assert 3599 <= waits <= 3601
    assert cluster.metrics.counts["failed"] == 0


async def test_a_snoozed_job_runs_again_and_keeps_its_snooze_count(cluster: Cluster) -> None:
    runs: list[int] = []

    @handler(cluster, "poll")
    async def poll(ctx: JobContext) -> str:
        runs.append(ctx.attempt)
        if len(runs) < 3:
            raise Snooze(0)
        return "ready"

    cluster.start_scheduler()
    cluster.start_worker()
    job = await cluster.enqueue("poll")

    done = await cluster.wait_for(job.id, JobState.SUCCEEDED)

    assert runs == [1, 1, 1]  # every run was the first attempt
    assert (done.snoozes, done.attempt_count, done.result) == (2, 1, "ready")


async def test_each_snoozed_run_counts_as_an_attempt_and_a_snooze_in_the_metrics(
    cluster: Cluster,
) -> None:
    @handler(cluster, "poll")
    async def poll(ctx: JobContext) -> None:
        if ctx.snoozes < 2:
            raise Snooze(0)

    cluster.start_scheduler()
    cluster.start_worker()
    job = await cluster.enqueue("poll")
    await cluster.wait_for(job.id, JobState.SUCCEEDED)

    # attempts = successes + failures + snoozes: every run is counted once more as it ends
    await eventually(lambda: _holds(cluster.metrics.counts["succeeded"] == 1), "the success")
    assert cluster.metrics.counts == Counter(started=3, snoozed=2, succeeded=1)
    assert cluster.metrics.job_types == Counter(poll=6)


async def test_a_job_snoozing_past_the_cap_is_dead_lettered(cluster: Cluster) -> None:
    @handler(cluster, "poll")
    def poll(ctx: JobContext) -> None:
        raise Snooze(0)

    cluster.start_scheduler()
    cluster.start_worker(max_snoozes=2)
    job = await cluster.enqueue("poll")

    dead = await cluster.wait_for(job.id, JobState.DLQ)

    assert (dead.snoozes, dead.attempt_count, dead.reason) == (2, 1, "snoozed too many times")
    assert dead.last_error == "snoozed 2 times, the most MAX_SNOOZES allows (2)"


async def test_a_task_snoozing_past_its_own_cap_is_dead_lettered(cluster: Cluster) -> None:
    @taskforge.task("poll", max_snoozes=3, registry=cluster.handlers)
    def poll(ctx: JobContext) -> None:
        raise Snooze(0)

    cluster.start_scheduler()
    cluster.start_worker(max_snoozes=100)
    job = await cluster.enqueue("poll")

    dead = await cluster.wait_for(job.id, JobState.DLQ)

    assert (dead.snoozes, dead.attempt_count, dead.reason) == (3, 1, "snoozed too many times")
    assert dead.last_error == "snoozed 3 times, the most the 'poll' task's max_snoozes allows (3)"


async def test_a_task_cap_above_max_snoozes_lets_its_jobs_snooze_longer(cluster: Cluster) -> None:
    @taskforge.task("poll", max_snoozes=4, registry=cluster.handlers)
    def poll(ctx: JobContext) -> str:
        if ctx.snoozes < 4:
            raise Snooze(0)
        return "ready"

    cluster.start_scheduler()
    cluster.start_worker(max_snoozes=1)
    job = await cluster.enqueue("poll")

    done = await cluster.wait_for(job.id, JobState.SUCCEEDED)

    assert (done.snoozes, done.result) == (4, "ready")


@pytest.mark.parametrize("seconds", [-1, float("nan"), float("inf"), True, "5"])
async def test_snooze_refuses_a_duration_that_is_not_a_number_of_seconds(seconds: Any) -> None:
    with pytest.raises(ValueError, match="Snooze seconds"):
        Snooze(seconds)


async def test_snooze_states_its_bound_in_whole_seconds_as_the_api_does() -> None:
    with pytest.raises(
        ValueError, match=r"^Snooze seconds must be a number from 0 to 315360000, not -1$"
    ):
        Snooze(-1)


async def test_snooze_takes_a_timedelta_as_an_enqueues_delay_does() -> None:
    # Refused as "must be a number", with nothing to say what was given.
    assert Snooze(timedelta(minutes=2)).seconds == 120.0
    with pytest.raises(ValueError, match=r"not datetime.timedelta\(days=-1, seconds=86399\)$"):
        Snooze(timedelta(seconds=-1))


async def test_a_running_worker_reports_itself_and_removes_itself_when_it_stops(
    cluster: Cluster,
) -> None:
    registry = InMemoryWorkerRegistry()

    @handler(cluster, "email")
    async def email(ctx: JobContext) -> None:
        pass

    cluster.start_worker(workers=registry, host="node-1", pid=42, owner="node-1:42:ab")
    deadline = time.monotonic() + DEADLINE
    while not (live := await registry.list_live(now=datetime.now(UTC))):
        assert time.monotonic() < deadline, "the worker never reported itself"
        await asyncio.sleep(0.01)

    [status] = live
    assert (status.worker_id, status.host, status.pid) == ("node-1:42:ab", "node-1", 42)
    assert (status.queues, status.job_types, status.concurrency) == (("jobs:ready",), ("email",), 4)
    await cluster.shutdown()
    assert await registry.list_live(now=datetime.now(UTC)) == []


async def test_a_worker_with_the_type_on_another_queue_does_not_hold_off_the_grace(
    cluster: Cluster,
) -> None:
    clock = ManualClock()
    registry = InMemoryWorkerRegistry()
    elsewhere = replace(_other_worker(clock, ("new-type",)), queues=("reports",))
    await registry.report(elsewhere)
    cluster.start_worker(clock=clock, workers=registry, unknown_type_delay=60)
    job = await cluster.enqueue("new-type")

    back = await cluster.wait_until(job.id, lambda job: job.hand_backs == 1)

    assert back.unknown_type_since == clock.now()


class _BrokenRegistry(InMemoryWorkerRegistry):
    async def list_live(self, *, now: datetime) -> list[WorkerStatus]:
        raise Unavailable("postgres", "connection refused")


async def test_without_an_answer_from_the_registry_a_job_is_handed_back_never_dead_lettered(
    cluster: Cluster,
) -> None:
    clock = ManualClock()
    cluster.start_scheduler()
    cluster.start_worker(
        clock=clock, workers=_BrokenRegistry(), unknown_type_grace=0, unknown_type_delay=0
    )
    job = await cluster.enqueue("new-type")

    back = await cluster.wait_until(job.id, lambda job: job.hand_backs >= 2)

    assert back.state is not JobState.DLQ
    assert back.unknown_type_since is None


class CutOffStore(InMemoryJobs):
    """The in-memory store as a worker sees it from the far side of a network partition,
    once `cut` is set: heartbeats hang (`silent`) or fail at once, settlements hang."""

    def __init__(self, cluster: Cluster, silent: bool) -> None:
        super().__init__(cluster.state)
        self.silent = silent
        self.cut = False
        self.settle_attempts = 0

    async def _unreachable(self) -> None:
        if self.silent:
            await asyncio.Event().wait()  # no answer, ever
        raise Unavailable("postgres", "network is unreachable")

    async def heartbeat(self, leases: Sequence[Lease]) -> set[UUID]:
        if self.cut:
            await self._unreachable()
        return await super().heartbeat(leases)

    async def settle(self, settlements: Sequence[Settlement]) -> set[UUID]:
        if self.cut:
            self.settle_attempts += 1
            await asyncio.Event().wait()
        return await super().settle(settlements)


@pytest.mark.parametrize(
    ("silent", "sync"),
    [
        (True, False),  # a partition that drops packets, an async handler: cancelled
        (False, True),  # a link that refuses at once, a sync handler: dropped, thread left
    ],
)
async def test_a_worker_cut_off_from_the_store_stops_a_job_once_its_lease_runs_out(
    cluster: Cluster, silent: bool, sync: bool
) -> None:
    store = CutOffStore(cluster, silent)
    cluster.jobs = store
    started = threading.Event()
    stopped_at: list[float] = []

    def sync_job(ctx: JobContext) -> None:
        started.set()
        while not ctx.cancelled.is_set():  # the documented way for a sync handler to stop
            time.sleep(0.01)
        stopped_at.append(time.monotonic())

    async def async_job(ctx: JobContext) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            stopped_at.append(time.monotonic())

    cluster.handlers.handler("long")(sync_job if sync else async_job)
    worker = cluster.start_worker()
    job = await cluster.enqueue("long", visibility_timeout=1.0)
    await eventually(lambda: _is(started.is_set()), "the job to start")

    store.cut = True
    await eventually(lambda: _is(bool(stopped_at)), "the handler to stop")

    # The worker's own reckoning of the lease never outlasts the store's: the handler
    # stopped before the lease it could no longer renew ran out in the store (give or take
    # the time a cancellation takes to arrive).
    stopped = datetime.now(UTC) - timedelta(seconds=time.monotonic() - stopped_at[0])
    lease = await cluster.jobs.get(job.id)
    assert lease is not None and lease.lease_expires_at is not None
    assert stopped - lease.lease_expires_at < timedelta(seconds=0.1)
    assert cluster.metrics.counts["lease_lost"] == 1
    await eventually(lambda: _is(worker.running == 0), "the slot to be freed")
    assert store.settle_attempts == 0  # the attempt was dropped, not settled
    if sync:
        assert worker.abandoned_threads_total <= 1  # left if it was still polling


@dataclass
class HookCall:
    job_id: UUID
    attempt: int
    exc: BaseException
    dead_lettered: bool


def record_failures(cluster: Cluster) -> list[HookCall]:
    calls: list[HookCall] = []

    @cluster.handlers.on_failure
    async def record(ctx: JobContext, exc: BaseException, dead_lettered: bool) -> None:
        calls.append(HookCall(ctx.job_id, ctx.attempt, exc, dead_lettered))

    return calls


async def test_a_failure_hook_gets_each_failed_attempts_exception_and_the_last_dead_letters(
    cluster: Cluster,
) -> None:
    calls = record_failures(cluster)
    raised: list[BaseException] = []

    @handler(cluster, "fail")
    async def fail(ctx: JobContext) -> None:
        raised.append(RuntimeError(f"attempt {ctx.attempt} failed"))
        raise raised[-1]

    cluster.start_worker()
    cluster.start_scheduler()
    job = await cluster.enqueue("fail", policy=FAST_RETRY)
    await cluster.wait_for(job.id, JobState.DLQ)
    await cluster.shutdown()  # waits for the hooks of the failures settled

    assert [(c.job_id, c.attempt, c.dead_lettered) for c in calls] == [
        (job.id, 1, False),
        (job.id, 2, False),
        (job.id, 3, True),  # no attempt left
    ]
    assert [c.exc for c in calls] == raised  # the handler's own exception objects


async def test_a_failure_hook_hears_of_a_terminal_error_as_dead_lettering(cluster: Cluster) -> None:
    calls = record_failures(cluster)

    @handler(cluster, "bad")
    async def bad(ctx: JobContext) -> None:
        raise TerminalError("no such customer")

    cluster.start_worker()
    job = await cluster.enqueue("bad", policy=FAST_RETRY)
    await cluster.wait_for(job.id, JobState.DLQ)
    await cluster.shutdown()

    [call] = calls
    assert (call.attempt, call.dead_lettered) == (1, True)
    assert isinstance(call.exc, TerminalError)
    assert str(call.exc) == "no such customer"


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_a_failure_hook_hears_of_a_timeout_as_a_timeout_error_naming_the_limit(
    cluster: Cluster, sync: bool
) -> None:
    calls = record_failures(cluster)
    release = threading.Event()

    if sync:

        @handler(cluster, "hang")
        def hang_sync(ctx: JobContext) -> None:
            release.wait(DEADLINE)

    else:

        @handler(cluster, "hang")
        async def hang(ctx: JobContext) -> None:
            await asyncio.sleep(30)

    cluster.start_worker()
    job = await cluster.enqueue("hang", timeout=0.2, policy=FAST_RETRY)
    await cluster.wait_for(job.id, JobState.FAILED)
    await cluster.shutdown()
    release.set()

    [call] = calls
    assert (call.attempt, call.dead_lettered) == (1, False)  # attempts are left
    assert isinstance(call.exc, TimeoutError)
    assert str(call.exc) == "timed out after 0.2s (job timeout)"


async def test_a_failure_hook_hears_of_a_result_that_cannot_be_stored(cluster: Cluster) -> None:
    calls = record_failures(cluster)

    @handler(cluster, "odd")
    async def odd(ctx: JobContext) -> object:
        return {"tags": {"a"}}

    cluster.start_worker()
    job = await cluster.enqueue("odd", policy=FAST_RETRY)
    await cluster.wait_for(job.id, JobState.DLQ)
    await cluster.shutdown()

    [call] = calls
    assert call.dead_lettered
    assert isinstance(call.exc, UnstorableResult)
    assert str(call.exc) == "not JSON: set at $.tags"


async def test_a_failure_hook_is_not_called_for_a_success_a_snooze_or_a_cancellation(
    cluster: Cluster,
) -> None:
    calls = record_failures(cluster)
    started = asyncio.Event()

    @handler(cluster, "ok")
    async def ok(ctx: JobContext) -> None:
        return None

    @handler(cluster, "later")
    async def later(ctx: JobContext) -> None:
        raise Snooze(60)

    @handler(cluster, "sleep")
    async def sleep(ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(30)

    cluster.start_worker()
    done = await cluster.enqueue("ok")
    snoozed = await cluster.enqueue("later")
    cancelled = await cluster.enqueue("sleep", visibility_timeout=1.0)
    await cluster.wait_for(done.id, JobState.SUCCEEDED)
    await cluster.wait_until(snoozed.id, lambda job: job.snoozes == 1)
    await asyncio.wait_for(started.wait(), DEADLINE)
    await cluster.jobs.cancel(cancelled.id, "user requested")
    await eventually(lambda: _holds(cluster.metrics.counts["interrupted"] == 1), "the interrupt")
    await cluster.shutdown()

    assert calls == []


async def test_a_failure_hook_that_raises_is_logged_and_changes_nothing(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    calls = record_failures(cluster)

    @cluster.handlers.on_failure
    def broken(ctx: JobContext, exc: BaseException, dead_lettered: bool) -> None:
        raise ValueError("the alerting service is down")

    @handler(cluster, "fail")
    async def fail(ctx: JobContext) -> None:
        raise RuntimeError("boom")

    cluster.start_worker()
    cluster.start_scheduler()
    with caplog.at_level(logging.WARNING, logger="taskforge.worker"):
        job = await cluster.enqueue("fail", policy=FAST_RETRY)
        dead = await cluster.wait_for(job.id, JobState.DLQ)
        await cluster.shutdown()

    assert (dead.attempt_count, dead.last_error) == (3, "RuntimeError: boom")  # as without it
    assert [c.attempt for c in calls] == [1, 2, 3]  # the other hook heard of every failure
    logged = [r for r in caplog.records if "failure hook" in r.getMessage()]
    assert len(logged) == 3
    assert all(str(job.id) in r.getMessage() and "broken" in r.getMessage() for r in logged)
    assert all(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in logged)


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_a_failure_hook_that_hangs_holds_up_neither_the_job_nor_the_workers_stop(
    cluster: Cluster, caplog: pytest.LogCaptureFixture, sync: bool
) -> None:
    started = threading.Event()
    release = threading.Event()
    release_async = asyncio.Event()

    if sync:

        @cluster.handlers.on_failure
        def hang_sync(ctx: JobContext, exc: BaseException, dead_lettered: bool) -> None:
            started.set()
            release.wait(DEADLINE)

    else:

        @cluster.handlers.on_failure
        async def hang(ctx: JobContext, exc: BaseException, dead_lettered: bool) -> None:
            started.set()
            with contextlib.suppress(asyncio.CancelledError):  # it even ignores cancellation
                await asyncio.sleep(30)
            await release_async.wait()

    @handler(cluster, "bad")
    async def bad(ctx: JobContext) -> None:
        raise TerminalError("no")

    @handler(cluster, "ok")
    async def ok(ctx: JobContext) -> None:
        return None

    cluster.start_worker(concurrency=1, failure_hook_timeout=0.3)
    try:
        with caplog.at_level(logging.WARNING, logger="taskforge.worker"):
            failed = await cluster.enqueue("bad")
            await cluster.wait_for(failed.id, JobState.DLQ)
            await eventually(lambda: _is(started.is_set()), "the hook to start")
            after = await cluster.enqueue("ok")
            await cluster.wait_for(after.id, JobState.SUCCEEDED)  # the slot is free
            assert not release.is_set()  # the hook still hangs
            began = time.monotonic()
            await cluster.shutdown()
            assert time.monotonic() - began < 1.0  # at most the hook's timeout
    finally:
        release.set()
        release_async.set()

    name = "hang_sync" if sync else "hang"
    [warned] = [r.getMessage() for r in caplog.records if "failure hook" in r.getMessage()]
    assert warned.startswith(f"job {failed.id}: failure hook ")
    assert f".{name} did not return within 0.3s" in warned


async def test_once_every_hook_thread_is_stuck_sync_hooks_are_skipped_not_queued(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Queued behind a hook that never returns, each later call would wait for ever and
    keep its job's context and exception alive: a leak that grows with every failure."""
    release = threading.Event()
    calls: list[UUID] = []

    @cluster.handlers.on_failure
    def stuck(ctx: JobContext, exc: BaseException, dead_lettered: bool) -> None:
        calls.append(ctx.job_id)
        release.wait(DEADLINE)

    @handler(cluster, "bad")
    async def bad(ctx: JobContext) -> None:
        raise TerminalError("no")

    cluster.start_worker(concurrency=1, failure_hook_timeout=0.1)  # one hook thread
    try:
        with caplog.at_level(logging.WARNING, logger="taskforge.worker"):
            first = await cluster.enqueue("bad")
            await cluster.wait_for(first.id, JobState.DLQ)
            await eventually(lambda: _is(any("did not return" in r.getMessage()
                                                for r in caplog.records)),
                             "the first hook to time out")  # fmt: skip
            second = await cluster.enqueue("bad")
            await cluster.wait_for(second.id, JobState.DLQ)
            await eventually(lambda: _is(any("skipped: all" in r.getMessage()
                                                for r in caplog.records)),
                             "the second hook to be skipped")  # fmt: skip
    finally:
        release.set()
        await cluster.shutdown()

    assert calls == [first.id]
    [skipped] = [r.getMessage() for r in caplog.records if "skipped: all" in r.getMessage()]
    assert skipped.startswith(f"job {second.id}: failure hook ")
    assert "all 1 failure hook threads are held" in skipped


async def test_a_sync_failure_hook_runs_off_the_event_loop(cluster: Cluster) -> None:
    threads: list[int] = []

    @cluster.handlers.on_failure
    def report(ctx: JobContext, exc: BaseException, dead_lettered: bool) -> None:
        threads.append(threading.get_ident())

    @handler(cluster, "bad")
    async def bad(ctx: JobContext) -> None:
        raise TerminalError("no")

    cluster.start_worker()
    job = await cluster.enqueue("bad")
    await cluster.wait_for(job.id, JobState.DLQ)
    await cluster.shutdown()

    assert len(threads) == 1
    assert threads[0] != threading.get_ident()
