"""The scheduler's tick against the in-memory adapters, with a manual clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import pytest

from taskforge.application.enqueue import EnqueueJob
from taskforge.application.hints import HintDispatcher
from taskforge.application.scheduler import (
    DEAD_LETTER_SPAN,
    REQUEUE_SPAN,
    SchedulerSettings,
    SchedulerTick,
    TickReport,
    run_scheduler,
)
from taskforge.domain.errors import Unavailable
from taskforge.domain.job import Lease
from taskforge.domain.outcome import EXHAUSTED_REASON, LEASE_EXPIRED_ERROR, RetryLater
from taskforge.domain.states import JobState

from .conftest import (
    FlushableReadyQueue,
    FreezableReadyQueue,
    Memory,
    RecordingTracer,
    quick_policy,
)

pytestmark = pytest.mark.asyncio

SETTINGS = SchedulerSettings(batch_size=100, tick_interval=0.01, republish_after=10.0)


def tick_for(memory: Memory, settings: SchedulerSettings = SETTINGS) -> SchedulerTick:
    return SchedulerTick(memory.jobs, memory.ready_queue, memory.hints, settings)


async def queued_ids(memory: Memory) -> list[object]:
    return [hint.job_id for hint in await memory.ready_queue.pop(["jobs:ready"], 1000, 0)]


async def test_due_retry_is_promoted_and_published(memory: Memory) -> None:
    from datetime import timedelta

    job = (await memory.jobs.add(memory.new_job(policy=quick_policy()))).job
    [claimed] = await memory.jobs.claim([job.id], "w1")
    assert claimed.lease_token is not None
    lease = Lease(job_id=job.id, token=claimed.lease_token)
    await memory.jobs.settle([RetryLater(lease=lease, error="x", delay=timedelta(seconds=2))])
    tick = tick_for(memory)

    assert (await tick()).promoted == 0
    memory.clock.advance(2)
    report = await tick()

    assert report.promoted == 1
    assert await queued_ids(memory) == [job.id]


async def test_expired_lease_with_attempts_left_is_requeued(memory: Memory) -> None:
    job = (await memory.jobs.add(memory.new_job(visibility_timeout=5.0))).job
    await memory.jobs.claim([job.id], "w1")
    memory.clock.advance(6)

    report = await tick_for(memory)()

    requeued = await memory.jobs.get(job.id)
    assert report.reaped == 1
    assert requeued is not None
    assert requeued.state is JobState.PENDING
    assert requeued.attempt_count == 1
    assert requeued.lease_token is None
    assert await queued_ids(memory) == [job.id]


async def test_expired_lease_on_the_last_attempt_dead_letters_the_job(memory: Memory) -> None:
    job, _, _ = await memory.jobs.add(
        memory.new_job(policy=quick_policy(max_attempts=1), visibility_timeout=5.0)
    )
    await memory.jobs.claim([job.id], "w1")
    memory.clock.advance(6)

    report = await tick_for(memory)()

    assert report.dead_lettered == 1
    entry = await memory.dead_letters.get(job.id)
    assert entry is not None
    assert entry.reason == "attempts exhausted"


async def test_a_job_dead_lettered_for_its_expired_lease_is_logged_in_one_line_naming_it(
    memory: Memory, caplog: pytest.LogCaptureFixture
) -> None:
    job, _, _ = await memory.jobs.add(
        memory.new_job("email", policy=quick_policy(max_attempts=1), visibility_timeout=5.0)
    )
    await memory.jobs.claim([job.id], "w1")
    memory.clock.advance(6)

    with caplog.at_level(logging.WARNING, logger="taskforge.scheduler"):
        await tick_for(memory)()

    [line] = _dead_letter_lines(caplog)
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (
        f"job {job.id} (email on jobs:ready) dead-lettered: {EXHAUSTED_REASON}; "
        f"last error: {LEASE_EXPIRED_ERROR}"
    )
    fields = vars(line)
    assert (fields["job_id"], fields["queue"], fields["job_type"], fields["reason"]) == (
        str(job.id),
        "jobs:ready",
        "email",
        EXHAUSTED_REASON,
    )
    assert "trace_id" not in fields  # tracing is off


async def test_with_tracing_a_job_dead_lettered_for_its_expired_lease_ends_its_trace_in_a_span(
    memory: Memory, caplog: pytest.LogCaptureFixture
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    job, _, _ = await memory.jobs.add(
        memory.new_job(
            policy=quick_policy(max_attempts=1), visibility_timeout=5.0, traceparent=traceparent
        )
    )
    await memory.jobs.claim([job.id], "w1")
    memory.clock.advance(6)
    tracer = RecordingTracer()

    with caplog.at_level(logging.WARNING, logger="taskforge.scheduler"):
        await SchedulerTick(memory.jobs, memory.ready_queue, memory.hints, SETTINGS, tracer)()

    [span] = tracer.spans
    assert span.name == DEAD_LETTER_SPAN
    assert span.parent == traceparent
    assert span.attributes == {
        "job_id": str(job.id),
        "queue": "jobs:ready",
        "reason": EXHAUSTED_REASON,
    }
    assert span.error == LEASE_EXPIRED_ERROR
    assert span.ended
    [line] = _dead_letter_lines(caplog)
    assert vars(line)["trace_id"] == span.traceparent.split("-")[1]


def _dead_letter_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if "dead-lettered" in record.getMessage()]


async def test_lost_hint_is_republished_after_the_window(memory: Memory) -> None:
    job = (await EnqueueJob(memory.jobs, memory.hints)(memory.new_job())).job
    await memory.hints.drain()
    memory.ready_queue.clear()  # as if Redis lost the list
    tick = tick_for(memory)

    assert (await tick()).republished == 0
    memory.clock.advance(SETTINGS.republish_after + 1)
    assert (await tick()).republished == 1
    assert await queued_ids(memory) == [job.id]
    assert (await tick()).republished == 0  # marked published: not pushed again at once


async def test_hints_of_a_queue_nobody_serves_do_not_pile_up(memory: Memory) -> None:
    enqueue = EnqueueJob(memory.jobs, memory.hints)
    for _ in range(5):
        await enqueue(memory.new_job())
    # Not due for an hour: the queue's pending jobs outnumber its hints, so every tick asks
    # the store for stale ones, and the store must find the due ones covered.
    await enqueue(memory.new_job(delay=3600.0))
    await enqueue.drain()
    tick = tick_for(memory)

    for _ in range(10):
        memory.clock.advance(SETTINGS.republish_after + 1)
        assert (await tick()).republished == 0

    assert await memory.ready_queue.depth(["jobs:ready"]) == {"jobs:ready": 5}
    # Nor were the waiting jobs marked as published again: their hints are as old as ever.
    stale = await memory.jobs.find_unpublished({"jobs:ready": 0}, 100, SETTINGS.republish_after)
    assert len(stale) == 5


async def test_only_the_hint_that_went_missing_is_replaced(memory: Memory) -> None:
    enqueue = EnqueueJob(memory.jobs, memory.hints)
    ids = [(await enqueue(memory.new_job())).job.id for _ in range(5)]
    await enqueue.drain()
    [lost] = await memory.ready_queue.pop(["jobs:ready"], 1, 0)  # a worker died before claiming
    memory.clock.advance(SETTINGS.republish_after + 1)

    report = await tick_for(memory)()

    assert report.republished == 1
    assert sorted(await queued_ids(memory)) == sorted(ids)  # type: ignore[type-var]
    assert lost.job_id in ids


async def test_a_job_that_comes_due_is_published_even_when_its_queue_holds_old_hints(
    memory: Memory,
) -> None:
    enqueue = EnqueueJob(memory.jobs, memory.hints)
    for _ in range(3):  # hints that stay in the list after their jobs were cancelled
        cancelled = (await enqueue(memory.new_job())).job
        await memory.jobs.cancel(cancelled.id, "not needed")
    delayed = (await enqueue(memory.new_job(delay=30.0))).job
    await memory.hints.drain()
    tick = tick_for(memory)
    memory.clock.advance(30)

    report = await tick()

    assert report.republished == 1
    assert delayed.id in await queued_ids(memory)


async def test_delayed_job_is_published_when_it_comes_due(memory: Memory) -> None:
    job = (await EnqueueJob(memory.jobs, memory.hints)(memory.new_job(delay=30.0))).job
    tick = tick_for(memory)

    await tick()
    assert await queued_ids(memory) == []
    memory.clock.advance(30)
    await tick()
    assert await queued_ids(memory) == [job.id]


class ForgetfulReadyQueue(FlushableReadyQueue):
    """Reports one loss of its contents, as Redis does after a restart."""

    def __init__(self) -> None:
        super().__init__()
        self.intact = False

    async def check_intact(self) -> bool:
        intact, self.intact = self.intact, True
        return intact

    async def forget_intact(self) -> None:
        self.intact = False


async def lose_the_hints_of_new_jobs(memory: Memory, count: int) -> list[UUID]:
    """`count` jobs enqueued, then the ready queue loses their hints, and says so once."""
    memory.ready_queue = ForgetfulReadyQueue()
    memory.hints = HintDispatcher(memory.ready_queue)
    enqueue = EnqueueJob(memory.jobs, memory.hints)
    ids = [(await enqueue(memory.new_job())).job.id for _ in range(count)]
    await memory.hints.drain()
    memory.ready_queue.clear()
    return ids


async def test_queue_loss_republishes_every_pending_job_at_once(memory: Memory) -> None:
    ids = await lose_the_hints_of_new_jobs(memory, 3)

    report = await tick_for(memory)()

    assert report.resynced == 3
    assert report.republished == 3
    assert sorted(await queued_ids(memory)) == sorted(ids)  # type: ignore[type-var]


async def test_a_loss_is_a_warning_only_when_pending_jobs_needed_their_hints_again(
    memory: Memory, caplog: pytest.LogCaptureFixture
) -> None:
    # A first start on an empty Redis reads as a loss too: there is nothing to warn about.
    memory.ready_queue = ForgetfulReadyQueue()
    memory.hints = HintDispatcher(memory.ready_queue)
    with caplog.at_level(logging.INFO, logger="taskforge"):
        await tick_for(memory)()
    first_start = [(record.levelname, record.getMessage()) for record in caplog.records]
    caplog.clear()
    await lose_the_hints_of_new_jobs(memory, 2)
    with caplog.at_level(logging.INFO, logger="taskforge"):
        await tick_for(memory)()
    loss = [(record.levelname, record.getMessage()) for record in caplog.records]

    assert ("INFO", "ready queue is new or was emptied; no pending job to re-publish") in (
        first_start
    )
    assert not [entry for entry in first_start if entry[0] == "WARNING"]
    assert ("WARNING", "ready queue lost its contents; re-publishing 2 pending job(s)") in loss


async def test_a_re_publishing_cut_short_is_done_again_at_the_next_tick(memory: Memory) -> None:
    """The queue reports its loss once: a tick whose re-publishing failed (Postgres
    unreachable for a moment, the scheduler stopped) must not let it be forgotten."""
    ids = await lose_the_hints_of_new_jobs(memory, 2)
    tick = tick_for(memory)
    mark_unpublished = memory.jobs.mark_unpublished

    async def unreachable(job_ids: Sequence[UUID] | None = None) -> int:
        raise Unavailable("postgres", "connection refused")

    memory.jobs.mark_unpublished = unreachable  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await tick()
    memory.jobs.mark_unpublished = mark_unpublished  # type: ignore[method-assign]
    report = await tick()

    assert report.resynced == 2
    assert sorted(await queued_ids(memory)) == sorted(ids)  # type: ignore[type-var]


async def test_a_retry_promoted_by_a_tick_that_then_fails_is_published_by_the_next(
    memory: Memory,
) -> None:
    """The promotion marks the job published: a tick that fails before the hint reaches the
    queue (the store unreachable for a moment) unmarks it, so the next tick publishes it
    rather than the stale-hint sweep republish_after later."""
    from datetime import timedelta

    job = (await memory.jobs.add(memory.new_job(policy=quick_policy()))).job
    [claimed] = await memory.jobs.claim([job.id], "w1")
    assert claimed.lease_token is not None
    lease = Lease(job_id=job.id, token=claimed.lease_token)
    await memory.jobs.settle([RetryLater(lease=lease, error="x", delay=timedelta(seconds=2))])
    memory.clock.advance(2)
    tick = tick_for(memory)
    reap_expired = memory.jobs.reap_expired

    async def unreachable(limit: int) -> tuple[list[object], list[object]]:
        raise Unavailable("postgres", "connection refused")

    memory.jobs.reap_expired = unreachable  # type: ignore[method-assign, assignment]
    with pytest.raises(Unavailable):
        await tick()
    memory.jobs.reap_expired = reap_expired  # type: ignore[method-assign]
    assert await queued_ids(memory) == []

    report = await tick()  # no clock advance: far within republish_after

    assert report.republished == 1
    assert await queued_ids(memory) == [job.id]


async def test_a_tick_that_only_pruned_says_so_in_its_log_line(
    memory: Memory, caplog: pytest.LogCaptureFixture
) -> None:
    job = (await memory.jobs.add(memory.new_job())).job
    await memory.jobs.cancel(job.id, None)
    memory.clock.advance(3601)
    settings = SchedulerSettings(tick_interval=0.01, retention_period=3600.0)
    tick = SchedulerTick(memory.jobs, memory.ready_queue, memory.hints, settings)
    stop = asyncio.Event()

    async def stop_after_the_first_tick() -> TickReport:
        report = await tick()
        stop.set()
        return report

    with caplog.at_level(logging.INFO, logger="taskforge.scheduler"):
        await run_scheduler(stop_after_the_first_tick, settings, stop)  # type: ignore[arg-type]

    assert (
        "tick: promoted=0 reaped=0 dead_lettered=0 republished=0 resynced=0 pruned=1 fired=0"
        in (caplog.messages)
    )


async def test_full_batch_asks_for_another_tick_at_once(memory: Memory) -> None:
    for _ in range(3):
        await memory.jobs.add(memory.new_job(delay=1.0))
    memory.clock.advance(1)
    settings = SchedulerSettings(batch_size=2, tick_interval=0.01, republish_after=10.0)
    tick = tick_for(memory, settings)

    first, second = await tick(), await tick()

    assert (first.republished, first.full) == (2, True)
    assert (second.republished, second.full) == (1, False)


@pytest.mark.parametrize(
    ("settings", "too_early", "due"),
    [
        pytest.param(
            SchedulerSettings(batch_size=100, retention_period=3600, prune_interval=60),
            59.0,
            60.0,
            id="every-60s",
        ),
        # The default: a little at a time beside the load, not a minute's worth of jobs in
        # one burst of full batches.
        pytest.param(
            SchedulerSettings(batch_size=100, retention_period=3600), 0.9, 1.0, id="default-1s"
        ),
    ],
)
async def test_finished_jobs_older_than_the_retention_period_are_pruned(
    memory: Memory, settings: SchedulerSettings, too_early: float, due: float
) -> None:
    job = (await memory.jobs.add(memory.new_job())).job
    await memory.jobs.cancel(job.id, None)
    elapsed = 0.0
    tick = SchedulerTick(
        memory.jobs, memory.ready_queue, memory.hints, settings, monotonic=lambda: elapsed
    )

    assert (await tick()).pruned == 0  # swept at once: nothing old enough yet
    memory.clock.advance(3601)
    elapsed = too_early
    assert (await tick()).pruned == 0  # the next sweep waits for the prune interval
    elapsed = due
    assert (await tick()).pruned == 1
    assert await memory.jobs.get(job.id) is None


async def test_the_memory_store_keeps_nothing_of_the_jobs_it_prunes(memory: Memory) -> None:
    # `taskforge dev` may run for weeks: pruned jobs must not leave their keys behind.
    for number in range(3):
        job = (
            await memory.jobs.add(
                memory.new_job(idempotency_key=f"k{number}", unique_key=f"u{number}")
            )
        ).job
        await memory.jobs.cancel(job.id, None)
    holder = (await memory.jobs.add(memory.new_job(unique_key="u0"))).job  # u0 taken again
    memory.clock.advance(3601)

    assert await memory.jobs.prune_finished(3600, 100) == 3

    state = memory.state
    assert list(state.jobs) == [holder.id]
    assert state.by_idempotency_key == {}
    assert state.by_unique_key == {("jobs:ready", "u0"): holder.id}
    assert list(state.published_at) == [holder.id]


async def test_zero_retention_keeps_finished_jobs_forever(memory: Memory) -> None:
    job = (await memory.jobs.add(memory.new_job())).job
    await memory.jobs.cancel(job.id, None)
    memory.clock.advance(10 * 365 * 24 * 3600)

    report = await tick_for(memory, SchedulerSettings(retention_period=0))()

    assert report.pruned == 0
    assert await memory.jobs.get(job.id) is not None


async def test_a_retry_is_requeued_in_a_span_of_its_jobs_trace(memory: Memory) -> None:
    from datetime import timedelta

    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    traced = (await memory.jobs.add(memory.new_job(traceparent=traceparent))).job
    untraced = (await memory.jobs.add(memory.new_job())).job
    for job in (traced, untraced):
        [claimed] = await memory.jobs.claim([job.id], "w1")
        assert claimed.lease_token is not None
        lease = Lease(job_id=job.id, token=claimed.lease_token)
        await memory.jobs.settle([RetryLater(lease=lease, error="x", delay=timedelta(0))])
    tracer = RecordingTracer()

    report = await SchedulerTick(memory.jobs, memory.ready_queue, memory.hints, SETTINGS, tracer)()

    assert report.promoted == 2
    [span] = tracer.spans  # a job outside any trace gets no span of its own
    assert span.name == REQUEUE_SPAN
    assert span.parent == traceparent
    assert span.attributes == {
        "job_id": str(traced.id),
        "queue": "jobs:ready",
        "reason": "retry due",
    }
    assert span.ended


class FlakyNotices:
    """A listener whose first `listen` fails and whose connection is lost after one notice."""

    def __init__(self) -> None:
        self.listens = 0
        self.closed = 0
        self.notices: asyncio.Queue[bool] = asyncio.Queue()

    async def listen(self) -> None:
        self.listens += 1
        if self.listens == 1:
            raise Unavailable("postgres", "refused")

    async def wait(self) -> None:
        if not await self.notices.get():
            raise Unavailable("postgres", "lost")

    async def close(self) -> None:
        self.closed += 1


async def test_the_new_job_listener_listens_again_after_failures_and_wakes_the_scheduler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from taskforge.application import scheduler

    monkeypatch.setattr(scheduler, "LISTEN_RETRY", (0.001, 0.002))
    notices, woken, stop = FlakyNotices(), asyncio.Event(), asyncio.Event()
    listening = asyncio.create_task(scheduler.listen_for_new_jobs(notices, woken, stop))
    notices.notices.put_nowait(False)  # lost after the second listen
    notices.notices.put_nowait(True)  # a notice on the third
    await asyncio.wait_for(woken.wait(), 5)

    stop.set()
    await asyncio.wait_for(listening, 5)
    assert notices.listens == 3
    assert notices.closed >= 3  # after each failure, and at the end


async def test_jobs_are_republished_at_their_priority_highest_first(memory: Memory) -> None:
    enqueue = EnqueueJob(memory.jobs, memory.hints)
    low = (await enqueue(memory.new_job(delay=30.0, priority=9))).job
    high = (await enqueue(memory.new_job(delay=30.0, priority=0))).job
    memory.clock.advance(30)

    await tick_for(memory)()

    hints = await memory.ready_queue.pop(["jobs:ready"], 10, 0)
    assert [(hint.job_id, hint.priority) for hint in hints] == [(high.id, 0), (low.id, 9)]


UNREACHABLE = SchedulerSettings(
    batch_size=100,
    tick_interval=0.01,
    republish_after=10.0,
    queue_grace=0.05,
    queue_retry_interval=5.0,
)


@dataclass
class UnreachableQueue:
    """A scheduler's tick on `memory`'s store whose ready queue is `queue`, and the seconds
    its `monotonic` reads."""

    tick: SchedulerTick
    queue: FreezableReadyQueue
    elapsed: list[float]


def ticking(memory: Memory, queue: FreezableReadyQueue) -> UnreachableQueue:
    """A tick with UNREACHABLE's settings on `memory`'s store and `queue`, its clock at 0."""
    elapsed = [0.0]
    tick = SchedulerTick(
        memory.jobs, queue, HintDispatcher(queue), UNREACHABLE, monotonic=lambda: elapsed[0]
    )
    return UnreachableQueue(tick, queue, elapsed)


@pytest.fixture
def unreachable(memory: Memory) -> UnreachableQueue:
    return ticking(memory, FreezableReadyQueue())


async def within_a_second(tick: SchedulerTick) -> TickReport:
    """A tick, which fails the test rather than hang it should it wait for the queue."""
    return await asyncio.wait_for(tick(), timeout=1.0)


async def expired_lease_and_due_retry(memory: Memory) -> tuple[UUID, UUID]:
    """A job whose worker is gone (its lease expired) and a failed job whose retry is due."""
    from datetime import timedelta

    running = (await memory.jobs.add(memory.new_job(visibility_timeout=5.0))).job
    failed = (await memory.jobs.add(memory.new_job(policy=quick_policy()))).job
    [claimed, _] = await memory.jobs.claim([failed.id, running.id], "w1")
    assert claimed.lease_token is not None
    lease = Lease(job_id=failed.id, token=claimed.lease_token)
    await memory.jobs.settle([RetryLater(lease=lease, error="x", delay=timedelta(seconds=2))])
    memory.clock.advance(6)
    return running.id, failed.id


@pytest.mark.parametrize("outage", ["frozen", "down"])
async def test_an_unreachable_ready_queue_holds_back_no_lease_reaping_or_retry(
    memory: Memory, unreachable: UnreachableQueue, outage: str
) -> None:
    running, failed = await expired_lease_and_due_retry(memory)
    unreachable.queue.mode = outage

    # Each call to a frozen queue waits the grace (0.05 s): a tick takes at most a few.
    report = await within_a_second(unreachable.tick)

    assert (report.reaped, report.promoted) == (1, 1)
    for job_id in (running, failed):
        job = await memory.jobs.get(job_id)
        assert job is not None
        assert job.state is JobState.PENDING
        # Unpublished: the first tick that reaches the queue again sends its hint.
        assert memory.state.published_at[job_id] is None


async def test_hints_held_back_are_published_as_soon_as_the_ready_queue_answers(
    memory: Memory, unreachable: UnreachableQueue
) -> None:
    running, failed = await expired_lease_and_due_retry(memory)
    unreachable.queue.mode = "frozen"
    await within_a_second(unreachable.tick)
    unreachable.queue.mode = None

    before_retry = await within_a_second(unreachable.tick)
    unreachable.elapsed[0] += UNREACHABLE.queue_retry_interval
    retried = await within_a_second(unreachable.tick)

    popped = await unreachable.queue.pop(["jobs:ready"], 10, 0)
    assert before_retry.republished == 0  # the queue is not asked before its retry is due
    assert retried.republished == 2
    assert {hint.job_id for hint in popped} == {running, failed}


async def test_ticks_while_the_ready_queue_is_frozen_keep_their_pace_and_log_it_once(
    memory: Memory, unreachable: UnreachableQueue, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable.queue.mode = "frozen"

    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.INFO, logger="taskforge.scheduler"):
        for _ in range(20):
            await within_a_second(unreachable.tick)  # only the first waits the grace
        unreachable.elapsed[0] += UNREACHABLE.queue_retry_interval
        await within_a_second(unreachable.tick)  # its first call is still out: not again
        took = loop.time() - started
        unreachable.queue.mode = None
        unreachable.elapsed[0] += UNREACHABLE.queue_retry_interval
        await within_a_second(unreachable.tick)

    messages = [record.getMessage() for record in caplog.records]
    assert took < 20 * UNREACHABLE.queue_grace, took
    assert sum("ready queue not answering (no answer within 0.05s)" in m for m in messages) == 1
    assert sum("ready queue answers again" in m for m in messages) == 1


class SlowToConnect(FreezableReadyQueue):
    """A ready queue whose client needs `connecting` seconds to open its connection (asking
    Sentinels in turn, the first of them gone): a call cancelled meanwhile leaves it
    unconnected, and the next call starts over."""

    def __init__(self, connecting: float) -> None:
        super().__init__()
        self.connecting = connecting
        self.connected = False

    async def check_intact(self) -> bool:
        if not self.connected:
            await asyncio.sleep(self.connecting)
            self.connected = True
        return await super().check_intact()


async def test_a_connection_slower_to_open_than_the_grace_is_not_started_over_at_every_try(
    memory: Memory,
) -> None:
    queue = SlowToConnect(connecting=3 * UNREACHABLE.queue_grace)
    scheduler = ticking(memory, queue)
    tick, elapsed = scheduler.tick, scheduler.elapsed
    job = (await memory.jobs.add(memory.new_job())).job
    memory.state.published_at[job.id] = None  # stored by an application's transaction

    first = await within_a_second(tick)  # the connection outlives the grace: no hint yet
    for _ in range(4):  # it opens meanwhile, on its own
        await asyncio.sleep(queue.connecting)
        elapsed[0] += UNREACHABLE.queue_retry_interval
        if (report := await within_a_second(tick)).republished:
            break

    assert first.republished == 0
    assert queue.connected
    assert report.republished == 1
    [hint] = await queue.pop(["jobs:ready"], 10, 0)
    assert hint.job_id == job.id


async def test_a_lasting_outage_is_recalled_in_the_log_every_minute(
    unreachable: UnreachableQueue, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable.queue.mode = "down"

    with caplog.at_level(logging.WARNING, logger="taskforge.scheduler"):
        for _ in range(30):  # 150 s of ticks, a try every 5 s
            await within_a_second(unreachable.tick)
            unreachable.elapsed[0] += UNREACHABLE.queue_retry_interval

    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3
    assert messages[0].startswith("ready queue not answering (redis unavailable")
    assert messages[1].startswith("ready queue still not answering after 60s (redis")
    assert messages[2].startswith("ready queue still not answering after 120s (redis")


class RestartedEmpty(SlowToConnect):
    """A Redis that came back empty, behind a connection slower to open than the grace: the
    first check finds the loss (and marks the queue intact), after its grace."""

    def __init__(self, connecting: float) -> None:
        super().__init__(connecting)
        self.checks = 0

    async def check_intact(self) -> bool:
        await super().check_intact()
        self.checks += 1
        return self.checks > 1


async def test_a_loss_found_by_a_check_that_outlived_its_grace_is_resynced(
    memory: Memory,
) -> None:
    queue = RestartedEmpty(connecting=3 * UNREACHABLE.queue_grace)
    scheduler = ticking(memory, queue)
    tick, elapsed = scheduler.tick, scheduler.elapsed
    job = (await memory.jobs.add(memory.new_job())).job  # published: its hint was in Redis

    first = await within_a_second(tick)
    await asyncio.sleep(2 * queue.connecting)  # the check answers "lost", late
    elapsed[0] += UNREACHABLE.queue_retry_interval
    second = await within_a_second(tick)  # the queue now says "intact": its own write

    assert (first.resynced, second.resynced, second.republished) == (0, 1, 1)
    [hint] = await queue.pop(["jobs:ready"], 10, 0)
    assert hint.job_id == job.id
