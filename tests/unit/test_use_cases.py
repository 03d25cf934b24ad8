"""Use cases against the in-memory adapters, with a manual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from taskforge.adapters.memory.job_store import InMemoryJobStore
from taskforge.adapters.memory.ready_queue import InMemoryReadyQueue
from taskforge.application.enqueue import ENQUEUE_SPAN, EnqueueJob, EnqueueJobs
from taskforge.application.hints import HintDispatcher
from taskforge.application.jobs import (
    CancelJob,
    DeadLetterJob,
    GetDeadLetter,
    GetJob,
    GetStats,
    ListDeadLetters,
    ListJobs,
    ReplayDeadLetter,
    RetryJobNow,
)
from taskforge.application.ports import Added, ListFilter
from taskforge.domain.errors import (
    DeadLetterNotFound,
    InvalidTransition,
    JobNotFound,
    Unavailable,
    ValidationError,
)
from taskforge.domain.job import Job, Lease, ReadyHint
from taskforge.domain.new_job import NewJob
from taskforge.domain.outcome import DeadLettered, RetryLater, Succeeded
from taskforge.domain.states import JobState
from taskforge.domain.validation import Page

from .conftest import Memory, RecordingTracer

pytestmark = pytest.mark.asyncio


async def test_enqueue_stores_a_pending_job_and_publishes_a_hint(memory: Memory) -> None:
    result = await EnqueueJob(memory.jobs, memory.hints)(memory.new_job("email"))
    assert result.created
    assert result.job.state is JobState.PENDING
    assert result.job.next_run_at == memory.clock.now()
    hints = await memory.ready_queue.pop(["jobs:ready"], 10, 0)
    assert [hint.job_id for hint in hints] == [result.job.id]


async def test_reused_idempotency_key_returns_the_existing_job(memory: Memory) -> None:
    enqueue = EnqueueJob(memory.jobs, memory.hints)
    first = await enqueue(memory.new_job("email", idempotency_key="abc-123"))
    second = await enqueue(memory.new_job("email", idempotency_key="abc-123"))
    assert not second.created
    assert second.job.id == first.job.id
    assert (await memory.ready_queue.depth(["jobs:ready"]))["jobs:ready"] == 1


async def test_concurrent_enqueues_with_one_key_create_one_job(memory: Memory) -> None:
    enqueue = EnqueueJob(memory.jobs, memory.hints)
    results = await asyncio.gather(
        *(enqueue(memory.new_job(idempotency_key="same")) for _ in range(50))
    )
    assert len({result.job.id for result in results}) == 1
    assert sum(result.created for result in results) == 1
    assert len(memory.state.jobs) == 1


async def test_delayed_job_is_not_published_until_due(memory: Memory) -> None:
    result = await EnqueueJob(memory.jobs, memory.hints)(memory.new_job(delay=60.0))
    assert result.job.next_run_at > memory.clock.now()
    assert await memory.ready_queue.pop(["jobs:ready"], 10, 0) == []
    assert await memory.jobs.claim([result.job.id], "w1") == []


async def test_batch_enqueue_publishes_one_hint_per_new_due_job(memory: Memory) -> None:
    enqueue = EnqueueJobs(memory.jobs, memory.hints)
    results = await enqueue(
        [memory.new_job(), memory.new_job(delay=30.0), memory.new_job(idempotency_key="k")]
    )
    again = await enqueue([memory.new_job(idempotency_key="k")])
    assert [r.created for r in results] == [True, True, True]
    assert not again[0].created
    assert again[0].job.id == results[2].job.id
    await enqueue.drain()
    hints = await memory.ready_queue.pop(["jobs:ready"], 10, 0)
    assert {h.job_id for h in hints} == {results[0].job.id, results[2].job.id}


async def test_get_unknown_job_raises_not_found(memory: Memory) -> None:
    with pytest.raises(JobNotFound):
        await GetJob(memory.jobs)(memory.ids.new_id())


async def test_list_is_newest_first_and_filters_by_queue_and_state(memory: Memory) -> None:
    ids = []
    for queue in ("a", "b", "a"):
        job = (await memory.jobs.add(memory.new_job(queue=queue))).job
        ids.append(job.id)
        memory.clock.advance(1)
    await memory.jobs.cancel(ids[2], None)
    list_jobs = ListJobs(memory.jobs)
    everything, total = await list_jobs(ListFilter(), Page(limit=2, offset=0))
    assert total == 3
    assert [j.id for j in everything] == [ids[2], ids[1]]
    rest, _ = await list_jobs(ListFilter(), Page(limit=2, offset=2))
    assert [j.id for j in rest] == [ids[0]]
    pending_a, total_a = await list_jobs(ListFilter("a", JobState.PENDING), Page())
    assert total_a == 1
    assert [j.id for j in pending_a] == [ids[0]]


async def test_concurrent_claims_of_one_job_have_one_winner(memory: Memory) -> None:
    job = (await memory.jobs.add(memory.new_job())).job
    results = await asyncio.gather(*(memory.jobs.claim([job.id], f"w{i}") for i in range(10)))
    winners = [claimed for claimed in results if claimed]
    assert len(winners) == 1
    assert winners[0][0].attempt_count == 1
    assert winners[0][0].state is JobState.RUNNING


async def test_stale_lease_cannot_complete_job(memory: Memory) -> None:
    job = (await memory.jobs.add(memory.new_job(visibility_timeout=5.0))).job
    [first] = await memory.jobs.claim([job.id], "w1")
    memory.clock.advance(6)
    await memory.jobs.reap_expired(10)
    [second] = await memory.jobs.claim([job.id], "w2")
    assert first.lease_token is not None
    assert second.lease_token is not None
    stale = Lease(job_id=job.id, token=first.lease_token)
    assert await memory.jobs.settle([Succeeded(lease=stale)]) == set()
    assert await memory.jobs.heartbeat([stale]) == set()
    current = await memory.jobs.get(job.id)
    assert current is not None
    assert current.state is JobState.RUNNING
    assert current.lease_owner == "w2"


async def test_retryable_failure_waits_for_its_backoff(memory: Memory) -> None:
    job = (await memory.jobs.add(memory.new_job())).job
    [claimed] = await memory.jobs.claim([job.id], "w1")
    assert claimed.lease_token is not None
    lease = Lease(job_id=job.id, token=claimed.lease_token)
    from datetime import timedelta

    await memory.jobs.settle([RetryLater(lease=lease, error="boom", delay=timedelta(seconds=4))])
    failed = await memory.jobs.get(job.id)
    assert failed is not None
    assert failed.state is JobState.FAILED
    assert failed.last_error == "boom"
    assert await memory.jobs.promote_due(10) == []
    memory.clock.advance(4)
    [hint] = await memory.jobs.promote_due(10)
    promoted = await memory.jobs.get(job.id)
    assert hint.job_id == job.id
    assert promoted is not None
    assert promoted.state is JobState.PENDING
    assert promoted.retry_count == 1


async def test_cancel_then_retry_resets_the_attempts(memory: Memory) -> None:
    job = (await memory.jobs.add(memory.new_job())).job
    await memory.jobs.claim([job.id], "w1")
    cancelled = await CancelJob(memory.jobs)(job.id, "user requested")
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.reason == "user requested"
    assert cancelled.lease_token is None
    retried = await RetryJobNow(memory.jobs, memory.hints)(job.id)
    assert retried.state is JobState.PENDING
    assert retried.attempt_count == 0
    await memory.hints.drain()
    assert [h.job_id for h in await memory.ready_queue.pop(["jobs:ready"], 10, 0)] == [job.id]


async def test_cancel_of_a_succeeded_job_is_an_invalid_transition(memory: Memory) -> None:
    job = (await memory.jobs.add(memory.new_job())).job
    [claimed] = await memory.jobs.claim([job.id], "w1")
    assert claimed.lease_token is not None
    await memory.jobs.settle([Succeeded(lease=Lease(job_id=job.id, token=claimed.lease_token))])
    with pytest.raises(InvalidTransition) as caught:
        await CancelJob(memory.jobs)(job.id, None)
    assert caught.value.current == "SUCCEEDED"


async def test_retry_of_a_pending_job_is_refused(memory: Memory) -> None:
    job = (await memory.jobs.add(memory.new_job())).job
    with pytest.raises(InvalidTransition):
        await RetryJobNow(memory.jobs, memory.hints)(job.id)


async def test_dead_lettering_writes_the_dead_letter_and_replay_removes_it(memory: Memory) -> None:
    job = (await memory.jobs.add(memory.new_job("email", payload={"to": "a@b.com"}))).job
    [claimed] = await memory.jobs.claim([job.id], "w1")
    assert claimed.lease_token is not None
    lease = Lease(job_id=job.id, token=claimed.lease_token)
    await memory.jobs.settle(
        [DeadLettered(lease=lease, error="bad address", reason="terminal error")]
    )
    entry = await GetDeadLetter(memory.dead_letters)(job.id)
    assert (entry.payload, entry.reason, entry.last_error, entry.attempts) == (
        {"to": "a@b.com"},
        "terminal error",
        "bad address",
        1,
    )
    entries, total = await ListDeadLetters(memory.dead_letters)(Page())
    assert total == 1
    assert entries[0].job_id == job.id

    replayed = await ReplayDeadLetter(memory.jobs, memory.hints)(job.id)
    assert (replayed.state, replayed.attempt_count, replayed.retry_count) == (
        JobState.PENDING,
        0,
        0,
    )
    assert replayed.next_run_at == memory.clock.now()
    assert await memory.dead_letters.get(job.id) is None
    with pytest.raises(DeadLetterNotFound):
        await ReplayDeadLetter(memory.jobs, memory.hints)(job.id)


async def test_dead_lettering_by_hand_records_the_reason(memory: Memory) -> None:
    job = (await memory.jobs.add(memory.new_job())).job
    moved = await DeadLetterJob(memory.jobs)(job.id, "poison message")
    assert moved.state is JobState.DLQ
    entry = await memory.dead_letters.get(job.id)
    assert entry is not None
    assert entry.reason == "poison message"


async def test_release_hands_a_job_back_without_counting_the_attempt(memory: Memory) -> None:
    job = (await memory.jobs.add(memory.new_job())).job
    [claimed] = await memory.jobs.claim([job.id], "w1")
    assert claimed.lease_token is not None
    released = await memory.jobs.release([Lease(job_id=job.id, token=claimed.lease_token)])
    again = await memory.jobs.get(job.id)
    assert released == {job.id}
    assert again is not None
    assert again.state is JobState.PENDING
    assert again.attempt_count == 0


async def test_stats_count_states_per_queue_with_depth(memory: Memory) -> None:
    enqueue = EnqueueJob(memory.jobs, memory.hints)
    first = await enqueue(memory.new_job(queue="emails"))
    await enqueue(memory.new_job(queue="emails"))
    await CancelJob(memory.jobs)(first.job.id, None)
    stats = await GetStats(memory.jobs, memory.dead_letters, memory.ready_queue, "jobs:ready")()
    by_queue = {q.queue: q for q in stats.queues}
    assert set(by_queue) == {"emails", "jobs:ready"}
    assert by_queue["emails"].depth == 2
    assert by_queue["emails"].counts[JobState.PENDING] == 1
    assert by_queue["emails"].counts[JobState.CANCELLED] == 1
    assert stats.totals[JobState.PENDING] == 1
    assert stats.dead_letters == 0


class CountingRepository(InMemoryJobStore):
    """Counts batched writes and refuses any batch that holds a `poison` job."""

    def __init__(self, memory: Memory) -> None:
        super().__init__(memory.state)
        self.writes = 0

    async def add_many(self, jobs: Sequence[NewJob]) -> list[Added]:
        self.writes += 1
        await asyncio.sleep(0)  # a real store answers later; let other callers queue up
        if any(job.job_type == "poison" for job in jobs):
            raise ValueError("the store refused this batch")
        return await super().add_many(jobs)


async def test_overlapping_enqueues_share_writes(memory: Memory) -> None:
    jobs = CountingRepository(memory)
    enqueue = EnqueueJob(jobs, memory.hints)

    results = await asyncio.gather(*(enqueue(memory.new_job()) for _ in range(50)))

    assert all(result.created for result in results)
    assert len({result.job.id for result in results}) == 50
    assert jobs.writes <= 2
    assert (await memory.ready_queue.depth(["jobs:ready"]))["jobs:ready"] == 50


async def test_a_refused_job_fails_only_its_own_caller(memory: Memory) -> None:
    jobs = CountingRepository(memory)
    enqueue = EnqueueJob(jobs, memory.hints)

    results = await asyncio.gather(
        enqueue(memory.new_job()),
        enqueue(memory.new_job("poison")),
        enqueue(memory.new_job()),
        return_exceptions=True,
    )

    assert isinstance(results[1], ValueError)
    assert all(isinstance(result, Added) and result.created for result in (results[0], results[2]))
    assert len(memory.state.jobs) == 2


async def test_store_outage_fails_every_waiting_caller(memory: Memory) -> None:
    class DownRepository(InMemoryJobStore):
        async def add_many(self, jobs: Sequence[NewJob]) -> list[Added]:
            raise Unavailable("postgres", "connection refused")

    enqueue = EnqueueJob(DownRepository(memory.state), memory.hints)

    results = await asyncio.gather(
        *(enqueue(memory.new_job()) for _ in range(3)), return_exceptions=True
    )

    assert all(isinstance(result, Unavailable) for result in results)


class ContraryRepository(InMemoryJobStore):
    """Stores like the in-memory store, but answers `needs_hint` against the due times of the
    jobs it creates: a due job needs no hint, a delayed one does."""

    async def add_many(self, jobs: Sequence[NewJob]) -> list[Added]:
        return [
            added._replace(needs_hint=added.created and not added.needs_hint)
            for added in await super().add_many(jobs)
        ]


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "batch"])
async def test_enqueue_sends_the_hints_the_store_asks_for_and_no_other(
    memory: Memory, batched: bool
) -> None:
    jobs = ContraryRepository(memory.state)
    await jobs.add(memory.new_job(idempotency_key="taken"))
    due = memory.new_job()
    delayed = memory.new_job(delay=60.0)
    overdue = memory.new_job(run_at=memory.clock.now() - timedelta(minutes=5))
    existing = memory.new_job(idempotency_key="taken")
    enqueue_one = EnqueueJob(jobs, memory.hints)
    enqueue_many = EnqueueJobs(jobs, memory.hints)

    if batched:
        await enqueue_many([due, delayed, overdue, existing])
    else:
        for new_job in (due, delayed, overdue, existing):
            await enqueue_one(new_job)
    await enqueue_one.drain()
    await enqueue_many.drain()

    hints = await memory.ready_queue.pop(["jobs:ready"], 10, 0)
    assert [hint.job_id for hint in hints] == [delayed.id]


class BrokenAnswerRepository(InMemoryJobStore):
    """Stores every job, but answers a `poison` job with an offset-less due time, as the
    Postgres driver reads back a job stored at -infinity: comparing it with an aware
    datetime raises TypeError."""

    async def add_many(self, jobs: Sequence[NewJob]) -> list[Added]:
        await asyncio.sleep(0)  # let concurrent callers queue up behind this write
        return [
            added._replace(job=replace(added.job, next_run_at=datetime.min))
            if added.job.job_type == "poison"
            else added
            for added in await super().add_many(jobs)
        ]


async def test_a_job_whose_due_time_cannot_be_compared_is_answered_and_hinted_as_stored(
    memory: Memory,
) -> None:
    # The writer compares no due time: the store's answer says which jobs get a hint.
    enqueue = EnqueueJob(BrokenAnswerRepository(memory.state), memory.hints)
    batch = [memory.new_job("poison" if n == 3 else "noop") for n in range(20)]

    results = await asyncio.wait_for(asyncio.gather(*(enqueue(job) for job in batch)), 1.0)
    later = await asyncio.wait_for(enqueue(memory.new_job()), 1.0)
    await asyncio.wait_for(enqueue.drain(), 1.0)

    assert [result.job.id for result in results] == [job.id for job in batch]
    assert all(result.created for result in results) and later.created
    hints = await memory.ready_queue.pop(["jobs:ready"], 100, 0)
    assert {hint.job_id for hint in hints} == {job.id for job in batch} | {later.job.id}


class TypeErrorRepository(InMemoryJobStore):
    """Refuses, with an unforeseen TypeError, any write that holds a `poison` job."""

    async def add_many(self, jobs: Sequence[NewJob]) -> list[Added]:
        await asyncio.sleep(0)
        if any(job.job_type == "poison" for job in jobs):
            raise TypeError("can't compare offset-naive and offset-aware datetimes")
        return await super().add_many(jobs)


async def test_a_store_crash_on_one_job_fails_only_that_caller_and_the_writer_goes_on(
    memory: Memory,
) -> None:
    enqueue = EnqueueJob(TypeErrorRepository(memory.state), memory.hints)
    batch = [memory.new_job("poison" if n == 7 else "noop") for n in range(20)]

    results = await asyncio.wait_for(
        asyncio.gather(*(enqueue(job) for job in batch), return_exceptions=True), 1.0
    )
    later = await asyncio.wait_for(enqueue(memory.new_job()), 1.0)
    await asyncio.wait_for(enqueue.drain(), 1.0)

    assert isinstance(results.pop(7), TypeError)
    assert all(isinstance(result, Added) and result.created for result in results)
    assert later.created
    assert len(memory.state.jobs) == 20


class CancelledWriteRepository(InMemoryJobStore):
    """Its first write ends in CancelledError, as a write does when the writer task is
    cancelled (at shutdown) while the store works."""

    def __init__(self, memory: Memory) -> None:
        super().__init__(memory.state)
        self.cancel_next = True

    async def add_many(self, jobs: Sequence[NewJob]) -> list[Added]:
        await asyncio.sleep(0)
        if self.cancel_next:
            self.cancel_next = False
            raise asyncio.CancelledError
        return await super().add_many(jobs)


async def test_a_cancelled_write_answers_every_waiting_caller(memory: Memory) -> None:
    enqueue = EnqueueJob(CancelledWriteRepository(memory), memory.hints)

    results = await asyncio.wait_for(
        asyncio.gather(*(enqueue(memory.new_job()) for _ in range(5)), return_exceptions=True),
        1.0,
    )
    later = await asyncio.wait_for(enqueue(memory.new_job()), 1.0)
    await asyncio.wait_for(enqueue.drain(), 1.0)

    # 503 for the callers: whether a cancelled write was stored is unknown, so retry later.
    assert all(isinstance(result, Unavailable) for result in results)
    assert later.created


def ten_years_before_the_end_of_time(memory: Memory) -> NewJob:
    """A job whose delay (within MAX_DURATION) ends past year 9999 by the memory clock."""
    memory.clock.advance((datetime(9995, 1, 1, tzinfo=UTC) - memory.clock.now()).total_seconds())
    return memory.new_job(delay=10 * 365 * 24 * 3600.0)


async def test_a_delay_ending_past_year_9999_is_refused_naming_delay(memory: Memory) -> None:
    too_late = ten_years_before_the_end_of_time(memory)

    with pytest.raises(ValidationError) as caught:
        await EnqueueJob(memory.jobs, memory.hints)(too_late)

    assert caught.value.field == "delay"
    assert memory.state.jobs == {}


async def test_a_batch_with_a_delay_ending_past_year_9999_stores_nothing(memory: Memory) -> None:
    too_late = ten_years_before_the_end_of_time(memory)
    enqueue = EnqueueJobs(memory.jobs, memory.hints)

    with pytest.raises(ValidationError) as caught:
        await enqueue([memory.new_job(), too_late, memory.new_job()])

    assert caught.value.field == "delay"
    assert memory.state.jobs == {}


async def test_a_job_due_in_the_past_is_published_at_once(memory: Memory) -> None:
    past = memory.clock.now() - timedelta(minutes=5)

    enqueue_one = EnqueueJob(memory.jobs, memory.hints)
    enqueue_many = EnqueueJobs(memory.jobs, memory.hints)
    single = await enqueue_one(memory.new_job(run_at=past))
    [batched] = await enqueue_many([memory.new_job(run_at=past)])
    await enqueue_one.drain()
    await enqueue_many.drain()

    hints = await memory.ready_queue.pop(["jobs:ready"], 10, 0)
    assert {hint.job_id for hint in hints} == {single.job.id, batched.job.id}


class HeldReadyQueue(InMemoryReadyQueue):
    """A ready queue whose pushes wait until the test lets them through."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.pushes_started = 0

    async def push(self, hints: Sequence[ReadyHint]) -> None:
        self.pushes_started += 1
        await self.gate.wait()
        await super().push(hints)


