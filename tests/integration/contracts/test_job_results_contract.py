"""Contract: the result a job keeps from its successful attempt, as every store keeps it (the
Postgres column of migration 0007 round-trips like the in-memory field)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from taskforge.adapters.memory.state import InMemoryState
from taskforge.application.ports import ListFilter
from taskforge.domain.job import Job, Lease
from taskforge.domain.new_job import NewJob
from taskforge.domain.outcome import DeadLettered, RetryLater, Succeeded
from taskforge.domain.states import JobState
from taskforge.domain.validation import Page
from tests.job_stores import InMemoryJobs, JobRoles, PostgresJobs

JobFactory = Callable[..., NewJob]
LeaveResult = Callable[[Job, Any], Awaitable[None]]

RESULT = {"sent": 3, "to": ["a@example.com", "ü@example.com"], "nested": {"ok": True}}


def lease_of(job: Job) -> Lease:
    assert job.lease_token is not None
    return Lease(job_id=job.id, token=job.lease_token)


async def stored(jobs: JobRoles, job: Job) -> Job:
    found = await jobs.get(job.id)
    assert found is not None
    return found


async def succeed(jobs: JobRoles, job: Job, result: Any) -> Job:
    [claimed] = await jobs.claim([job.id], "worker-1")
    text = None if result is None else json.dumps(result)
    assert await jobs.settle([Succeeded(lease=lease_of(claimed), result=text)]) == {job.id}
    return await stored(jobs, job)


@pytest.fixture
def leave_result(jobs: JobRoles) -> LeaveResult:
    """Puts a result on a job whatever its state, as an earlier run would have left it: no
    move of TaskForge's leads from SUCCEEDED elsewhere, so this is how a test can check that
    a move back to PENDING never carries a result along."""

    async def leave(job: Job, result: Any) -> None:
        if isinstance(jobs, InMemoryJobs):
            state: InMemoryState = jobs._state
            state.put(state.jobs[job.id], result=result)
        else:
            assert isinstance(jobs, PostgresJobs)
            async with jobs._connection() as conn:
                await conn.execute("UPDATE jobs SET result = $2 WHERE id = $1", job.id, result)

    return leave


@pytest.mark.parametrize("result", [RESULT, [1, 2.5, None], "done", 0, False])
async def test_a_success_keeps_its_result(jobs: JobRoles, new_job: JobFactory, result: Any) -> None:
    job = (await jobs.add(new_job())).job

    done = await succeed(jobs, job, result)

    assert done.state is JobState.SUCCEEDED
    assert done.result == result


async def test_every_store_keeps_a_result_as_jsonb_reads_it_back(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    job = (await jobs.add(new_job())).job

    done = await succeed(jobs, job, {"total": 1e16, "zero": -0.0, "b": [2.5]})

    assert json.dumps(done.result) == '{"b": [2.5], "zero": 0.0, "total": 10000000000000000}'


async def test_a_success_without_a_result_keeps_none(jobs: JobRoles, new_job: JobFactory) -> None:
    job = (await jobs.add(new_job())).job

    done = await succeed(jobs, job, None)

    assert (done.state, done.result) == (JobState.SUCCEEDED, None)


async def test_lists_and_enqueues_leave_the_result_out(jobs: JobRoles, new_job: JobFactory) -> None:
    job = (await jobs.add(new_job(idempotency_key="result-left-out"))).job
    await succeed(jobs, job, RESULT)

    listed, _ = await jobs.find(ListFilter(queue=job.queue), Page())
    existing, created, _ = await jobs.add(new_job(idempotency_key="result-left-out"))

    assert [entry.result for entry in listed] == [None]
    assert (existing.id, created, existing.result) == (job.id, False, None)
    assert (await stored(jobs, job)).result == RESULT


async def test_a_stale_lease_cannot_write_a_result(jobs: JobRoles, new_job: JobFactory) -> None:
    job = (await jobs.add(new_job())).job
    [first] = await jobs.claim([job.id], "worker-1")
    assert await jobs.release([lease_of(first)]) == {job.id}  # handed back: the lease is stale
    [second] = await jobs.claim([job.id], "worker-2")

    late = Succeeded(lease=lease_of(first), result='{"from": "the stale attempt"}')
    assert await jobs.settle([late]) == set()
    assert (await stored(jobs, job)).result is None

    current = Succeeded(lease=lease_of(second), result='{"from": "the current attempt"}')
    assert await jobs.settle([current]) == {job.id}
    assert (await stored(jobs, job)).result == {"from": "the current attempt"}


async def test_failures_store_no_result(jobs: JobRoles, new_job: JobFactory) -> None:
    job = (await jobs.add(new_job())).job
    [claimed] = await jobs.claim([job.id], "worker-1")
    await jobs.settle([RetryLater(lease=lease_of(claimed), error="boom", delay=timedelta(0))])
    await jobs.promote_due(100)
    [again] = await jobs.claim([job.id], "worker-1")
    await jobs.settle([DeadLettered(lease=lease_of(again), error="boom", reason="terminal error")])

    assert (await stored(jobs, job)).result is None


async def test_retry_and_replay_start_without_a_result(
    jobs: JobRoles, new_job: JobFactory, leave_result: LeaveResult
) -> None:
    retried = (await jobs.add(new_job())).job
    replayed = (await jobs.add(new_job())).job
    for job in (retried, replayed):
        [claimed] = await jobs.claim([job.id], "worker-1")
        await jobs.settle([DeadLettered(lease=lease_of(claimed), error="boom", reason="terminal")])
        await leave_result(job, {"from": "an earlier run"})

    moved = [await jobs.retry_now(retried.id), await jobs.replay(replayed.id)]

    assert [job.result for job in moved] == [None, None]
    assert [(await stored(jobs, job)).result for job in moved] == [None, None]
    # The new run's own result is the one kept.
    assert (await succeed(jobs, moved[0], {"run": 2})).result == {"run": 2}
