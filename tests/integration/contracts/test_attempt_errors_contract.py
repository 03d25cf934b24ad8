"""Contract: a job's time limit and the errors of its failed attempts, as every store keeps
them (the Postgres columns of migration 0006 round-trip like the in-memory fields)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from taskforge.application.ports import ListFilter
from taskforge.domain.job import MAX_ATTEMPT_ERRORS, Job, Lease
from taskforge.domain.new_job import NewJob
from taskforge.domain.outcome import DeadLettered, RetryLater, Succeeded
from taskforge.domain.policy import RetryPolicy
from taskforge.domain.states import JobState
from taskforge.domain.validation import Page
from tests.job_stores import JobRoles

JobFactory = Callable[..., NewJob]


def lease_of(job: Job) -> Lease:
    assert job.lease_token is not None
    return Lease(job_id=job.id, token=job.lease_token)


async def stored(jobs: JobRoles, job: Job) -> Job:
    found = await jobs.get(job.id)
    assert found is not None
    return found


async def fail_attempt(jobs: JobRoles, job: Job, error: str, traceback: str | None) -> Job:
    """Claim the job (promoting its retry first if it failed), then fail that attempt."""
    if job.state is JobState.FAILED:
        await jobs.promote_due(100)
    [claimed] = await jobs.claim([job.id], "worker-1")
    failure = RetryLater(
        lease=lease_of(claimed), error=error, delay=timedelta(0), traceback=traceback
    )
    assert await jobs.settle([failure]) == {job.id}
    return claimed


async def test_a_job_keeps_its_timeout(jobs: JobRoles, new_job: JobFactory) -> None:
    single = (await jobs.add(new_job(timeout=2.5))).job
    [(batched, _, _), (unlimited, _, _)] = await jobs.add_many([new_job(timeout=600), new_job()])

    [claimed] = await jobs.claim([single.id], "worker-1")

    assert (single.timeout, batched.timeout, unlimited.timeout) == (2.5, 600, 0)
    assert (await stored(jobs, batched)).timeout == 600
    assert (await stored(jobs, unlimited)).timeout == 0
    assert claimed.timeout == 2.5


async def test_each_failed_attempt_keeps_its_error_and_traceback(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    job = (await jobs.add(new_job(policy=RetryPolicy(max_attempts=2)))).job
    await fail_attempt(jobs, job, "RuntimeError: first", "Traceback: line 1\n")
    failed = await stored(jobs, job)
    await jobs.promote_due(100)
    [second] = await jobs.claim([job.id], "worker-1")

    await jobs.settle(
        [DeadLettered(lease=lease_of(second), error="ValueError: second", reason="terminal error")]
    )

    dead = await stored(jobs, job)
    assert [(e.attempt, e.error, e.traceback) for e in dead.errors] == [
        (1, "RuntimeError: first", "Traceback: line 1\n"),
        (2, "ValueError: second", None),
    ]
    first_at, second_at = (error.at for error in dead.errors)
    assert first_at.utcoffset() == timedelta(0)
    assert first_at == failed.updated_at  # the store's clock, when it settled the attempt
    assert second_at == dead.updated_at


async def test_a_success_adds_no_error(jobs: JobRoles, new_job: JobFactory) -> None:
    job = (await jobs.add(new_job())).job
    await fail_attempt(jobs, job, "RuntimeError: once", None)
    await jobs.promote_due(100)
    [claimed] = await jobs.claim([job.id], "worker-1")

    await jobs.settle([Succeeded(lease=lease_of(claimed))])

    done = await stored(jobs, job)
    assert done.state is JobState.SUCCEEDED
    assert [error.error for error in done.errors] == ["RuntimeError: once"]


async def test_only_the_last_attempts_errors_are_kept(jobs: JobRoles, new_job: JobFactory) -> None:
    attempts = MAX_ATTEMPT_ERRORS + 2
    job = (await jobs.add(new_job(policy=RetryPolicy(max_attempts=attempts)))).job
    for attempt in range(1, attempts + 1):
        job = await stored(jobs, job)
        await fail_attempt(jobs, job, f"attempt {attempt}", f"trace {attempt}")

    kept = (await stored(jobs, job)).errors

    assert [error.attempt for error in kept] == list(range(3, attempts + 1))
    assert [error.error for error in kept][-1] == f"attempt {attempts}"


async def test_lists_claims_and_enqueues_leave_the_errors_out(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    job = (await jobs.add(new_job(idempotency_key="errors-left-out"))).job
    await fail_attempt(jobs, job, "RuntimeError: heavy", "Traceback ...\n")

    listed, _ = await jobs.find(ListFilter(queue=job.queue), Page())
    existing, created, _ = await jobs.add(new_job(idempotency_key="errors-left-out"))
    await jobs.promote_due(100)
    [claimed] = await jobs.claim([job.id], "worker-1")
    cancelled = await jobs.cancel(job.id, "enough")

    assert [entry.errors for entry in listed] == [()]
    assert (existing.id, created, existing.errors) == (job.id, False, ())
    assert claimed.errors == ()
    # One job, read or moved on its own, carries them.
    assert [error.error for error in cancelled.errors] == ["RuntimeError: heavy"]
