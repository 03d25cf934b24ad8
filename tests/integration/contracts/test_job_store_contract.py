"""Contract: JobStore. Creating jobs (add, add_many), idempotency keys, which created jobs
need their hint now, reading them back (get, find, stats), ping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import msgspec
import pytest

from taskforge.adapters.postgres.job_copy import COPY_FROM
from taskforge.application.ports import ListFilter
from taskforge.domain.errors import JobIdTaken
from taskforge.domain.job import Job, Lease
from taskforge.domain.new_job import NewJob
from taskforge.domain.outcome import DeadLettered, RetryLater, Succeeded
from taskforge.domain.policy import RetryPolicy
from taskforge.domain.states import JobState
from taskforge.domain.validation import MAX_PAYLOAD_DEPTH, Page
from tests.job_stores import JobRoles

JobFactory = Callable[..., NewJob]


async def test_add_stores_a_pending_job_with_its_policy(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    policy = RetryPolicy(max_attempts=5, initial_delay=0.5, backoff=3.0, max_delay=60, jitter=True)
    request = new_job(
        payload={"to": "a@b.com", "tags": ["x", 1, None]},
        policy=policy,
        visibility_timeout=12.5,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )

    job, created, _ = await jobs.add(request)

    assert created
    assert job.id == request.id
    assert job.state is JobState.PENDING
    assert job.queue == request.queue
    assert job.job_type == "email"
    assert job.payload == {"to": "a@b.com", "tags": ["x", 1, None]}
    assert job.policy == policy
    assert job.visibility_timeout == 12.5
    assert job.traceparent == request.traceparent
    assert (job.attempt_count, job.retry_count) == (0, 0)
    assert job.lease_token is None
    assert job.lease_expires_at is None
    assert job.started_at is None
    assert job.finished_at is None
    assert job.created_at.tzinfo is not None
    assert job.next_run_at == job.created_at
    assert await jobs.get(job.id) == job


async def test_get_unknown_job_returns_none(jobs: JobRoles) -> None:
    assert await jobs.get(uuid4()) is None


async def test_run_at_makes_a_delayed_job(jobs: JobRoles, new_job: JobFactory) -> None:
    run_at = datetime.now(UTC) + timedelta(hours=1)

    job = (await jobs.add(new_job(run_at=run_at))).job

    assert job.next_run_at == run_at
    assert job.state is JobState.PENDING


async def test_delay_is_counted_from_the_store_clock(jobs: JobRoles, new_job: JobFactory) -> None:
    job = (await jobs.add(new_job(delay=90.0))).job

    assert job.next_run_at - job.created_at == timedelta(seconds=90)


async def test_reused_idempotency_key_returns_the_existing_job(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    first, first_created, _ = await jobs.add(new_job(idempotency_key="abc-123", payload={"n": 1}))

    second, second_created, _ = await jobs.add(new_job(idempotency_key="abc-123", payload={"n": 2}))

    assert (first_created, second_created) == (True, False)
    assert second == first
    assert second.payload == {"n": 1}


async def test_jobs_without_idempotency_key_never_collide(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    results = [await jobs.add(new_job()) for _ in range(3)]

    assert all(added.created for added in results)
    assert len({added.job.id for added in results}) == 3


async def test_concurrent_enqueues_with_one_key_store_one_job(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    requests = [new_job(idempotency_key="same-key") for _ in range(50)]

    results = await asyncio.gather(*(jobs.add(request) for request in requests))

    assert len({added.job.id for added in results}) == 1
    assert [added.created for added in results].count(True) == 1
    stored, total = await jobs.find(ListFilter(queue=queue_name), Page())
    assert total == 1
    assert stored[0].id == results[0][0].id


async def test_add_many_stores_every_job_and_answers_in_order(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    requests = [new_job(payload={"n": n}) for n in range(5)]

    results = await jobs.add_many(requests)

    assert [added.job.id for added in results] == [request.id for request in requests]
    assert [added.job.payload for added in results] == [{"n": n} for n in range(5)]
    assert all(added.created for added in results)
    for job, _, _ in results:
        assert await jobs.get(job.id) == job


async def test_add_many_keeps_every_field_of_every_job(jobs: JobRoles, new_job: JobFactory) -> None:
    # A batch takes another path into the store than a single job does: every field of
    # every job must survive it.
    policy = RetryPolicy(max_attempts=5, initial_delay=0.5, backoff=3.0, max_delay=60, jitter=True)
    run_at = datetime.now(UTC) + timedelta(hours=1)
    requests = [
        new_job(
            payload={"to": "ü@b.com", "text": 'line\u2028break "quoted" \\ 🙂', "n": [1, 2.5]},
            policy=policy,
            visibility_timeout=12.5,
            traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            idempotency_key="batch-key-1",
        ),
        new_job(run_at=run_at),
        new_job(delay=90.0),
    ]

    results = await jobs.add_many(requests)

    [first, later, delayed] = [added.job for added in results]
    assert first.payload == requests[0].payload
    assert first.policy == policy
    assert first.visibility_timeout == 12.5
    assert first.traceparent == requests[0].traceparent
    assert first.idempotency_key == "batch-key-1"
    assert first.next_run_at == first.created_at
    assert later.next_run_at == run_at
    assert later.policy == RetryPolicy()
    assert later.idempotency_key is None
    assert delayed.next_run_at - delayed.created_at == timedelta(seconds=90)
    for job in (first, later, delayed):
        assert job.state is JobState.PENDING
        assert await jobs.get(job.id) == job


@pytest.mark.parametrize("clash_with", ["stored", "batch"])
async def test_a_batch_with_a_job_that_cannot_be_stored_stores_none_of_it(
    jobs: JobRoles, new_job: JobFactory, clash_with: str
) -> None:
    # An id already taken (by a stored job, or earlier in the batch) is one failure every
    # store can meet; the batch answers that error and leaves no job of it behind, keys
    # included.
    stored = (await jobs.add(new_job())).job
    first = new_job(idempotency_key="fresh")
    taken_id = stored.id if clash_with == "stored" else first.id
    batch = [first, new_job(delay=60.0), new_job(id=taken_id), new_job()]

    with pytest.raises(JobIdTaken):
        await jobs.add_many(batch)

    new_ids = {job.id for job in batch} - {stored.id}
    assert [job_id for job_id in new_ids if await jobs.get(job_id) is not None] == []
    assert await jobs.get(stored.id) == stored
    again, created, _ = await jobs.add(new_job(idempotency_key="fresh"))
    assert created and again.id != first.id


@pytest.mark.parametrize("keyed", [False, True], ids=["without keys", "with keys"])
async def test_one_job_whose_id_is_taken_is_refused_and_the_holder_kept(
    jobs: JobRoles, new_job: JobFactory, keyed: bool
) -> None:
    stored = (await jobs.add(new_job())).job
    keys: dict[str, Any] = {"idempotency_key": "k-taken", "unique_key": "u-taken"} if keyed else {}

    with pytest.raises(JobIdTaken) as taken:
        await jobs.add(new_job(id=stored.id, payload={"other": True}, **keys))

    assert taken.value.job_id == stored.id
    assert await jobs.get(stored.id) == stored


async def test_a_large_batch_with_a_taken_id_stores_none_of_it(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    # Large and keyless, as Postgres stores such a batch by COPY.
    stored = (await jobs.add(new_job())).job
    batch = [new_job() for _ in range(COPY_FROM)]
    batch[COPY_FROM // 2] = new_job(id=stored.id)

    with pytest.raises(JobIdTaken) as taken:
        await jobs.add_many(batch)

    assert taken.value.job_id == stored.id
    assert [job.id for job in batch if await jobs.get(job.id) not in (None, stored)] == []
    assert await jobs.get(stored.id) == stored


async def test_a_large_batch_answers_each_job_as_it_is_read_back(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    # Large and keyless, as Postgres stores such a batch by COPY: its answers hold what the
    # store holds, payloads as jsonb reads them back (key order, numbers) included.
    soon = datetime.now(UTC) + timedelta(hours=1)
    past = datetime(2020, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    payloads: list[dict[str, Any]] = [
        {},
        {"longer-key": 1, "k": 1.5e20, "nested": {"zz": [1.0, 2, -0.0], "a": None}},
        {"é": "ü", "e": 1e-7, "b": [1e16, 2.5e-5, True, "x"], "": {"bb": 1, "a": 123456789}},
        {"f": 1.2345678901234568e17, "g": 0.1, "h": -3e300, "i": 5e-324},
    ]
    batch = [
        new_job(
            payload=payloads[index % len(payloads)],
            run_at=(None, soon, past)[index % 3],
            priority=index % 10,
            policy=RetryPolicy(max_attempts=1 + index % 4, jitter=index % 2 == 0),
            timeout=float(index % 5),
            traceparent=(
                None if index % 2 else "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            ),
        )
        for index in range(COPY_FROM + 3)
    ]

    added = await jobs.add_many(batch)

    for request, (job, created, needs_hint) in zip(batch, added, strict=True):
        read = await jobs.get(job.id)
        assert read == job
        assert read is not None
        assert msgspec.json.encode(read.payload) == msgspec.json.encode(job.payload)
        assert created
        due_now = request.run_at is None or request.run_at <= job.created_at
        assert needs_hint is due_now
        assert job.next_run_at == (job.created_at if request.run_at is None else request.run_at)
    assert len({job.created_at for job, _, _ in added}) == 1
    counts = {stats.queue: stats.counts for stats in await jobs.stats()}
    assert counts[batch[0].queue][JobState.PENDING] == len(batch)


async def test_a_large_batch_of_deeply_nested_payloads_is_stored_and_answered(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    # As deep as a payload may nest: the object, the lists, then the leaf's three levels.
    deep: Any = {"leaf": [1.5e20, {"b": 1, "a": 2}]}
    for _ in range(MAX_PAYLOAD_DEPTH - 4):
        deep = [deep]
    batch = [new_job(payload={"deep": deep, "n": index}) for index in range(COPY_FROM)]

    added = await jobs.add_many(batch)

    for job, created, _ in added:
        read = await jobs.get(job.id)
        assert created and read == job
        assert read is not None
        assert msgspec.json.encode(read.payload) == msgspec.json.encode(job.payload)


async def test_add_many_of_nothing_is_nothing(jobs: JobRoles) -> None:
    assert await jobs.add_many([]) == []


async def test_add_many_resolves_taken_and_repeated_keys(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    existing = (await jobs.add(new_job(idempotency_key="taken"))).job
    requests = [
        new_job(idempotency_key="fresh"),
        new_job(idempotency_key="taken"),
        new_job(idempotency_key="fresh"),  # repeats the first key of this very batch
        new_job(),
    ]

    results = await jobs.add_many(requests)

    assert [added.created for added in results] == [True, False, False, True]
    assert results[0][0].id == requests[0].id
    assert results[1][0] == existing
    assert results[2][0] == results[0][0]
    assert results[3][0].id == requests[3].id
    assert await jobs.get(requests[2].id) is None


async def test_a_batch_becomes_visible_all_at_once(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    requests = [new_job() for _ in range(300)]
    seen: set[int] = set()

    async def watch(done: asyncio.Event) -> None:
        while not done.is_set():
            _, total = await jobs.find(ListFilter(queue=queue_name), Page(limit=1))
            seen.add(total)
            await asyncio.sleep(0)

    done = asyncio.Event()
    watcher = asyncio.create_task(watch(done))
    await jobs.add_many(requests)
    done.set()
    await watcher
    _, total = await jobs.find(ListFilter(queue=queue_name), Page(limit=1))

    assert seen <= {0, 300}
    assert total == 300


@pytest.mark.parametrize("batched", [False, True], ids=["add", "add_many"])
async def test_a_job_due_at_once_needs_a_hint_and_a_delayed_one_does_not(
    jobs: JobRoles, new_job: JobFactory, batched: bool
) -> None:
    now = datetime.now(UTC)
    requests = [
        new_job(),
        new_job(run_at=now - timedelta(minutes=5)),  # a run time in the past is due at once
        new_job(delay=90.0),
        new_job(run_at=now + timedelta(hours=1)),
    ]

    if batched:
        results = await jobs.add_many(requests)
    else:
        results = [await jobs.add(request) for request in requests]

    assert [added.created for added in results] == [True, True, True, True]
    assert [added.needs_hint for added in results] == [True, True, False, False]


async def test_a_job_already_stored_under_its_key_needs_no_second_hint(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    first = await jobs.add(new_job(idempotency_key="taken"))
    await jobs.add(new_job(unique_key="held"))

    again = await jobs.add(new_job(idempotency_key="taken"))
    batch = await jobs.add_many(
        [
            new_job(idempotency_key="taken"),
            new_job(idempotency_key="fresh"),
            new_job(idempotency_key="fresh"),  # yields to the job just before it
            new_job(unique_key="held"),
        ]
    )

    assert (first.created, first.needs_hint) == (True, True)
    assert (again.job.id, again.created, again.needs_hint) == (first.job.id, False, False)
    assert [(added.created, added.needs_hint) for added in batch] == [
        (False, False),
        (True, True),
        (False, False),
        (False, False),
    ]


async def test_the_jobs_answered_without_a_hint_are_left_to_the_sweeps(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    # A job answered as needing its hint is stored as published, so no sweep sends a second
    # one; a delayed job is published by the sweeps once it is due.
    due, overdue, delayed = await jobs.add_many(
        [new_job(), new_job(run_at=datetime.now(UTC) - timedelta(minutes=5)), new_job(delay=0.3)]
    )
    assert (due.needs_hint, overdue.needs_hint, delayed.needs_hint) == (True, True, False)
    assert await jobs.find_never_published(100) == []

    give_up = time.monotonic() + 15.0
    while True:
        hints = await jobs.find_never_published(100)
        if hints or time.monotonic() > give_up:
            break
        await asyncio.sleep(0.05)

    assert [hint.job_id for hint in hints] == [delayed.job.id]


async def test_the_job_returned_on_add_is_the_job_read_back(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    # Every store keeps JSON as Postgres' jsonb does (keys reordered, some numbers
    # rewritten): the answer to the add shows the payload as every later read will, the
    # same on every backend.
    payload = {"longer-key": 1, "k": 1.5e20, "nested": {"zz": [1.0, 2, -0.0], "a": None}}

    [(single, _, _)] = await jobs.add_many([new_job(payload=payload)])
    batch = await jobs.add_many([new_job(payload=payload), new_job(payload=payload)])

    for job in (single, *(added.job for added in batch)):
        read = await jobs.get(job.id)
        assert read == job
        assert read is not None
        # Equal as Python values, and equal as JSON too (1.5e20 == 150000000000000000000).
        assert msgspec.json.encode(read.payload) == msgspec.json.encode(job.payload)
        assert msgspec.json.encode(job.payload) == (
            b'{"k":150000000000000000000,"nested":{"a":null,"zz":[1.0,2,0.0]},"longer-key":1}'
        )


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
    batch = [added.job for added in await jobs.add_many([new_job() for _ in range(5)])]
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
    mine = [added.job for added in await jobs.add_many([new_job() for _ in range(3)])]
    theirs = (await jobs.add(new_job(queue=other))).job
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


async def test_find_without_a_state_filter_lists_every_state_newest_first_in_pages(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    # Each job in its own insert, so creation times differ; every state but FAILED is
    # mixed through the newest-first order, with a job of another queue among them.
    added = [(await jobs.add(new_job()))[0] for _ in range(5)]
    other = (await jobs.add(new_job(queue=f"{queue_name}-other"))).job
    newest = (await jobs.add(new_job())).job
    claimed = {
        job.id: job for job in await jobs.claim([added[0].id, added[1].id, added[3].id], "w")
    }
    await jobs.settle(
        [
            Succeeded(lease=lease_of(claimed[added[0].id])),
            DeadLettered(lease=lease_of(claimed[added[3].id]), error="e", reason="terminal"),
        ]
    )
    await jobs.cancel(added[2].id, "not needed")
    mine = [newest, *reversed(added)]
    everyone = [newest, other, *reversed(added)]

    for where, expected in ((ListFilter(), everyone), (ListFilter(queue=queue_name), mine)):
        pages = [await jobs.find(where, Page(limit=2, offset=offset)) for offset in (0, 2, 4, 6)]
        listed = [job.id for page, _ in pages for job in page]
        assert listed == [job.id for job in expected], where
        assert {total for _, total in pages} == {len(expected)}
    states = [job.state for job in (await jobs.find(ListFilter(queue=queue_name), Page()))[0]]
    assert states == [
        JobState.PENDING,
        JobState.PENDING,
        JobState.DLQ,
        JobState.CANCELLED,
        JobState.RUNNING,
        JobState.SUCCEEDED,
    ]


async def test_find_filters_by_job_type_and_idempotency_key(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    email = (await jobs.add(new_job(job_type="email", idempotency_key=f"{queue_name}-k1"))).job
    report = (await jobs.add(new_job(job_type="report"))).job
    await jobs.add(new_job(job_type="report", queue=f"{queue_name}-other"))

    reports, reports_total = await jobs.find(
        ListFilter(queue=queue_name, job_type="report"), Page()
    )
    keyed, keyed_total = await jobs.find(ListFilter(idempotency_key=f"{queue_name}-k1"), Page())

    assert (reports_total, [job.id for job in reports]) == (1, [report.id])
    assert (keyed_total, [job.id for job in keyed]) == (1, [email.id])
    assert await jobs.find(ListFilter(job_type="email", state=JobState.DLQ), Page()) == ([], 0)


async def test_stats_count_every_state_of_every_queue(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    other = f"{queue_name}-b"
    mine = [added.job for added in await jobs.add_many([new_job() for _ in range(4)])]
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


async def test_ping_answers_without_raising(jobs: JobRoles) -> None:
    await jobs.ping()


async def test_a_unique_key_returns_the_unfinished_job_holding_it(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    first, created, _ = await jobs.add(new_job(unique_key="report:42"))

    second, again, _ = await jobs.add(new_job(unique_key="report:42"))

    assert created and not again
    assert second.id == first.id
    assert second.unique_key == "report:42"


async def test_a_unique_key_is_held_per_queue(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    first = (await jobs.add(new_job(unique_key="k"))).job

    other, created, _ = await jobs.add(new_job(unique_key="k", queue=f"{queue_name}-other"))

    assert created
    assert other.id != first.id


async def test_concurrent_enqueues_with_one_unique_key_store_one_job(
    jobs: JobRoles, new_job: JobFactory, queue_name: str
) -> None:
    requests = [new_job(unique_key="same-unique-key") for _ in range(50)]

    results = await asyncio.gather(*(jobs.add(request) for request in requests))

    assert len({added.job.id for added in results}) == 1
    assert [added.created for added in results].count(True) == 1
    _, total = await jobs.find(ListFilter(queue=queue_name), Page())
    assert total == 1


@pytest.mark.parametrize(
    "finish",
    ["succeeded", "dead-lettered", "cancelled"],
)
async def test_a_unique_key_is_free_once_its_job_finished(
    jobs: JobRoles, new_job: JobFactory, finish: str
) -> None:
    first = (await jobs.add(new_job(unique_key="nightly"))).job
    if finish == "cancelled":
        await jobs.cancel(first.id, None)
    else:
        [running] = await jobs.claim([first.id], "w1")
        assert running.lease_token is not None
        lease = Lease(job_id=first.id, token=running.lease_token)
        if finish == "succeeded":
            await jobs.settle([Succeeded(lease=lease)])
        else:
            await jobs.settle([DeadLettered(lease=lease, error="boom", reason="terminal")])

    second, created, _ = await jobs.add(new_job(unique_key="nightly"))

    assert created
    assert second.id != first.id


async def test_a_failed_job_waiting_to_retry_still_holds_its_unique_key(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    first = (await jobs.add(new_job(unique_key="sync"))).job
    [running] = await jobs.claim([first.id], "w1")
    assert running.lease_token is not None
    lease = Lease(job_id=first.id, token=running.lease_token)
    await jobs.settle([RetryLater(lease=lease, error="boom", delay=timedelta(seconds=60))])

    again, created, _ = await jobs.add(new_job(unique_key="sync"))

    assert not created
    assert (again.id, again.state) == (first.id, JobState.FAILED)


async def test_a_batch_stores_the_first_of_its_jobs_sharing_a_unique_key(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    held = (await jobs.add(new_job(unique_key="held"))).job
    batch = [
        new_job(unique_key="fresh"),
        new_job(unique_key="held"),
        new_job(unique_key="fresh"),
        new_job(),
    ]

    results = await jobs.add_many(batch)

    assert [added.created for added in results] == [True, False, False, True]
    assert results[1][0].id == held.id
    assert results[2][0].id == batch[0].id


@pytest.mark.parametrize("keys", [("b", "a"), ("a", "b"), (None, "a"), ("a", None)])
async def test_a_batch_stores_the_first_of_two_jobs_sharing_a_unique_key_whatever_their_other_keys(
    jobs: JobRoles, new_job: JobFactory, keys: tuple[str | None, str | None]
) -> None:
    """The first in the batch, not the one whose idempotency key sorts first (the HTTP
    client gives every job a random one)."""
    first, second = (new_job(idempotency_key=key, unique_key="shared") for key in keys)

    results = await jobs.add_many([first, second])

    assert [added.created for added in results] == [True, False]
    assert [added.job.id for added in results] == [first.id, first.id]


async def test_a_batch_reads_as_its_jobs_one_after_the_other(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    """The second yields to the first by its unique key, so its idempotency key stays free
    and the third, holding it, is stored; the fourth yields to the third by that key."""
    held = (await jobs.add(new_job(idempotency_key="taken"))).job
    batch = [
        new_job(idempotency_key="taken", unique_key="u1"),  # yields to `held`: u1 stays free
        new_job(idempotency_key="k2", unique_key="u1"),  # u1 free: stored
        new_job(idempotency_key="k3", unique_key="u1"),  # yields to the second
        new_job(idempotency_key="k3", unique_key="u2"),  # k3 free (the third yielded): stored
        new_job(idempotency_key="k3"),  # yields to the fourth
    ]

    results = await jobs.add_many(batch)

    assert [added.created for added in results] == [False, True, False, True, False]
    assert [added.job.id for added in results] == [
        held.id,
        batch[1].id,
        batch[1].id,
        batch[3].id,
        batch[3].id,
    ]


async def test_an_idempotency_key_outranks_a_unique_key(
    jobs: JobRoles, new_job: JobFactory
) -> None:
    by_key = (await jobs.add(new_job(idempotency_key="idem"))).job
    await jobs.add(new_job(unique_key="uniq"))

    found, created, _ = await jobs.add(new_job(idempotency_key="idem", unique_key="uniq"))

    assert not created
    assert found.id == by_key.id
