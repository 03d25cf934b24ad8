"""Contract: QueuePauses. Pausing and resuming a queue, and what a pause does to the other
roles: neither claim takes a paused queue's jobs, the republish sweep leaves them alone, and
resuming hands back the hints of its due jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from taskforge.domain.job import Lease
from taskforge.domain.new_job import NewJob
from taskforge.domain.outcome import Succeeded
from taskforge.domain.states import JobState
from tests.job_stores import JobRoles

JobFactory = Callable[..., NewJob]


async def test_pausing_a_queue_lists_it_as_paused_until_resumed(
    jobs: JobRoles, queue_name: str
) -> None:
    paused_at = await jobs.pause(queue_name)

    assert (await jobs.paused()).get(queue_name) == paused_at
    await jobs.resume(queue_name, 100)
    assert queue_name not in await jobs.paused()


async def test_pause_and_resume_are_idempotent(jobs: JobRoles, queue_name: str) -> None:
    first = await jobs.pause(queue_name)

    assert await jobs.pause(queue_name) == first
    await jobs.resume(queue_name, 100)
    assert await jobs.resume(queue_name, 100) == []
    assert queue_name not in await jobs.paused()


async def test_a_paused_queues_jobs_are_not_claimed_by_hint(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    job = (await jobs.add(new_job())).job
    await jobs.pause(queue_name)

    assert await jobs.claim([job.id], "w1") == []
    stored = await jobs.get(job.id)
    assert stored is not None and stored.state is JobState.PENDING


async def test_a_paused_queues_jobs_are_not_claimed_without_hints(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    other_queue = f"{queue_name}-other"
    await jobs.add(new_job())
    other = (await jobs.add(new_job(queue=other_queue))).job
    await jobs.pause(queue_name)

    claimed = await jobs.claim_due([queue_name, other_queue], 10, "w1")

    assert [job.id for job in claimed] == [other.id]


async def test_a_queue_paused_before_its_first_job_holds_that_job(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    await jobs.pause(queue_name)
    job, created, _ = await jobs.add(new_job())

    assert created
    assert await jobs.claim([job.id], "w1") == []
    assert await jobs.claim_due([queue_name], 10, "w1") == []


async def test_a_running_job_of_a_paused_queue_still_settles(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    job = (await jobs.add(new_job())).job
    [running] = await jobs.claim([job.id], "w1")
    await jobs.pause(queue_name)
    assert running.lease_token is not None
    lease = Lease(job_id=job.id, token=running.lease_token)

    assert await jobs.settle([Succeeded(lease=lease)]) == {job.id}


async def test_resume_returns_the_due_jobs_oldest_first_and_claims_work_again(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    await jobs.pause(queue_name)
    first = (await jobs.add(new_job(run_at=datetime(2020, 1, 1, tzinfo=UTC)))).job
    second = (await jobs.add(new_job())).job
    await jobs.add(new_job(delay=3600.0))  # not due: left to the sweeps

    resumed = await jobs.resume(queue_name, 100)

    assert [job.id for job in resumed] == [first.id, second.id]
    assert all(job.state is JobState.PENDING for job in resumed)
    assert {job.id for job in await jobs.claim([first.id, second.id], "w1")} == {
        first.id,
        second.id,
    }


async def test_resume_returns_at_most_limit_jobs(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    await jobs.pause(queue_name)
    for _ in range(3):
        await jobs.add(new_job())

    assert len(await jobs.resume(queue_name, 2)) == 2


async def test_the_republish_sweep_skips_a_paused_queue_until_it_is_resumed(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    await jobs.pause(queue_name)
    job = (await jobs.add(new_job())).job
    await jobs.mark_unpublished()

    uncovered = {queue_name: 0}
    assert job.id not in {hint.job_id for hint in await jobs.find_unpublished(uncovered, 1000, 0.0)}
    await jobs.resume(queue_name, 0)
    assert job.id in {hint.job_id for hint in await jobs.find_unpublished(uncovered, 1000, 0.0)}


async def test_pausing_one_queue_leaves_others_alone(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    await jobs.pause(f"{queue_name}-other")
    job = (await jobs.add(new_job(run_at=datetime.now(UTC) - timedelta(seconds=1)))).job

    assert [claimed.id for claimed in await jobs.claim([job.id], "w1")] == [job.id]