ANSWER_WITHIN = 5.0
"""Far above any answer: the point is that an answer comes at all."""


async def dead_lettered_job(memory: Memory) -> Job:
    job = (await memory.jobs.add(memory.new_job())).job
    [claimed] = await memory.jobs.claim([job.id], "w1")
    assert claimed.lease_token is not None
    lease = Lease(job_id=job.id, token=claimed.lease_token)
    await memory.jobs.settle([DeadLettered(lease=lease, error="boom", reason="terminal error")])
    return job


async def test_retry_and_replay_answer_while_the_ready_queue_is_frozen(memory: Memory) -> None:
    frozen = HeldReadyQueue()  # its pushes never return, as with a Redis stopped by SIGSTOP
    hints = HintDispatcher(frozen)
    to_retry, to_replay = await dead_lettered_job(memory), await dead_lettered_job(memory)

    retried = await asyncio.wait_for(RetryJobNow(memory.jobs, hints)(to_retry.id), ANSWER_WITHIN)
    replayed = await asyncio.wait_for(
        ReplayDeadLetter(memory.jobs, hints)(to_replay.id), ANSWER_WITHIN
    )

    assert retried.state is replayed.state is JobState.PENDING
    frozen.gate.set()  # the queue thaws: the hints that waited in the background go out
    await asyncio.wait_for(hints.drain(), ANSWER_WITHIN)
    pushed = await frozen.pop(["jobs:ready"], 10, 0)
    assert [hint.job_id for hint in pushed] == [to_retry.id, to_replay.id]


