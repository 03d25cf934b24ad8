"""Contract: reading many jobs (find, stats) and dead letters (find, get, count)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from uuid import uuid4

from taskforge.application.ports import DeadLetterStore, ListFilter
from taskforge.domain.job import Job, Lease, NewJob
from taskforge.domain.outcome import DeadLettered, RetryLater
from taskforge.domain.states import JobState
from taskforge.domain.validation import Page
from tests.job_stores import JobRoles

JobFactory = Callable[..., NewJob]


def lease_of(job: Job) -> Lease:
    assert job.lease_token is not None
    return Lease(job_id=job.id, token=job.lease_token)


async def test_find_lists_newest_first_with_the_total(jobs: JobRoles, new_job: JobFactory) -> None:
    added = [(await jobs.add(new_job()))[0] for _ in range(4)]

    found, total = await jobs.find(ListFilter(), Page())

    assert total == 4
    assert [job.id for job in found] == [job.id for job in reversed(added)]
    assert found == list(reversed(added))


async def test_find_breaks_created_at_ties_by_id_descending(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    # One batch shares one creation time, so only the id orders it.
    batch = [job for job, _ in await jobs.add_many([new_job() for _ in range(5)])]
    assert len({job.created_at for job in batch}) == 1

    found, _ = await jobs.find(ListFilter(), Page())

    assert [job.id for job in found] == sorted((job.id for job in batch), reverse=True)


async def test_find_pages_are_stable_and_cover_every_job_once(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    await jobs.add_many([new_job() for _ in range(4)])
    for _ in range(3):
        await jobs.add(new_job())
    everything, total = await jobs.find(ListFilter(), Page(limit=100))

    pages = [await jobs.find(ListFilter(), Page(limit=3, offset=offset)) for offset in (0, 3, 6)]

    assert total == 7
    assert [len(page) for page, _ in pages] == [3, 3, 1]
    assert {page_total for _, page_total in pages} == {7}
    assert [job for page, _ in pages for job in page] == everything


async def test_find_beyond_the_last_page_is_empty_but_counts(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    await jobs.add_many([new_job() for _ in range(2)])

    found, total = await jobs.find(ListFilter(), Page(limit=10, offset=10))

    assert (found, total) == ([], 2)


async def test_find_of_an_empty_store_is_empty(jobs: JobRoles) -> None:
    assert await jobs.find(ListFilter(), Page()) == ([], 0)


async def test_find_filters_by_queue_and_state(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    other = f"{queue_name}-other"
    mine = [job for job, _ in await jobs.add_many([new_job() for _ in range(3)])]
    theirs, _ = await jobs.add(new_job(queue=other))
    [running] = await jobs.claim([mine[1].id], "worker-1")
    [running_theirs] = await jobs.claim([theirs.id], "worker-1")

    by_queue, queue_total = await jobs.find(ListFilter(queue=queue_name), Page())
    by_state, state_total = await jobs.find(ListFilter(state=JobState.RUNNING), Page())
    by_both, both_total = await jobs.find(
        ListFilter(queue=queue_name, state=JobState.PENDING), Page()
    )

    assert queue_total == 3
    assert {job.id for job in by_queue} == {job.id for job in mine}
    assert state_total == 2
    assert {job.id for job in by_state} == {running.id, running_theirs.id}
    assert both_total == 2
    assert [job.id for job in by_both] == [mine[2].id, mine[0].id]
    assert await jobs.find(ListFilter(queue="nobody"), Page()) == ([], 0)


async def test_stats_count_every_state_of_every_queue(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    other = f"{queue_name}-b"
    mine = [job for job, _ in await jobs.add_many([new_job() for _ in range(4)])]
    await jobs.add(new_job(queue=other))
    claimed = await jobs.claim([mine[0].id, mine[1].id, mine[2].id], "worker-1")
    await jobs.settle(
        [
            RetryLater(lease=lease_of(claimed[0]), error="e", delay=timedelta(hours=1)),
            DeadLettered(lease=lease_of(claimed[1]), error="e", reason="terminal error"),
        ]
    )

    stats = await jobs.stats()

    assert [entry.queue for entry in stats] == [queue_name, other]
    assert stats[0].counts == {
        JobState.PENDING: 1,
        JobState.RUNNING: 1,
        JobState.SUCCEEDED: 0,
        JobState.FAILED: 1,
        JobState.DLQ: 1,
        JobState.CANCELLED: 0,
    }
    assert stats[0].total == 4
    assert stats[1].counts[JobState.PENDING] == 1
    assert stats[1].total == 1


async def test_stats_of_an_empty_store_is_empty(jobs: JobRoles) -> None:
    assert await jobs.stats() == []


async def dead_lettered_jobs(jobs: JobRoles, new_job: JobFactory, count: int) -> list[Job]:
    """Dead-letters `count` jobs one after another, so their failed_at times increase."""
    dead = []
    for n in range(count):
        job, _ = await jobs.add(new_job(payload={"n": n}))
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
    added = [job for job, _ in await jobs.add_many([new_job() for _ in range(4)])]
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


async def test_ping_answers_without_raising(jobs: JobRoles) -> None:
    await jobs.ping()
