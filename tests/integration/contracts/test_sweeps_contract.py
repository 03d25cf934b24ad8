"""Contract: the scheduler's sweeps (promote_due, reap_expired, find_unpublished,
count_pending, mark_unpublished), alone and with several schedulers at once.

Time-dependent cases use short real leases and poll with a deadline; none compares the
test's clock with the store's.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from uuid import UUID, uuid4

from taskforge.application.ports import STALE_LOOKOUT, DeadLetterStore
from taskforge.domain.job import Job, Lease, ReadyHint, ReapedDeadLetter
from taskforge.domain.new_job import NewJob
from taskforge.domain.outcome import EXHAUSTED_REASON, LEASE_EXPIRED_ERROR, RetryLater, Succeeded
from taskforge.domain.policy import RetryPolicy
from taskforge.domain.states import JobState
from tests.job_stores import JobRoles

JobFactory = Callable[..., NewJob]
T = TypeVar("T")

DEADLINE = 15.0
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """Call `probe` until `done` accepts its result; fail after DEADLINE seconds."""
    give_up = time.monotonic() + DEADLINE
    while True:
        result = await probe()
        if done(result):
            return result
        assert time.monotonic() < give_up, f"condition not reached in {DEADLINE}s: {result!r}"
        await asyncio.sleep(0.05)


def lease_of(job: Job) -> Lease:
    assert job.lease_token is not None
    return Lease(job_id=job.id, token=job.lease_token)


async def failed_job(jobs: JobRoles, new_job: JobFactory, retry_in: timedelta) -> Job:
    job = (await jobs.add(new_job())).job
    [claimed] = await jobs.claim([job.id], "worker-1")
    await jobs.settle([RetryLater(lease=lease_of(claimed), error="boom", delay=retry_in)])
    return claimed


async def stored(jobs: JobRoles, job_id: UUID) -> Job:
    job = await jobs.get(job_id)
    assert job is not None
    return job


async def test_promote_due_requeues_failed_jobs_whose_retry_time_passed(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    due = await failed_job(jobs, new_job, retry_in=timedelta(0))
    later = await failed_job(jobs, new_job, retry_in=timedelta(hours=1))

    hints = await jobs.promote_due(100)

    promoted = await stored(jobs, due.id)
    assert hints == [ReadyHint(due.queue, due.id)]
    assert promoted.state is JobState.PENDING
    assert (promoted.attempt_count, promoted.retry_count) == (1, 1)
    assert promoted.next_run_at == promoted.updated_at
    assert promoted.last_error == "boom"
    assert (await stored(jobs, later.id)).state is JobState.FAILED
    [claimed] = await jobs.claim([due.id], "worker-2")
    assert claimed.attempt_count == 2


async def test_promote_due_takes_the_oldest_due_first_up_to_the_limit(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    # Settled one after another, so their retry times are in this order.
    first, second, third = [
        await failed_job(jobs, new_job, retry_in=timedelta(0)) for _ in range(3)
    ]

    batch = await jobs.promote_due(2)
    rest = await jobs.promote_due(2)

    assert [hint.job_id for hint in batch] == [first.id, second.id]
    assert [hint.job_id for hint in rest] == [third.id]
    assert await jobs.promote_due(2) == []


async def test_concurrent_promote_due_callers_never_share_a_job(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    ids = {(await failed_job(jobs, new_job, retry_in=timedelta(0))).id for _ in range(30)}

    results = await asyncio.gather(*(jobs.promote_due(12) for _ in range(3)))

    promoted = Counter(hint.job_id for hints in results for hint in hints)
    assert set(promoted) == ids
    assert set(promoted.values()) == {1}
    for job_id in ids:
        assert (await stored(jobs, job_id)).retry_count == 1


async def test_reap_expired_requeues_a_job_whose_lease_ran_out(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    job = (await jobs.add(new_job(visibility_timeout=1))).job
    [claimed] = await jobs.claim([job.id], "worker-1")

    hints, dead = await eventually(lambda: jobs.reap_expired(100), lambda result: result[0] != [])

    reaped = await stored(jobs, job.id)
    assert (hints, dead) == ([ReadyHint(job.queue, job.id)], [])
    assert reaped.state is JobState.PENDING
    assert reaped.last_error == LEASE_EXPIRED_ERROR
    assert [(e.attempt, e.error, e.traceback) for e in reaped.errors] == [
        (1, LEASE_EXPIRED_ERROR, None)
    ]
    assert reaped.attempt_count == 1
    assert reaped.next_run_at == reaped.updated_at
    assert (reaped.lease_owner, reaped.lease_token, reaped.lease_expires_at) == (None, None, None)
    assert await jobs.settle([Succeeded(lease=lease_of(claimed))]) == set()


async def test_reap_expired_dead_letters_a_job_with_no_attempts_left(
    jobs: JobRoles, dead_letters: DeadLetterStore, new_job: JobFactory
) -> None:
    last_try = new_job(
        visibility_timeout=1, policy=RetryPolicy(max_attempts=1), traceparent=TRACEPARENT
    )
    job = (await jobs.add(last_try)).job
    await jobs.claim([job.id], "worker-1")

    hints, dead = await eventually(lambda: jobs.reap_expired(100), lambda result: result[1] != [])

    reaped = await stored(jobs, job.id)
    entry = await dead_letters.get(job.id)
    assert hints == []
    assert dead == [
        ReapedDeadLetter(
            job_id=job.id,
            queue=job.queue,
            job_type="email",
            reason=EXHAUSTED_REASON,
            last_error=LEASE_EXPIRED_ERROR,
            traceparent=TRACEPARENT,
        )
    ]
    assert reaped.state is JobState.DLQ
    assert (reaped.reason, reaped.last_error) == (EXHAUSTED_REASON, LEASE_EXPIRED_ERROR)
    assert reaped.finished_at is not None
    assert entry is not None
    assert (entry.reason, entry.last_error, entry.attempts) == (
        EXHAUSTED_REASON,
        LEASE_EXPIRED_ERROR,
        1,
    )


async def test_reap_expired_leaves_live_leases_alone(jobs: JobRoles, new_job: JobFactory) -> None:
    job = (await jobs.add(new_job(visibility_timeout=300))).job
    [claimed] = await jobs.claim([job.id], "worker-1")

    assert await jobs.reap_expired(100) == ([], [])
    assert await jobs.get(job.id) == claimed


async def test_concurrent_reapers_never_share_a_job(jobs: JobRoles, new_job: JobFactory) -> None:
    added = await jobs.add_many([new_job(visibility_timeout=1) for _ in range(24)])
    ids = {result.job.id for result in added}
    await jobs.claim(list(ids), "worker-1")
    reaped: Counter[UUID] = Counter()

    async def sweep() -> Counter[UUID]:
        results = await asyncio.gather(*(jobs.reap_expired(7) for _ in range(3)))
        for hints, dead in results:
            assert dead == []
            reaped.update(hint.job_id for hint in hints)
        return reaped

    await eventually(sweep, lambda seen: set(seen) == ids)

    assert set(reaped.values()) == {1}


async def test_find_unpublished_skips_jobs_with_a_fresh_hint(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    await jobs.add(new_job())

    assert await jobs.find_unpublished({queue_name: 0}, 100, 3600) == []


async def test_find_unpublished_returns_a_delayed_job_once_it_is_due(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    job = (await jobs.add(new_job(delay=0.3))).job

    hints = await eventually(
        lambda: jobs.find_unpublished({queue_name: 0}, 100, 3600), lambda found: found != []
    )

    assert hints == [ReadyHint(job.queue, job.id)]
    assert await jobs.find_unpublished({queue_name: 0}, 100, 3600) == []


async def test_find_never_published_returns_a_due_job_no_hint_was_published_for(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    delayed = (await jobs.add(new_job(delay=0.3))).job
    await jobs.add(new_job())  # due at once: stored as published (its hint is pushed)

    hints = await eventually(lambda: jobs.find_never_published(100), lambda found: found != [])

    assert hints == [ReadyHint(delayed.queue, delayed.id)]
    assert await jobs.find_never_published(100) == []  # marked published
    assert await jobs.find_unpublished({queue_name: 0}, 100, 3600) == []


async def test_find_never_published_leaves_jobs_whose_hint_went_stale(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    await jobs.add(new_job())

    await asyncio.sleep(0.3)

    assert await jobs.find_never_published(100) == []
    assert len(await jobs.find_unpublished({queue_name: 0}, 100, 0.2)) == 1


async def test_find_unpublished_returns_a_job_whose_hint_went_stale(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    job = (await jobs.add(new_job())).job

    hints = await eventually(
        lambda: jobs.find_unpublished({queue_name: 0}, 100, 0.2), lambda found: found != []
    )

    assert hints == [ReadyHint(job.queue, job.id)]
    assert await jobs.find_unpublished({queue_name: 0}, 100, 3600) == []


async def test_mark_unpublished_makes_every_pending_job_due_for_a_new_hint(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    now = datetime.now(UTC)
    older = (await jobs.add(new_job(run_at=now - timedelta(minutes=2)))).job
    newer = (await jobs.add(new_job(run_at=now - timedelta(minutes=1)))).job
    await jobs.add(new_job(run_at=now + timedelta(hours=1)))  # pending, but not due
    running = (await jobs.add(new_job())).job
    await jobs.claim([running.id], "worker-1")

    marked = await jobs.mark_unpublished()

    hints = await jobs.find_unpublished({queue_name: 0}, 100, 3600)
    assert marked == 3
    assert hints == [ReadyHint(older.queue, older.id), ReadyHint(newer.queue, newer.id)]
    assert await jobs.find_unpublished({queue_name: 0}, 100, 3600) == []


async def test_mark_unpublished_of_given_jobs_makes_those_still_pending_due_for_a_hint(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    pending, _other = [added.job for added in await jobs.add_many([new_job(), new_job()])]
    await jobs.mark_unpublished()
    assert len(await jobs.find_never_published(100)) == 2  # both published now
    running = (await jobs.add(new_job())).job
    await jobs.claim([running.id], "worker-1")

    marked = await jobs.mark_unpublished([pending.id, running.id])

    assert marked == 1  # a running job has no hint to send
    assert await jobs.find_never_published(100) == [ReadyHint(pending.queue, pending.id)]
    assert await jobs.mark_unpublished([]) == 0


async def test_find_unpublished_respects_its_limit(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    await jobs.add_many([new_job() for _ in range(5)])
    await jobs.mark_unpublished()

    first = await jobs.find_unpublished({queue_name: 0}, 3, 3600)
    rest = await jobs.find_unpublished({queue_name: 0}, 3, 3600)

    assert (len(first), len(rest)) == (3, 2)
    assert {hint.job_id for hint in first}.isdisjoint(hint.job_id for hint in rest)


async def test_concurrent_find_unpublished_callers_never_share_a_job(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    ids = {added.job.id for added in await jobs.add_many([new_job() for _ in range(30)])}
    await jobs.mark_unpublished()

    results = await asyncio.gather(
        *(jobs.find_unpublished({queue_name: 0}, 12, 3600) for _ in range(3))
    )

    published = Counter(hint.job_id for hints in results for hint in hints)
    assert set(published) == ids
    assert set(published.values()) == {1}


async def finished_job(jobs: JobRoles, new_job: JobFactory, **fields: object) -> Job:
    job = (await jobs.add(new_job(**fields))).job
    [claimed] = await jobs.claim([job.id], "worker-1")
    await jobs.settle([Succeeded(lease=lease_of(claimed))])
    return await stored(jobs, job.id)


async def test_prune_finished_deletes_old_succeeded_and_cancelled_jobs_only(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    succeeded = await finished_job(jobs, new_job, idempotency_key=f"prune-{uuid4()}")
    cancelled = (await jobs.add(new_job())).job
    await jobs.cancel(cancelled.id, None)
    pending = (await jobs.add(new_job())).job
    dead = (await jobs.add(new_job())).job
    await jobs.dead_letter(dead.id, None)
    await asyncio.sleep(0.2)

    pruned = await jobs.prune_finished(0.1, 100)

    assert pruned == 2
    assert await jobs.get(succeeded.id) is None
    assert await jobs.get(cancelled.id) is None
    assert (await stored(jobs, pending.id)).state is JobState.PENDING
    assert (await stored(jobs, dead.id)).state is JobState.DLQ  # DLQ is kept for operators
    again, created, _ = await jobs.add(new_job(idempotency_key=succeeded.idempotency_key))
    assert created  # the pruned job's key is free again
    assert again.id != succeeded.id


async def test_prune_finished_keeps_recent_jobs_and_respects_its_limit(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    for _ in range(3):
        await finished_job(jobs, new_job)

    assert await jobs.prune_finished(3600, 100) == 0  # finished just now
    await asyncio.sleep(0.2)
    assert await jobs.prune_finished(0.1, 2) == 2
    assert await jobs.prune_finished(0.1, 2) == 1


async def test_prune_finished_deletes_the_longest_finished_first(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    created_first = (await jobs.add(new_job())).job
    created_second = await finished_job(jobs, new_job)
    [claimed] = await jobs.claim([created_first.id], "worker-1")
    await jobs.settle([Succeeded(lease=lease_of(claimed))])
    await asyncio.sleep(0.2)

    assert await jobs.prune_finished(0.1, 1) == 1

    assert await jobs.get(created_second.id) is None  # it finished first
    assert await jobs.get(created_first.id) is not None


async def test_prune_finished_takes_the_longest_finished_first_whatever_their_state(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    cancelled = (await jobs.add(new_job())).job
    await jobs.cancel(cancelled.id, None)
    await asyncio.sleep(0.05)
    succeeded = await finished_job(jobs, new_job)
    await asyncio.sleep(0.2)

    assert await jobs.prune_finished(0.1, 1) == 1

    assert await jobs.get(cancelled.id) is None  # it finished first
    assert await jobs.get(succeeded.id) is not None


async def test_folding_job_counts_changes_no_count(jobs: JobRoles, new_job: JobFactory) -> None:
    done = await finished_job(jobs, new_job)
    await jobs.add(new_job())
    dead = (await jobs.add(new_job())).job
    await jobs.dead_letter(dead.id, None)
    before = await jobs.stats()

    await jobs.fold_job_counts()
    await jobs.fold_job_counts()  # nothing left to fold

    assert await jobs.stats() == before
    [queue] = [entry for entry in before if entry.queue == done.queue]
    assert {state: n for state, n in queue.counts.items() if n} == {
        JobState.SUCCEEDED: 1,
        JobState.PENDING: 1,
        JobState.DLQ: 1,
    }


async def test_every_sweep_returns_hints_that_carry_the_jobs_traceparent(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    retried = (await jobs.add(new_job(traceparent=TRACEPARENT))).job
    [claimed] = await jobs.claim([retried.id], "worker-1")
    await jobs.settle([RetryLater(lease=lease_of(claimed), error="boom", delay=timedelta(0))])
    untraced = await failed_job(jobs, new_job, retry_in=timedelta(0))
    expiring = (await jobs.add(new_job(visibility_timeout=1, traceparent=TRACEPARENT))).job
    await jobs.claim([expiring.id], "worker-1")
    delayed = (await jobs.add(new_job(delay=0.3, traceparent=TRACEPARENT))).job

    promoted = await jobs.promote_due(100)
    reaped, _ = await eventually(lambda: jobs.reap_expired(100), lambda result: result[0] != [])
    published = await eventually(
        lambda: jobs.find_unpublished({queue_name: 0}, 100, 3600),
        lambda found: delayed.id in {hint.job_id for hint in found},
    )

    assert {(hint.job_id, hint.traceparent) for hint in promoted} == {
        (retried.id, TRACEPARENT),
        (untraced.id, None),
    }
    assert [(hint.job_id, hint.traceparent) for hint in reaped] == [(expiring.id, TRACEPARENT)]
    assert (delayed.id, TRACEPARENT) in [(hint.job_id, hint.traceparent) for hint in published]


async def test_mark_unpublished_covers_a_backlog_larger_than_one_batch(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    await jobs.add_many([new_job() for _ in range(2500)])

    assert await jobs.mark_unpublished() == 2500
    assert len(await jobs.find_unpublished({queue_name: 0}, 5000, 3600)) == 2500


async def test_count_pending_counts_pending_jobs_due_or_not_per_unpaused_queue(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    other, paused = queue_name + "-other", queue_name + "-paused"
    for _ in range(3):
        await jobs.add(new_job())
    await jobs.add(new_job(delay=3600.0))
    await jobs.add(new_job(queue=other))
    claimed = (await jobs.add(new_job())).job
    await jobs.claim([claimed.id], "w1")
    await jobs.pause(paused)
    await jobs.add(new_job(queue=paused))

    counts = await jobs.count_pending()

    assert {queue: counts.get(queue) for queue in (queue_name, other, paused)} == {
        queue_name: 4,
        other: 1,
        paused: None,
    }


async def test_find_unpublished_takes_only_what_a_queue_lacks_and_leaves_the_rest_alone(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    now = datetime.now(UTC)
    ids = [
        (await jobs.add(new_job(run_at=now - timedelta(minutes=3 - n)))).job.id for n in range(3)
    ]
    await jobs.add(new_job(delay=3600.0))  # pending, not due: no hint owed to it
    await asyncio.sleep(0.3)

    covered = await jobs.find_unpublished({queue_name: 3}, 100, 0.2)
    short_by_two = await jobs.find_unpublished({queue_name: 1}, 100, 0.2)
    rest = await jobs.find_unpublished({queue_name: 0}, 100, 0.2)

    assert covered == []
    assert [hint.job_id for hint in short_by_two] == ids[:2]
    assert [hint.job_id for hint in rest] == ids[2:]  # the first call marked nothing


async def test_find_unpublished_looks_for_stale_hints_among_the_oldest_due_jobs_only(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    now = datetime.now(UTC)
    behind = (await jobs.add(new_job(run_at=now - timedelta(minutes=1)))).job
    await jobs.mark_unpublished()  # its hint is lost: never published, as far as the store knows
    ahead = [new_job(run_at=now - timedelta(minutes=10)) for _ in range(STALE_LOOKOUT)]
    await jobs.add_many(ahead)  # older due jobs, with fresh hints

    assert await jobs.find_unpublished({queue_name: 0}, 10, 3600) == []
    await jobs.claim([ahead[0].id], "w1")  # now `behind` is among the oldest
    assert await jobs.find_unpublished({queue_name: 0}, 10, 3600) == [
        ReadyHint(behind.queue, behind.id)
    ]
