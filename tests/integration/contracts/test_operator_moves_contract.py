"""Contract: an operator's transitions (cancel, dead-letter, retry, replay) and the DLQ rows."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from uuid import UUID, uuid4

import pytest

from taskforge.application.ports import DeadLetterStore
from taskforge.domain.errors import (
    DeadLetterNotFound,
    InvalidTransition,
    JobNotFound,
    UniqueKeyTaken,
)
from taskforge.domain.job import Job, Lease
from taskforge.domain.new_job import NewJob
from taskforge.domain.outcome import (
    MANUAL_DLQ_REASON,
    DeadLettered,
    RetryLater,
    Snoozed,
    Succeeded,
)
from taskforge.domain.states import JobState
from tests.job_stores import JobRoles

JobFactory = Callable[..., NewJob]
Maker = Callable[[JobRoles, JobFactory], Awaitable[Job]]


def lease_of(job: Job) -> Lease:
    assert job.lease_token is not None
    return Lease(job_id=job.id, token=job.lease_token)


async def pending(jobs: JobRoles, new_job: JobFactory) -> Job:
    job = (await jobs.add(new_job())).job
    return job


async def running(jobs: JobRoles, new_job: JobFactory) -> Job:
    [job] = await jobs.claim([(await pending(jobs, new_job)).id], "worker-1")
    return job


async def succeeded(jobs: JobRoles, new_job: JobFactory) -> Job:
    job = await running(jobs, new_job)
    await jobs.settle([Succeeded(lease=lease_of(job))])
    return await stored(jobs, job)


async def failed(jobs: JobRoles, new_job: JobFactory) -> Job:
    job = await running(jobs, new_job)
    await jobs.settle([RetryLater(lease=lease_of(job), error="boom", delay=timedelta(hours=1))])
    return await stored(jobs, job)


async def dead(jobs: JobRoles, new_job: JobFactory) -> Job:
    job = await running(jobs, new_job)
    await jobs.settle([DeadLettered(lease=lease_of(job), error="bad", reason="terminal error")])
    return await stored(jobs, job)


async def cancelled(jobs: JobRoles, new_job: JobFactory) -> Job:
    return await jobs.cancel((await pending(jobs, new_job)).id, "no longer needed")


async def stored(jobs: JobRoles, job: Job) -> Job:
    current = await jobs.get(job.id)
    assert current is not None
    return current


async def assert_dead_letter_matches_state(
    jobs: JobRoles, dead_letters: DeadLetterStore, job_id: UUID
) -> None:
    """The invariant: a dead_letters row exists exactly while the job is in DLQ."""
    job = await jobs.get(job_id)
    entry = await dead_letters.get(job_id)
    assert job is not None
    assert (entry is not None) == (job.state is JobState.DLQ)


@pytest.mark.parametrize("make", [pending, running, failed], ids=lambda make: make.__name__)
async def test_cancel_stops_a_job_that_has_not_finished(
    jobs: JobRoles, new_job: JobFactory, make: Maker
) -> None:
    job = await make(jobs, new_job)

    result = await jobs.cancel(job.id, "user requested")

    assert result.state is JobState.CANCELLED
    assert result.reason == "user requested"
    assert result.finished_at is not None
    assert (result.lease_owner, result.lease_token, result.lease_expires_at) == (None, None, None)
    assert (result.attempt_count, result.retry_count) == (job.attempt_count, job.retry_count)
    assert await jobs.get(job.id) == result


async def test_cancel_without_a_reason_records_none(jobs: JobRoles, new_job: JobFactory) -> None:
    job = await pending(jobs, new_job)

    result = await jobs.cancel(job.id, None)

    assert result.reason is None


@pytest.mark.parametrize("make", [succeeded, dead, cancelled], ids=lambda make: make.__name__)
async def test_cancel_of_a_finished_job_is_an_invalid_transition(
    jobs: JobRoles, new_job: JobFactory, make: Maker
) -> None:
    job = await make(jobs, new_job)

    with pytest.raises(InvalidTransition) as refused:
        await jobs.cancel(job.id, "too late")

    assert (refused.value.job_id, refused.value.current) == (job.id, job.state.value)
    assert refused.value.target == "CANCELLED"
    assert await jobs.get(job.id) == job


@pytest.mark.parametrize("make", [pending, running, failed], ids=lambda make: make.__name__)
async def test_dead_letter_moves_a_job_to_dlq_with_its_row(
    jobs: JobRoles, dead_letters: DeadLetterStore, new_job: JobFactory, make: Maker
) -> None:
    job = await make(jobs, new_job)

    result = await jobs.dead_letter(job.id, "poison message")

    entry = await dead_letters.get(job.id)
    assert result.state is JobState.DLQ
    assert result.reason == "poison message"
    assert result.last_error == job.last_error
    assert result.lease_token is None
    assert entry is not None
    assert (entry.reason, entry.last_error) == ("poison message", job.last_error)
    assert entry.attempts == job.attempt_count
    assert entry.failed_at == result.finished_at


async def test_dead_letter_without_a_reason_names_the_operator(
    jobs: JobRoles, dead_letters: DeadLetterStore, new_job: JobFactory
) -> None:
    job = await pending(jobs, new_job)

    result = await jobs.dead_letter(job.id, None)

    entry = await dead_letters.get(job.id)
    assert result.reason == MANUAL_DLQ_REASON
    assert entry is not None
    assert entry.reason == MANUAL_DLQ_REASON


@pytest.mark.parametrize("make", [succeeded, dead, cancelled], ids=lambda make: make.__name__)
async def test_dead_letter_of_a_finished_job_is_an_invalid_transition(
    jobs: JobRoles, dead_letters: DeadLetterStore, new_job: JobFactory, make: Maker
) -> None:
    job = await make(jobs, new_job)
    entry = await dead_letters.get(job.id)

    with pytest.raises(InvalidTransition) as refused:
        await jobs.dead_letter(job.id, "again")

    assert (refused.value.current, refused.value.target) == (job.state.value, "DLQ")
    assert await jobs.get(job.id) == job
    assert await dead_letters.get(job.id) == entry


async def test_retry_of_a_failed_job_runs_it_now_and_keeps_its_counts(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    job = await failed(jobs, new_job)

    result = await jobs.retry_now(job.id)

    assert result.state is JobState.PENDING
    assert result.next_run_at == result.updated_at
    assert result.next_run_at < job.next_run_at
    assert (result.attempt_count, result.retry_count) == (1, 0)
    assert result.last_error == "boom"
    [claimed] = await jobs.claim([job.id], "worker-2")
    assert claimed.attempt_count == 2


@pytest.mark.parametrize("make", [dead, cancelled], ids=lambda make: make.__name__)
async def test_retry_of_a_dead_or_cancelled_job_starts_it_over(
    jobs: JobRoles, dead_letters: DeadLetterStore, new_job: JobFactory, make: Maker
) -> None:
    job = await make(jobs, new_job)

    result = await jobs.retry_now(job.id)

    assert result.state is JobState.PENDING
    assert (result.attempt_count, result.retry_count) == (0, 0)
    assert result.reason is None
    assert result.finished_at is None
    assert result.next_run_at == result.updated_at
    assert await dead_letters.get(job.id) is None


@pytest.mark.parametrize("make", [pending, running, succeeded], ids=lambda make: make.__name__)
async def test_retry_of_a_job_that_is_not_stopped_is_an_invalid_transition(
    jobs: JobRoles, new_job: JobFactory, make: Maker
) -> None:
    job = await make(jobs, new_job)

    with pytest.raises(InvalidTransition) as refused:
        await jobs.retry_now(job.id)

    assert (refused.value.current, refused.value.target) == (job.state.value, "PENDING")
    assert await jobs.get(job.id) == job


@pytest.mark.parametrize(
    "operation",
    [
        lambda jobs, job_id: jobs.cancel(job_id, None),
        lambda jobs, job_id: jobs.dead_letter(job_id, None),
        lambda jobs, job_id: jobs.retry_now(job_id),
    ],
    ids=["cancel", "dead_letter", "retry"],
)
async def test_operator_transition_of_an_unknown_job_is_not_found(
    jobs: JobRoles, operation: Callable[[JobRoles, UUID], Awaitable[Job]]
) -> None:
    missing = uuid4()

    with pytest.raises(JobNotFound) as refused:
        await operation(jobs, missing)

    assert refused.value.job_id == missing


async def test_replay_restarts_a_dead_letter_and_deletes_its_row(
    jobs: JobRoles, dead_letters: DeadLetterStore, new_job: JobFactory
) -> None:
    job = await dead(jobs, new_job)

    result = await jobs.replay(job.id)

    assert result.state is JobState.PENDING
    assert (result.attempt_count, result.retry_count) == (0, 0)
    assert result.next_run_at == result.updated_at
    assert result.reason is None
    assert result.finished_at is None
    assert result.last_error == "bad"
    assert await dead_letters.get(job.id) is None
    assert await dead_letters.count() == 0
    assert await jobs.claim([job.id], "worker-2") != []


@pytest.mark.parametrize(
    "make", [pending, running, failed, succeeded, cancelled], ids=lambda make: make.__name__
)
async def test_replay_of_a_job_that_is_not_dead_lettered_is_refused(
    jobs: JobRoles, new_job: JobFactory, make: Maker
) -> None:
    job = await make(jobs, new_job)

    with pytest.raises(DeadLetterNotFound):
        await jobs.replay(job.id)

    assert await jobs.get(job.id) == job


async def test_replay_of_an_unknown_job_finds_no_dead_letter(jobs: JobRoles) -> None:
    with pytest.raises(DeadLetterNotFound):
        await jobs.replay(uuid4())


async def test_replay_after_replay_finds_no_dead_letter(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    job = await dead(jobs, new_job)
    await jobs.replay(job.id)

    with pytest.raises(DeadLetterNotFound):
        await jobs.replay(job.id)


async def test_concurrent_replays_restart_a_dead_letter_once(
    jobs: JobRoles, dead_letters: DeadLetterStore, new_job: JobFactory
) -> None:
    job = await dead(jobs, new_job)

    outcomes = await asyncio.gather(
        *(jobs.replay(job.id) for _ in range(8)), return_exceptions=True
    )

    replayed = [outcome for outcome in outcomes if isinstance(outcome, Job)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, DeadLetterNotFound)]
    assert (len(replayed), len(refused)) == (1, 7)
    assert await dead_letters.get(job.id) is None
    assert await jobs.get(job.id) == replayed[0]


async def test_racing_replay_and_retry_move_a_dead_letter_once(
    jobs: JobRoles, dead_letters: DeadLetterStore, new_job: JobFactory
) -> None:
    job = await dead(jobs, new_job)

    outcomes = await asyncio.gather(
        jobs.replay(job.id), jobs.retry_now(job.id), return_exceptions=True
    )

    moved = [outcome for outcome in outcomes if isinstance(outcome, Job)]
    assert len(moved) == 1
    assert all(
        isinstance(outcome, DeadLetterNotFound | InvalidTransition)
        for outcome in outcomes
        if not isinstance(outcome, Job)
    )
    await assert_dead_letter_matches_state(jobs, dead_letters, job.id)
    assert (await stored(jobs, job)).state is JobState.PENDING


async def test_dead_letter_row_exists_exactly_while_the_job_is_in_dlq(
    jobs: JobRoles, dead_letters: DeadLetterStore, new_job: JobFactory
) -> None:
    job = await running(jobs, new_job)
    steps: list[Callable[[], Awaitable[object]]] = [
        lambda: jobs.settle(
            [DeadLettered(lease=lease_of(job), error="bad", reason="terminal error")]
        ),
        lambda: jobs.replay(job.id),
        lambda: jobs.dead_letter(job.id, None),
        lambda: jobs.retry_now(job.id),
        lambda: jobs.cancel(job.id, None),
        lambda: jobs.retry_now(job.id),
        lambda: jobs.dead_letter(job.id, "again"),
    ]
    expected = [
        JobState.DLQ,
        JobState.PENDING,
        JobState.DLQ,
        JobState.PENDING,
        JobState.CANCELLED,
        JobState.PENDING,
        JobState.DLQ,
    ]

    for step, state in zip(steps, expected, strict=True):
        await step()
        assert (await stored(jobs, job)).state is state
        await assert_dead_letter_matches_state(jobs, dead_letters, job.id)
    assert await dead_letters.count() == 1


async def test_racing_cancel_and_dead_letter_leave_the_invariant_intact(
    jobs: JobRoles, dead_letters: DeadLetterStore, new_job: JobFactory
) -> None:
    contenders = [await running(jobs, new_job) for _ in range(10)]

    for job in contenders:
        await asyncio.gather(
            jobs.cancel(job.id, "race"),
            jobs.settle([DeadLettered(lease=lease_of(job), error="x", reason="terminal error")]),
            return_exceptions=True,
        )

    for job in contenders:
        assert (await stored(jobs, job)).state in {JobState.CANCELLED, JobState.DLQ}
        await assert_dead_letter_matches_state(jobs, dead_letters, job.id)


@pytest.mark.parametrize("move", ["retry", "replay"])
async def test_a_dead_letter_whose_unique_key_is_held_again_is_not_requeued(
    jobs: JobRoles, dead_letters: DeadLetterStore, new_job: JobFactory, move: str
) -> None:
    first = (await jobs.add(new_job(unique_key="daily"))).job
    await jobs.dead_letter(first.id, None)
    holder = (await jobs.add(new_job(unique_key="daily"))).job

    with pytest.raises(UniqueKeyTaken) as refused:
        await (jobs.retry_now(first.id) if move == "retry" else jobs.replay(first.id))

    assert (refused.value.holder_id, refused.value.unique_key) == (holder.id, "daily")
    assert refused.value.current == "DLQ"
    stored = await jobs.get(first.id)
    assert stored is not None and stored.state is JobState.DLQ
    assert await dead_letters.get(first.id) is not None


async def test_a_cancelled_job_takes_its_free_unique_key_back_on_retry(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    first = (await jobs.add(new_job(unique_key="weekly"))).job
    await jobs.cancel(first.id, None)

    retried = await jobs.retry_now(first.id)

    assert retried.state is JobState.PENDING
    again, created, _ = await jobs.add(new_job(unique_key="weekly"))
    assert (again.id, created) == (first.id, False)


async def test_replay_starts_the_snooze_and_hand_back_counts_over(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    job = (await jobs.add(new_job())).job
    [claimed] = await jobs.claim([job.id], "worker-1")
    await jobs.settle([Snoozed(lease=lease_of(claimed), delay=timedelta(0))])
    [claimed] = await jobs.claim([job.id], "worker-1")
    await jobs.settle([DeadLettered(lease=lease_of(claimed), error="bad", reason="snoozed")])

    result = await jobs.replay(job.id)

    assert (result.snoozes, result.hand_backs, result.unknown_type_since) == (0, 0, None)