async def test_the_next_enqueue_is_stored_while_the_last_hint_is_pushed(memory: Memory) -> None:
    ready_queue = HeldReadyQueue()
    enqueue = EnqueueJob(memory.jobs, HintDispatcher(ready_queue))

    first = await enqueue(memory.new_job())
    second = await asyncio.wait_for(enqueue(memory.new_job()), 1.0)

    assert first.created and second.created
    assert len(memory.state.jobs) == 2
    # One push in flight at a time: the second hint waits for the next push.
    assert ready_queue.pushes_started == 1
    ready_queue.gate.set()
    await enqueue.drain()
    hints = await ready_queue.pop(["jobs:ready"], 10, 0)
    assert {hint.job_id for hint in hints} == {first.job.id, second.job.id}


async def test_a_batch_is_answered_before_its_hints_are_pushed(memory: Memory) -> None:
    ready_queue = HeldReadyQueue()
    enqueue = EnqueueJobs(memory.jobs, HintDispatcher(ready_queue))

    [stored] = await asyncio.wait_for(enqueue([memory.new_job()]), 1.0)
    drained = asyncio.create_task(enqueue.drain())
    await asyncio.sleep(0.01)

    assert not drained.done()
    ready_queue.gate.set()
    await asyncio.wait_for(drained, 1.0)
    hints = await ready_queue.pop(["jobs:ready"], 10, 0)
    assert [hint.job_id for hint in hints] == [stored.job.id]


