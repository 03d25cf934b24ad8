"""Contract: claiming jobs (by id from hints, or due jobs of a queue) with a fresh lease."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from taskforge.domain.job import Job, Lease, NewJob
from taskforge.domain.outcome import Succeeded
from taskforge.domain.states import JobState
from tests.job_stores import JobRoles

JobFactory = Callable[..., NewJob]


def lease_of(job: Job) -> Lease:
    assert job.lease_token is not None
    return Lease(job_id=job.id, token=job.lease_token)


async def test_claim_runs_the_job_under_a_fresh_lease(jobs: JobRoles, new_job: JobFactory) -> None:
    job, _ = await jobs.add(new_job(visibility_timeout=45))

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
    job, _ = await jobs.add(new_job())
    [first] = await jobs.claim([job.id], "worker-1")
    await jobs.release([lease_of(first)])

    [second] = await jobs.claim([job.id], "worker-2")

    assert second.lease_token != first.lease_token
    assert second.lease_owner == "worker-2"


async def test_claim_skips_jobs_that_are_not_due(jobs: JobRoles, new_job: JobFactory) -> None:
    delayed, _ = await jobs.add(new_job(run_at=datetime.now(UTC) + timedelta(hours=1)))

    assert await jobs.claim([delayed.id], "worker-1") == []
    assert (await jobs.get(delayed.id)) == delayed


async def test_claim_takes_jobs_whose_run_at_has_passed(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    past, _ = await jobs.add(new_job(run_at=datetime.now(UTC) - timedelta(hours=1)))

    [claimed] = await jobs.claim([past.id], "worker-1")

    assert claimed.id == past.id


async def test_claim_skips_jobs_that_are_not_pending(jobs: JobRoles, new_job: JobFactory) -> None:
    running, _ = await jobs.add(new_job())
    done, _ = await jobs.add(new_job())
    [running_now] = await jobs.claim([running.id], "worker-1")
    [done_now] = await jobs.claim([done.id], "worker-1")
    await jobs.settle([Succeeded(lease=lease_of(done_now))])

    assert await jobs.claim([running.id, done.id, uuid4()], "worker-2") == []
    assert await jobs.get(running.id) == running_now


async def test_claim_returns_claimed_jobs_in_request_order_once_each(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    added = [job for job, _ in await jobs.add_many([new_job() for _ in range(4)])]
    wanted = [added[2].id, added[0].id, added[2].id, uuid4(), added[3].id]

    claimed = await jobs.claim(wanted, "worker-1")

    assert [job.id for job in claimed] == [added[2].id, added[0].id, added[3].id]
    assert all(job.attempt_count == 1 for job in claimed)


async def test_claim_of_no_ids_claims_nothing(jobs: JobRoles) -> None:
    assert await jobs.claim([], "worker-1") == []


async def test_racing_claimers_claim_each_job_exactly_once(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    ids = [job.id for job, _ in await jobs.add_many([new_job() for _ in range(60)])]
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
    oldest, _ = await jobs.add(new_job(run_at=now - timedelta(minutes=3)))
    older, _ = await jobs.add(new_job(run_at=now - timedelta(minutes=2)))
    newer, _ = await jobs.add(new_job(run_at=now - timedelta(minutes=1)))
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
    ids = {job.id for job, _ in await jobs.add_many([new_job() for _ in range(40)])}

    results = await asyncio.gather(
        *(jobs.claim_due([queue_name], 15, f"worker-{n}") for n in range(4))
    )

    claims = Counter(job.id for claimed in results for job in claimed)
    assert set(claims) == ids
    assert set(claims.values()) == {1}
