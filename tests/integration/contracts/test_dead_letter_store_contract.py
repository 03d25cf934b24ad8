"""Contract: DeadLetterStore. Reading dead letters (find, get, count)."""

from __future__ import annotations

from uuid import uuid4

from taskforge.application.ports import DeadLetterStore
from taskforge.domain.job import Job, Lease
from taskforge.domain.outcome import DeadLettered
from taskforge.domain.validation import Page
from tests.job_stores import JobRoles

from .conftest import JobFactory


def lease_of(job: Job) -> Lease:
    assert job.lease_token is not None
    return Lease(job_id=job.id, token=job.lease_token)


async def dead_lettered_jobs(jobs: JobRoles, new_job: JobFactory, count: int) -> list[Job]:
    """Dead-letters `count` jobs one after another, so their failed_at times increase."""
    dead = []
    for n in range(count):
        job = (await jobs.add(new_job(payload={"n": n}))).job
        dead.append(await jobs.dead_letter(job.id, f"reason {n}"))
    return dead


async def test_dead_letters_are_listed_newest_failure_first(
    jobs: JobRoles, dead_letters: DeadLetterStore, new_job: JobFactory
) -> None:
    dead = await dead_lettered_jobs(jobs, new_job, 5)

    first, total = await dead_letters.find(Page(limit=2))
    rest, _ = await dead_letters.find(Page(limit=10, offset=2))

    assert total == 5
    assert [entry.job_id for entry in first + rest] == [job.id for job in reversed(dead)]
    assert [entry.reason for entry in first] == ["reason 4", "reason 3"]
    assert first[0].payload == {"n": 4}


async def test_dead_letter_list_breaks_failed_at_ties_by_job_id_descending(
    jobs: JobRoles, dead_letters: DeadLetterStore, new_job: JobFactory
) -> None:
    added = [result.job for result in await jobs.add_many([new_job() for _ in range(4)])]
    claimed = await jobs.claim([job.id for job in added], "worker-1")
    # One settle: one transaction, one failure time for all four.
    await jobs.settle(
        [DeadLettered(lease=lease_of(job), error="e", reason="terminal error") for job in claimed]
    )

    entries, total = await dead_letters.find(Page())

    assert total == 4
    assert len({entry.failed_at for entry in entries}) == 1
    assert [entry.job_id for entry in entries] == sorted((job.id for job in added), reverse=True)


async def test_dead_letter_lookup_and_count(
    jobs: JobRoles, dead_letters: DeadLetterStore, new_job: JobFactory
) -> None:
    [job] = await dead_lettered_jobs(jobs, new_job, 1)

    entry = await dead_letters.get(job.id)

    assert entry is not None
    assert (entry.job_id, entry.queue, entry.job_type) == (job.id, job.queue, job.job_type)
    assert await dead_letters.get(uuid4()) is None
    assert await dead_letters.count() == 1
    assert await dead_letters.find(Page(offset=5)) == ([], 1)


async def test_an_empty_dead_letter_store(dead_letters: DeadLetterStore) -> None:
    assert await dead_letters.find(Page()) == ([], 0)
    assert await dead_letters.count() == 0