async def test_each_enqueued_job_keeps_the_traceparent_of_its_own_enqueue_span(
    memory: Memory,
) -> None:
    tracer = RecordingTracer()
    enqueue_one = EnqueueJob(memory.jobs, memory.hints, tracer)
    enqueue_many = EnqueueJobs(memory.jobs, memory.hints, tracer)

    single = await enqueue_one(memory.new_job("email"))
    batch = await enqueue_many([memory.new_job("email"), memory.new_job("sms")])

    assert [span.name for span in tracer.spans] == [ENQUEUE_SPAN] * 3
    for span, result in zip(tracer.spans, [single, *batch], strict=True):
        assert span.ended and span.error is None
        assert span.attributes["job_id"] == str(result.job.id)
        assert span.attributes["job_type"] == result.job.job_type
        stored = await memory.jobs.get(result.job.id)
        assert stored is not None and stored.traceparent == span.traceparent


async def test_an_existing_job_keeps_its_trace_and_the_span_names_it(memory: Memory) -> None:
    tracer = RecordingTracer()
    enqueue = EnqueueJob(memory.jobs, memory.hints, tracer)
    first = await enqueue(memory.new_job(idempotency_key="once"))

    again = await enqueue(memory.new_job(idempotency_key="once"))

    assert not again.created
    assert again.job.traceparent == tracer.spans[0].traceparent
    assert tracer.spans[1].attributes["existing"] is True
    assert tracer.spans[1].attributes["job_id"] == str(first.job.id)


