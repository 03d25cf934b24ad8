"""Contract: LeaseStore. Claiming jobs (by id from hints, or due jobs of a queue) with a
fresh lease, and a worker's fenced writes (heartbeat, settle, release) under it.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from taskforge.application.ports import DeadLetterStore
from taskforge.domain.job import Job, Lease
from taskforge.domain.new_job import NewJob
from taskforge.domain.outcome import (
    DeadLettered,
    HandedBack,
    RetryLater,
    Settlement,
    Snoozed,
    Succeeded,
)
from taskforge.domain.states import JobState
from tests.job_stores import JobRoles

JobFactory = Callable[..., NewJob]


def lease_of(job: Job) -> Lease:
    assert job.lease_token is not None
    return Lease(job_id=job.id, token=job.lease_token)


async def test_claim_runs_the_job_under_a_fresh_lease(jobs: JobRoles, new_job: JobFactory) -> None:
    job = (await jobs.add(new_job(visibility_timeout=45))).job

    [claimed] = await jobs.claim([job.id], "worker-1")

    assert claimed.id == job.id
    assert claimed.state is JobState.RUNNING
    assert claimed.attempt_count == 1
    assert claimed.lease_owner == "worker-1"
    assert claimed.lease_token is not None
    assert claimed.started_at is not None
    assert claimed.lease_expires_at == claimed.started_at + timedelta(seconds=45)
    assert claimed.updated_at == claimed.started_at
    assert claimed.finished_at is None
    assert await jobs.get(job.id) == claimed


async def test_each_claim_issues_a_new_lease_token(jobs: JobRoles, new_job: JobFactory) -> None:
    job = (await jobs.add(new_job())).job
    [first] = await jobs.claim([job.id], "worker-1")
    await jobs.release([lease_of(first)])

    [second] = await jobs.claim([job.id], "worker-2")

    assert second.lease_token != first.lease_token
    assert second.lease_owner == "worker-2"


async def test_claim_skips_jobs_that_are_not_due(jobs: JobRoles, new_job: JobFactory) -> None:
    delayed = (await jobs.add(new_job(run_at=datetime.now(UTC) + timedelta(hours=1)))).job

    assert await jobs.claim([delayed.id], "worker-1") == []
    assert (await jobs.get(delayed.id)) == delayed


async def test_claim_takes_jobs_whose_run_at_has_passed(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    past = (await jobs.add(new_job(run_at=datetime.now(UTC) - timedelta(hours=1)))).job

    [claimed] = await jobs.claim([past.id], "worker-1")

    assert claimed.id == past.id


async def test_claim_skips_jobs_that_are_not_pending(jobs: JobRoles, new_job: JobFactory) -> None:
    running = (await jobs.add(new_job())).job
    done = (await jobs.add(new_job())).job
    [running_now] = await jobs.claim([running.id], "worker-1")
    [done_now] = await jobs.claim([done.id], "worker-1")
    await jobs.settle([Succeeded(lease=lease_of(done_now))])

    assert await jobs.claim([running.id, done.id, uuid4()], "worker-2") == []
    assert await jobs.get(running.id) == running_now


async def test_claim_returns_claimed_jobs_in_request_order_once_each(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    added = [result.job for result in await jobs.add_many([new_job() for _ in range(4)])]
    wanted = [added[2].id, added[0].id, added[2].id, uuid4(), added[3].id]

    claimed = await jobs.claim(wanted, "worker-1")

    assert [job.id for job in claimed] == [added[2].id, added[0].id, added[3].id]
    assert all(job.attempt_count == 1 for job in claimed)


async def test_claim_of_no_ids_claims_nothing(jobs: JobRoles) -> None:
    assert await jobs.claim([], "worker-1") == []


async def test_racing_claimers_claim_each_job_exactly_once(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    ids = [added.job.id for added in await jobs.add_many([new_job() for _ in range(60)])]
    shuffled = [random.sample(ids, len(ids)) for _ in range(6)]

    results = await asyncio.gather(
        *(jobs.claim(order, f"worker-{n}") for n, order in enumerate(shuffled))
    )

    claims = Counter(job.id for claimed in results for job in claimed)
    assert set(claims) == set(ids)
    assert set(claims.values()) == {1}
    for claimed in results:
        for job in claimed:
            stored = await jobs.get(job.id)
            assert stored is not None
            assert (stored.lease_owner, stored.lease_token) == (job.lease_owner, job.lease_token)
            assert stored.attempt_count == 1


async def test_claim_due_takes_oldest_due_jobs_of_the_named_queues(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    now = datetime.now(UTC)
    oldest = (await jobs.add(new_job(run_at=now - timedelta(minutes=3)))).job
    older = (await jobs.add(new_job(run_at=now - timedelta(minutes=2)))).job
    newer = (await jobs.add(new_job(run_at=now - timedelta(minutes=1)))).job
    await jobs.add(new_job(run_at=now + timedelta(hours=1)))
    await jobs.add(new_job(queue=f"{queue_name}-other", run_at=now - timedelta(hours=1)))

    first = await jobs.claim_due([queue_name], 2, "worker-1")
    rest = await jobs.claim_due([queue_name], 10, "worker-1")

    assert [job.id for job in first] == [oldest.id, older.id]
    assert [job.id for job in rest] == [newer.id]
    assert all(job.state is JobState.RUNNING for job in first + rest)


async def test_concurrent_claim_due_callers_never_share_a_job(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    ids = {added.job.id for added in await jobs.add_many([new_job() for _ in range(40)])}

    results = await asyncio.gather(
        *(jobs.claim_due([queue_name], 15, f"worker-{n}") for n in range(4))
    )

    claims = Counter(job.id for claimed in results for job in claimed)
    assert set(claims) == ids
    assert set(claims.values()) == {1}


async def running_job(jobs: JobRoles, new_job: JobFactory, **fields: object) -> Job:
    job = (await jobs.add(new_job(**fields))).job
    [claimed] = await jobs.claim([job.id], "worker-1")
    return claimed


async def test_heartbeat_extends_held_leases_by_the_visibility_timeout(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    job = await running_job(jobs, new_job, visibility_timeout=30)
    # Let the store's clock move on, so a renewed lease is visibly later than the first.
    await asyncio.sleep(0.01)

    held = await jobs.heartbeat([lease_of(job)])

    stored = await jobs.get(job.id)
    assert held == {job.id}
    assert stored is not None
    assert stored.lease_expires_at is not None
    assert job.lease_expires_at is not None
    assert stored.lease_expires_at > job.lease_expires_at
    assert stored.lease_expires_at == stored.updated_at + timedelta(seconds=30)
    assert (stored.state, stored.lease_token) == (JobState.RUNNING, job.lease_token)


async def test_heartbeat_reports_leases_that_were_lost(jobs: JobRoles, new_job: JobFactory) -> None:
    kept = await running_job(jobs, new_job)
    cancelled = await running_job(jobs, new_job)
    await jobs.cancel(cancelled.id, "operator")
    stale = Lease(job_id=kept.id, token=uuid4())
    unknown = Lease(job_id=uuid4(), token=uuid4())

    held = await jobs.heartbeat([lease_of(kept), lease_of(cancelled), stale, unknown])

    assert held == {kept.id}
    stored = await jobs.get(cancelled.id)
    assert stored is not None
    assert stored.state is JobState.CANCELLED
    assert stored.lease_expires_at is None


async def test_heartbeat_of_no_leases_holds_nothing(jobs: JobRoles) -> None:
    assert await jobs.heartbeat([]) == set()


async def test_settle_success_finishes_the_job(jobs: JobRoles, new_job: JobFactory) -> None:
    job = await running_job(jobs, new_job)

    applied = await jobs.settle([Succeeded(lease=lease_of(job))])

    stored = await jobs.get(job.id)
    assert applied == {job.id}
    assert stored is not None
    assert stored.state is JobState.SUCCEEDED
    assert stored.finished_at is not None
    assert stored.finished_at >= stored.created_at
    assert stored.updated_at == stored.finished_at
    assert (stored.lease_owner, stored.lease_token, stored.lease_expires_at) == (None, None, None)
    assert stored.attempt_count == 1


async def test_settle_retry_fails_the_job_until_its_backoff_passes(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    job = await running_job(jobs, new_job)

    applied = await jobs.settle(
        [RetryLater(lease=lease_of(job), error="smtp timeout", delay=timedelta(seconds=8))]
    )

    stored = await jobs.get(job.id)
    assert applied == {job.id}
    assert stored is not None
    assert stored.state is JobState.FAILED
    assert stored.last_error == "smtp timeout"
    assert stored.next_run_at == stored.updated_at + timedelta(seconds=8)
    assert stored.finished_at is None
    assert stored.lease_token is None
    assert (stored.attempt_count, stored.retry_count) == (1, 0)


async def test_settle_dead_letter_writes_the_dead_letter_row(
    jobs: JobRoles, dead_letters: DeadLetterStore, new_job: JobFactory
) -> None:
    job = await running_job(jobs, new_job, payload={"to": "x@y.z"})

    applied = await jobs.settle(
        [DeadLettered(lease=lease_of(job), error="bad address", reason="terminal error")]
    )

    stored = await jobs.get(job.id)
    entry = await dead_letters.get(job.id)
    assert applied == {job.id}
    assert stored is not None
    assert stored.state is JobState.DLQ
    assert (stored.reason, stored.last_error) == ("terminal error", "bad address")
    assert stored.finished_at is not None
    assert entry is not None
    assert (entry.queue, entry.job_type, entry.payload) == (job.queue, "email", {"to": "x@y.z"})
    assert (entry.reason, entry.last_error, entry.attempts) == ("terminal error", "bad address", 1)
    assert entry.failed_at == stored.finished_at
    assert entry.created_at == entry.updated_at == entry.failed_at


async def test_settle_applies_a_mixed_batch_in_one_call(
    jobs: JobRoles, dead_letters: DeadLetterStore, new_job: JobFactory
) -> None:
    ok, retry, dead = [await running_job(jobs, new_job) for _ in range(3)]
    stale = await running_job(jobs, new_job)
    batch: list[Settlement] = [
        Succeeded(lease=lease_of(ok)),
        RetryLater(lease=lease_of(retry), error="later", delay=timedelta(seconds=1)),
        DeadLettered(lease=lease_of(dead), error="never", reason="terminal error"),
        Succeeded(lease=Lease(job_id=stale.id, token=uuid4())),
    ]

    applied = await jobs.settle(batch)

    assert applied == {ok.id, retry.id, dead.id}
    states = {job.id: (await jobs.get(job.id)) for job in (ok, retry, dead, stale)}
    assert {job_id: job.state for job_id, job in states.items() if job is not None} == {
        ok.id: JobState.SUCCEEDED,
        retry.id: JobState.FAILED,
        dead.id: JobState.DLQ,
        stale.id: JobState.RUNNING,
    }
    assert await dead_letters.count() == 1


async def test_stale_lease_cannot_complete_job(jobs: JobRoles, new_job: JobFactory) -> None:
    first = await running_job(jobs, new_job)
    await jobs.release([lease_of(first)])
    [second] = await jobs.claim([first.id], "worker-2")

    applied = await jobs.settle([Succeeded(lease=lease_of(first))])

    assert applied == set()
    assert await jobs.get(first.id) == second


@pytest.mark.parametrize(
    "settlement",
    [
        lambda lease: Succeeded(lease=lease),
        lambda lease: RetryLater(lease=lease, error="e", delay=timedelta(0)),
        lambda lease: DeadLettered(lease=lease, error="e", reason="terminal error"),
    ],
    ids=["success", "retry", "dead-letter"],
)
async def test_settlement_of_a_cancelled_job_is_discarded(
    jobs: JobRoles,
    dead_letters: DeadLetterStore,
    new_job: JobFactory,
    settlement: Callable[[Lease], Settlement],
) -> None:
    job = await running_job(jobs, new_job)
    cancelled = await jobs.cancel(job.id, "user requested")

    applied = await jobs.settle([settlement(lease_of(job))])

    assert applied == set()
    assert await jobs.get(job.id) == cancelled
    assert await dead_letters.get(job.id) is None


async def test_a_job_is_settled_only_once(jobs: JobRoles, new_job: JobFactory) -> None:
    job = await running_job(jobs, new_job)
    await jobs.settle([Succeeded(lease=lease_of(job))])
    done = await jobs.get(job.id)

    again = await jobs.settle(
        [RetryLater(lease=lease_of(job), error="late", delay=timedelta(seconds=1))]
    )

    assert again == set()
    assert await jobs.get(job.id) == done


async def test_settle_of_nothing_applies_nothing(jobs: JobRoles) -> None:
    assert await jobs.settle([]) == set()


async def test_release_hands_the_job_back_without_counting_the_attempt(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    job = await running_job(jobs, new_job)

    released = await jobs.release([lease_of(job)])

    stored = await jobs.get(job.id)
    assert released == {job.id}
    assert stored is not None
    assert stored.state is JobState.PENDING
    assert stored.attempt_count == 0
    assert stored.hand_backs == 1
    assert stored.next_run_at == stored.updated_at
    assert (stored.lease_owner, stored.lease_token, stored.lease_expires_at) == (None, None, None)
    [reclaimed] = await jobs.claim([job.id], "worker-2")
    assert reclaimed.attempt_count == 1


async def test_release_with_a_stale_lease_changes_nothing(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    job = await running_job(jobs, new_job)

    released = await jobs.release([Lease(job_id=job.id, token=uuid4())])

    assert released == set()
    assert await jobs.get(job.id) == job


async def test_a_snooze_makes_the_job_wait_without_counting_the_attempt(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    job = await running_job(jobs, new_job)

    applied = await jobs.settle([Snoozed(lease=lease_of(job), delay=timedelta(minutes=10))])

    stored = await jobs.get(job.id)
    assert applied == {job.id}
    assert stored is not None
    assert (stored.state, stored.attempt_count, stored.snoozes) == (JobState.PENDING, 0, 1)
    assert stored.hand_backs == 0
    assert stored.next_run_at == stored.updated_at + timedelta(minutes=10)
    assert (stored.lease_token, stored.finished_at, stored.last_error) == (None, None, None)
    assert await jobs.claim([job.id], "worker-2") == []  # not due yet


async def test_a_snoozed_job_is_published_once_due(jobs: JobRoles, new_job: JobFactory) -> None:
    job = await running_job(jobs, new_job)

    await jobs.settle([Snoozed(lease=lease_of(job), delay=timedelta(0))])

    hints = await jobs.find_never_published(10)
    assert [hint.job_id for hint in hints] == [job.id]
    [again] = await jobs.claim([job.id], "worker-2")
    assert (again.attempt_count, again.snoozes) == (1, 1)


async def test_a_hand_back_counts_it_and_keeps_since_when_the_type_is_unknown(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    job = await running_job(jobs, new_job)
    since = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    applied = await jobs.settle(
        [HandedBack(lease=lease_of(job), delay=timedelta(seconds=1), unknown_type_since=since)]
    )

    stored = await jobs.get(job.id)
    assert applied == {job.id}
    assert stored is not None
    assert (stored.state, stored.attempt_count, stored.hand_backs) == (JobState.PENDING, 0, 1)
    assert (stored.snoozes, stored.unknown_type_since) == (0, since)
    assert stored.next_run_at == stored.updated_at + timedelta(seconds=1)


async def test_a_hand_back_after_a_handler_was_seen_clears_since_when(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    job = await running_job(jobs, new_job)
    since = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    await jobs.settle(
        [HandedBack(lease=lease_of(job), delay=timedelta(0), unknown_type_since=since)]
    )
    [again] = await jobs.claim([job.id], "worker-2")
    assert again.unknown_type_since == since  # the next worker sees when it started

    await jobs.settle(
        [HandedBack(lease=lease_of(again), delay=timedelta(0), unknown_type_since=None)]
    )

    stored = await jobs.get(job.id)
    assert stored is not None
    assert (stored.hand_backs, stored.unknown_type_since, stored.attempt_count) == (2, None, 0)


async def test_a_snooze_after_a_hand_back_clears_since_when(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    """A snooze comes from a worker that has a handler for the job's type: the type is known
    again, so a later hand-back starts UNKNOWN_TYPE_GRACE afresh."""
    job = await running_job(jobs, new_job)
    since = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    await jobs.settle(
        [HandedBack(lease=lease_of(job), delay=timedelta(0), unknown_type_since=since)]
    )
    [again] = await jobs.claim([job.id], "worker-2")

    await jobs.settle([Snoozed(lease=lease_of(again), delay=timedelta(0))])

    stored = await jobs.get(job.id)
    assert stored is not None
    assert (stored.snoozes, stored.hand_backs, stored.unknown_type_since) == (1, 1, None)


async def test_a_snooze_with_a_stale_lease_changes_nothing(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    job = await running_job(jobs, new_job)

    applied = await jobs.settle(
        [Snoozed(lease=Lease(job_id=job.id, token=uuid4()), delay=timedelta(0))]
    )

    assert applied == set()
    assert await jobs.get(job.id) == job
