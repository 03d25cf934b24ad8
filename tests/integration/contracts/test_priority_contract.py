"""Priorities across the store roles, run against every job store (memory, Postgres):
a job keeps the priority it was stored with, claims take a queue's due jobs by priority
and then oldest due first, and every hint a sweep returns carries its job's priority."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from taskforge.domain.job import Job, Lease, dispatch_order
from taskforge.domain.new_job import NewJob
from taskforge.domain.outcome import RetryLater
from taskforge.domain.states import JobState
from tests.job_stores import JobRoles

JobFactory = Callable[..., NewJob]

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


async def test_a_job_keeps_its_priority_and_defaults_to_five(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    urgent = (await jobs.add(new_job(priority=0))).job
    ordinary = (await jobs.add(new_job())).job

    assert (urgent.priority, ordinary.priority) == (0, 5)
    assert await jobs.get(urgent.id) == urgent
    assert await jobs.get(ordinary.id) == ordinary


async def test_a_batch_keeps_the_priority_of_each_job(jobs: JobRoles, new_job: JobFactory) -> None:
    results = await jobs.add_many([new_job(priority=p) for p in (9, 0, 5, 3)])

    assert [added.job.priority for added in results] == [9, 0, 5, 3]
    for job, _, _ in results:
        assert await jobs.get(job.id) == job


async def test_claim_due_takes_higher_priorities_first_then_oldest_due(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    now = datetime.now(UTC)
    old_low = (await jobs.add(new_job(priority=9, run_at=now - timedelta(hours=2)))).job
    old_default = (await jobs.add(new_job(run_at=now - timedelta(hours=1)))).job
    new_high = (await jobs.add(new_job(priority=1, run_at=now - timedelta(minutes=1)))).job
    old_high = (await jobs.add(new_job(priority=1, run_at=now - timedelta(minutes=2)))).job
    await jobs.add(new_job(priority=0, run_at=now + timedelta(hours=1)))  # not due yet

    first = await jobs.claim_due([queue_name], 3, "worker-1")
    rest = await jobs.claim_due([queue_name], 10, "worker-1")

    assert [job.id for job in first] == [old_high.id, new_high.id, old_default.id]
    assert [job.id for job in rest] == [old_low.id]


async def test_claim_due_orders_by_priority_across_the_queues_it_serves(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    other = f"{queue_name}-other"
    default = (await jobs.add(new_job(run_at=LONG_AGO))).job
    urgent_elsewhere = (await jobs.add(new_job(queue=other, priority=2))).job

    claimed = await jobs.claim_due([queue_name, other], 1, "worker-1")

    assert [job.id for job in claimed] == [urgent_elsewhere.id]
    assert await jobs.claim_due([queue_name, other], 1, "worker-1") == [await jobs.get(default.id)]


async def test_find_never_published_returns_hints_by_priority_with_their_priority(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    stored = [
        (await jobs.add(new_job(priority=p, run_at=LONG_AGO + timedelta(minutes=n))))[0]
        for n, p in enumerate((7, 5, 0, 7, 2))
    ]
    await jobs.mark_unpublished()

    first = await jobs.find_never_published(3)
    rest = await jobs.find_never_published(10)

    expected = sorted(stored, key=dispatch_order)
    assert [(hint.job_id, hint.priority) for hint in first + rest] == [
        (job.id, job.priority) for job in expected
    ]


async def test_find_unpublished_returns_hints_by_priority_with_their_priority(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    low = (await jobs.add(new_job(priority=8, run_at=LONG_AGO))).job
    high = (await jobs.add(new_job(priority=1))).job
    await jobs.mark_unpublished()

    uncovered = {queue_name: 0}
    hints = await jobs.find_unpublished(uncovered, 1, 3600)
    hints += await jobs.find_unpublished(uncovered, 1, 3600)

    assert [(hint.job_id, hint.priority) for hint in hints] == [(high.id, 1), (low.id, 8)]


async def running(jobs: JobRoles, job: Job) -> Job:
    [claimed] = await jobs.claim([job.id], "worker-1")
    return claimed


async def test_requeued_jobs_come_back_as_hints_at_their_priority(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    retried = await running(jobs, (await jobs.add(new_job(priority=2)))[0])
    assert retried.lease_token is not None
    lease = Lease(job_id=retried.id, token=retried.lease_token)
    await jobs.settle([RetryLater(lease=lease, error="boom", delay=timedelta(0))])

    [promoted] = await jobs.promote_due(100)

    assert (promoted.job_id, promoted.priority) == (retried.id, 2)


async def test_resume_returns_the_due_jobs_by_priority(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    await jobs.pause(queue_name)
    old_default = (await jobs.add(new_job(run_at=LONG_AGO))).job
    urgent = (await jobs.add(new_job(priority=0))).job

    resumed = await jobs.resume(queue_name, 100)

    assert [job.id for job in resumed] == [urgent.id, old_default.id]
    assert all(job.state is JobState.PENDING for job in resumed)