async def test_a_failed_enqueue_fails_its_spans(memory: Memory) -> None:
    tracer = RecordingTracer()
    jobs = CountingRepository(memory)
    enqueue = EnqueueJobs(jobs, memory.hints, tracer)

    with pytest.raises(ValueError, match="refused"):
        await enqueue([memory.new_job(), memory.new_job("poison")])

    assert all(span.ended and span.error for span in tracer.spans)
    assert len(tracer.spans) == 2


async def test_concurrent_batches_never_wait_for_redis(memory: Memory) -> None:
    ready_queue = HeldReadyQueue()
    enqueue = EnqueueJobs(memory.jobs, HintDispatcher(ready_queue))

    first = await enqueue([memory.new_job(), memory.new_job()])
    await asyncio.sleep(0.01)  # its push is under way, held
    rest = await asyncio.wait_for(
        asyncio.gather(*(enqueue([memory.new_job(), memory.new_job()]) for _ in range(4))), 1.0
    )
    results = [first, *rest]

    assert len(memory.state.jobs) == 10
    assert ready_queue.pushes_started == 1  # the other hints wait together for the next push
    ready_queue.gate.set()
    await enqueue.drain()
    hints = await ready_queue.pop(["jobs:ready"], 100, 0)
    assert len(hints) == 10
    assert {hint.job_id for hint in hints} == {r.job.id for batch in results for r in batch}
    assert ready_queue.pushes_started == 2


