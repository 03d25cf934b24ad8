"""Contract: JobCounts and DeadLetterGroups, the dashboard's reads (and its group purge)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from taskforge.adapters.memory.dashboard import InMemoryDeadLetterGroups, InMemoryJobCounts
from taskforge.adapters.memory.state import InMemoryState
from taskforge.adapters.postgres import create_pool
from taskforge.adapters.postgres.dashboard import PostgresDeadLetterGroups, PostgresJobCounts
from taskforge.adapters.system import SystemClock, Uuid7Source
from taskforge.application.ports import DeadLetterGroups, JobCounts
from taskforge.domain.dashboard import COUNT_COLUMNS, error_shape
from taskforge.domain.job import Job
from taskforge.domain.states import JobState
from tests.job_stores import InMemoryJobs, JobRoles, PostgresJobs

from .conftest import JobFactory, PostgresBackend

Dashboard = tuple[JobRoles, JobCounts, DeadLetterGroups]


@pytest.fixture
async def dashboard(job_backend: PostgresBackend | None) -> AsyncIterator[Dashboard]:
    if job_backend is None:
        state = InMemoryState(SystemClock(), Uuid7Source())
        yield InMemoryJobs(state), InMemoryJobCounts(state), InMemoryDeadLetterGroups(state)
        return
    pool = await create_pool(
        job_backend.dsn, min_size=1, max_size=4, transaction_pooler=job_backend.transaction_pooler
    )
    try:
        async with pool.acquire() as conn:
            await conn.execute("TRUNCATE jobs, dead_letters, queues")
        yield PostgresJobs(pool), PostgresJobCounts(pool), PostgresDeadLetterGroups(pool)
    finally:
        await pool.close()


async def dead_letter(jobs: JobRoles, new_job: JobFactory, error: str, **fields: object) -> Job:
    job = (await jobs.add(new_job(**fields))).job
    return await jobs.dead_letter(job.id, error)


async def test_counts_split_pending_into_ready_and_delayed_and_name_every_state(
    dashboard: Dashboard, new_job: JobFactory, queue_name: str
) -> None:
    jobs, counts, _ = dashboard
    for _ in range(2):
        await jobs.add(new_job())
    await jobs.add(new_job(delay=3600.0))
    cancelled = (await jobs.add(new_job())).job
    await jobs.cancel(cancelled.id, None)
    await dead_letter(jobs, new_job, "boom")
    await jobs.add(new_job(queue=f"{queue_name}-other"))

    found = {entry.queue: entry for entry in await counts.per_queue(exact_up_to=100)}

    assert sorted(found) == [queue_name, f"{queue_name}-other"]
    mine = found[queue_name]
    assert set(mine.counts) == set(COUNT_COLUMNS)
    assert mine.counts == {
        "ready": 2,
        "delayed": 1,
        "running": 0,
        "failed": 0,
        "dlq": 1,
        "succeeded": 0,
        "cancelled": 1,
    }
    assert mine.estimated == frozenset()
    assert found[f"{queue_name}-other"].counts["ready"] == 1


async def test_a_count_above_the_exact_limit_is_exact_or_flagged_as_an_estimate(
    dashboard: Dashboard, new_job: JobFactory
) -> None:
    jobs, counts, _ = dashboard
    await jobs.add_many([new_job() for _ in range(5)])

    [entry] = await counts.per_queue(exact_up_to=2)

    if "ready" in entry.estimated:
        assert entry.counts["ready"] >= 3
    else:
        assert entry.counts["ready"] == 5
    assert "delayed" not in entry.estimated
    assert entry.counts["delayed"] == 0


async def test_many_delayed_jobs_leave_the_ready_count_exact_and_the_split_adds_up(
    dashboard: Dashboard, new_job: JobFactory
) -> None:
    jobs, counts, _ = dashboard
    await jobs.add_many([new_job(priority=priority % 10) for priority in range(5)])
    await jobs.add_many([new_job(delay=3600.0, priority=9) for _ in range(4)])

    [few_ready] = await counts.per_queue(exact_up_to=10)
    [both_crowded] = await counts.per_queue(exact_up_to=2)

    assert few_ready.estimated == frozenset()
    assert (few_ready.counts["ready"], few_ready.counts["delayed"]) == (5, 4)
    # Past the limit on both sides the split may be an estimate, named as one, but the
    # pending jobs still add up: the states' counts stay exact.
    assert both_crowded.counts["ready"] + both_crowded.counts["delayed"] == 9
    if both_crowded.estimated:
        assert both_crowded.estimated == {"ready", "delayed"}
        assert min(both_crowded.counts["ready"], both_crowded.counts["delayed"]) >= 3
    else:
        assert (both_crowded.counts["ready"], both_crowded.counts["delayed"]) == (5, 4)


async def test_dead_letters_whose_errors_differ_in_numbers_form_one_group(
    dashboard: Dashboard, new_job: JobFactory
) -> None:
    jobs, _, groups = dashboard
    first = await dead_letter(jobs, new_job, "order 17 not found", job_type="orders")
    last = await dead_letter(jobs, new_job, "order 42 not found", job_type="orders")
    await dead_letter(jobs, new_job, "order 42 not found", job_type="refunds")
    await dead_letter(jobs, new_job, "payment declined", job_type="orders")

    found = await groups.groups(limit=10)

    by_key = {(group.job_type, group.error_shape): group for group in found}
    assert set(by_key) == {
        ("orders", "order N not found"),
        ("refunds", "order N not found"),
        ("orders", "payment declined"),
    }
    orders = by_key["orders", "order N not found"]
    assert orders.count == 2
    assert orders.first_failed_at == first.finished_at
    assert orders.last_failed_at == last.finished_at
    # The most recently failing group first.
    assert (found[0].job_type, found[0].error_shape) == ("orders", "payment declined")
    assert len(await groups.groups(limit=1)) == 1


@pytest.mark.parametrize(
    "error",
    [
        "order 17 not found",
        "user 'ann-42' is locked",
        'key "a b 7" missing',
        f"job {uuid4()} gone",
        f"job {str(uuid4()).upper()} gone",
        "commit DEADbeefcafe0123456789ab rejected at 10:42:07",
        "first line 1\nsecond line 2",
        "é ünïcode 3 ✓",
        "x" * 300,
    ],
)
async def test_the_store_shapes_an_error_as_the_domain_does(
    dashboard: Dashboard, new_job: JobFactory, error: str
) -> None:
    jobs, _, groups = dashboard
    await dead_letter(jobs, new_job, error)

    [group] = await groups.groups(limit=10)

    assert group.error_shape == error_shape(error)


async def test_members_of_a_group_come_newest_first_and_purge_deletes_only_them(
    dashboard: Dashboard, new_job: JobFactory
) -> None:
    jobs, counts, groups = dashboard
    members = [await dead_letter(jobs, new_job, f"order {n} not found") for n in range(3)]
    other = await dead_letter(jobs, new_job, "payment declined")

    listed = await groups.members("email", "order N not found", limit=2)
    assert [entry.job_id for entry in listed] == [members[2].id, members[1].id]

    assert await groups.purge("email", "order N not found", limit=100) == 3

    assert [(group.error_shape, group.count) for group in await groups.groups(10)] == [
        ("payment declined", 1)
    ]
    for job in members:
        assert await jobs.get(job.id) is None
    assert await jobs.get(other.id) is not None
    [entry] = await counts.per_queue(exact_up_to=100)
    assert entry.counts["dlq"] == 1


async def test_a_replayed_job_leaves_its_group(dashboard: Dashboard, new_job: JobFactory) -> None:
    jobs, _, groups = dashboard
    replayed = await dead_letter(jobs, new_job, "order 1 not found")
    await dead_letter(jobs, new_job, "order 2 not found")

    await jobs.replay(replayed.id)

    assert [group.count for group in await groups.groups(10)] == [1]
    assert await groups.purge("email", "order N not found", limit=100) == 1
    kept = await jobs.get(replayed.id)
    assert kept is not None
    assert kept.state is JobState.PENDING