async def test_giving_up_on_a_drain_leaves_the_hints_going(memory: Memory) -> None:
    ready_queue = HeldReadyQueue()
    enqueue = EnqueueJobs(memory.jobs, HintDispatcher(ready_queue))
    [first] = await enqueue([memory.new_job()])

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(enqueue.drain(), 0.05)
    [second] = await asyncio.wait_for(enqueue([memory.new_job()]), 1.0)
    ready_queue.gate.set()
    await asyncio.wait_for(enqueue.drain(), 1.0)

    hints = await ready_queue.pop(["jobs:ready"], 10, 0)
    assert [hint.job_id for hint in hints] == [first.job.id, second.job.id]


async def test_hints_beyond_the_backlog_limit_are_left_to_the_scheduler(
    memory: Memory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(HintDispatcher, "MAX_PENDING", 3)
    ready_queue = HeldReadyQueue()
    enqueue = EnqueueJobs(memory.jobs, HintDispatcher(ready_queue))

    stored = await enqueue([memory.new_job() for _ in range(5)])

    assert all(result.created for result in stored)
    assert "leaving new ones to the scheduler" in caplog.text
    ready_queue.gate.set()
    await enqueue.drain()
    hints = await ready_queue.pop(["jobs:ready"], 10, 0)
    assert [hint.job_id for hint in hints] == [result.job.id for result in stored[:3]]


class RecordingReadyQueue(InMemoryReadyQueue):
    """Keeps the priorities of each push, in the order the pushes came."""

    def __init__(self) -> None:
        super().__init__()
        self.pushed: list[list[int]] = []

    async def push(self, hints: Sequence[ReadyHint]) -> None:
        self.pushed.append([hint.priority for hint in hints])
        await super().push(hints)


async def test_a_backlog_of_hints_goes_out_highest_priority_first(
    memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(HintDispatcher, "PUSH_SIZE", 2)
    ready_queue = RecordingReadyQueue()
    enqueue = EnqueueJobs(memory.jobs, HintDispatcher(ready_queue))

    await enqueue([memory.new_job(priority=p) for p in (9, 5, 0, 9, 0)])
    await enqueue.drain()

    assert ready_queue.pushed == [[0, 0], [5, 9], [9]]


class SlowRepository(InMemoryJobStore):
    """The in-memory repository, taking `delay` seconds per write."""

    def __init__(self, memory: Memory) -> None:
        super().__init__(memory.state)
        self.delay = 0.0

    async def add_many(self, jobs: Sequence[NewJob]) -> list[Added]:
        await asyncio.sleep(self.delay)
        return await super().add_many(jobs)


async def test_giving_up_on_a_single_enqueue_drain_returns_at_once(memory: Memory) -> None:
    ready_queue = HeldReadyQueue()
    jobs = SlowRepository(memory)
    enqueue = EnqueueJob(jobs, HintDispatcher(ready_queue))
    await enqueue(memory.new_job())  # its hint's push is held
    jobs.delay = 0.3
    storing = asyncio.create_task(enqueue(memory.new_job()))  # the writer is busy
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    loop.call_later(2.0, ready_queue.gate.set)  # in case the drain waits for the push
    started = loop.time()

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(enqueue.drain(), 0.05)

    assert loop.time() - started < 1.0
    assert (await storing).created
    ready_queue.gate.set()
    await asyncio.wait_for(enqueue.drain(), 1.0)


class FailingReadyQueue(InMemoryReadyQueue):
    """A ready queue whose pushes fail after a pause, as an unreachable Redis does."""

    def __init__(self) -> None:
        super().__init__()
        self.pushes = 0

    async def push(self, hints: Sequence[ReadyHint]) -> None:
        self.pushes += 1
        await asyncio.sleep(0.05)
        raise Unavailable("redis", "connection timed out")


async def test_after_a_failed_push_the_waiting_hints_are_left_to_the_scheduler(
    memory: Memory, caplog: pytest.LogCaptureFixture
) -> None:
    ready_queue = FailingReadyQueue()
    enqueue = EnqueueJobs(memory.jobs, HintDispatcher(ready_queue))
    await enqueue([memory.new_job()])
    await asyncio.sleep(0)  # the first push is under way
    for _ in range(5):
        await enqueue([memory.new_job()])

    await asyncio.wait_for(enqueue.drain(), 1.0)

    assert ready_queue.pushes == 1  # not one timeout per waiting batch
    assert "leaving 5 more hint(s) to the scheduler" in caplog.text
    assert len(memory.state.jobs) == 6


class GatedRepository(InMemoryJobStore):
    """Writes wait for `gate`: a store that stopped answering."""

    def __init__(self, memory: Memory) -> None:
        super().__init__(memory.state)
        self.gate = asyncio.Event()
        self.writing = asyncio.Event()

    async def add_many(self, jobs: Sequence[NewJob]) -> list[Added]:
        self.writing.set()
        await self.gate.wait()
        return await super().add_many(jobs)


async def test_enqueues_beyond_the_waiting_bound_are_refused_at_once(memory: Memory) -> None:
    jobs = GatedRepository(memory)
    enqueue = EnqueueJob(jobs, memory.hints, max_waiting=3)
    first = asyncio.create_task(enqueue(memory.new_job()))  # taken by the writer
    await jobs.writing.wait()
    waiting = [asyncio.create_task(enqueue(memory.new_job())) for _ in range(3)]
    await asyncio.sleep(0)

    with pytest.raises(Unavailable, match="MAX_WAITING_ENQUEUES"):
        await enqueue(memory.new_job())

    jobs.gate.set()
    results = await asyncio.gather(first, *waiting)
    assert all(result.created for result in results)
    assert (await enqueue(memory.new_job())).created  # room again once the store answers
