"""`SyncClient` and `Client` against a real `taskforge dev` process. Only the default queue
(`jobs:ready`) has a worker: jobs on any other queue stay where a test puts them."""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskforge.client import (
    Client,
    ConnectionFailed,
    InvalidResponse,
    InvalidTransition,
    JobFailed,
    JobNotFound,
    RetryPolicy,
    ScheduleNotFound,
    SyncClient,
    Unauthorized,
    ValidationError,
    WaitTimeout,
)
from taskforge.domain.states import JobState
from tests.support import DevServer

pytestmark = pytest.mark.slow


def idle_queue() -> str:
    return f"client-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(dev_server: DevServer) -> Iterator[SyncClient]:
    with SyncClient(dev_server.url, token=dev_server.token) as tf:
        yield tf


def test_an_enqueued_job_runs_and_wait_returns_it_succeeded(client: SyncClient) -> None:
    job = client.enqueue("email", {"to": "a@b.com"}, max_attempts=5, timeout=12.5)
    assert (job.job_type, job.state, job.max_attempts, job.timeout) == (
        "email", JobState.PENDING, 5, 12.5
    )  # fmt: skip
    done = client.wait(job.id, timeout=10)
    assert (done.id, done.state, done.payload) == (job.id, JobState.SUCCEEDED, {"to": "a@b.com"})


def test_reusing_an_idempotency_key_returns_the_same_job_as_a_conflict(
    client: SyncClient,
) -> None:
    key = f"key-{uuid.uuid4().hex}"
    first = client.enqueue("noop", queue=idle_queue(), idempotency_key=key)
    again = client.enqueue("noop", idempotency_key=key)
    assert (again.id, first.conflict, again.conflict) == (first.id, False, True)


def test_a_unique_key_returns_the_unfinished_job_holding_it(client: SyncClient) -> None:
    queue = idle_queue()
    first = client.enqueue("noop", queue=queue, unique_key="nightly")
    again = client.enqueue("noop", queue=queue, unique_key="nightly")
    [batched] = client.enqueue_many([{"job_type": "noop", "queue": queue, "unique_key": "nightly"}])

    assert (again.id, again.unique_key, again.conflict) == (first.id, "nightly", True)
    assert (batched.id, batched.status, batched.conflict) == (first.id, "existing", True)
    client.cancel(first.id)
    assert client.enqueue("noop", queue=queue, unique_key="nightly").id != first.id


def test_enqueue_and_enqueue_many_carry_the_priority(client: SyncClient) -> None:
    queue = idle_queue()
    urgent = client.enqueue("noop", queue=queue, priority=0)
    [batched, ordinary] = client.enqueue_many(
        [{"job_type": "noop", "queue": queue, "priority": 9}, {"job_type": "noop", "queue": queue}]
    )

    assert urgent.priority == 0
    assert (client.get(batched.id).priority, client.get(ordinary.id).priority) == (9, 5)
    with pytest.raises(ValidationError, match="priority"):
        client.enqueue("noop", queue=queue, priority=10)


def test_a_queue_can_be_paused_listed_and_resumed(client: SyncClient) -> None:
    queue = idle_queue()
    client.enqueue("noop", queue=queue)

    paused = client.pause_queue(queue)

    assert (paused.queue, paused.paused) == (queue, True)
    assert paused.paused_at is not None
    listed = next(entry for entry in client.queues() if entry.queue == queue)
    assert (listed.paused, listed.total) == (True, 1)
    assert listed.states is not None and listed.states["PENDING"] == 1
    assert client.resume_queue(queue).paused is False
    assert not next(entry for entry in client.queues() if entry.queue == queue).paused


def test_a_schedule_can_be_added_listed_paused_resumed_and_removed(client: SyncClient) -> None:
    name = f"client-{uuid.uuid4().hex[:10]}"
    added = client.add_schedule(
        name, "30 2 * * *", "report", payload={"kind": "daily"}, timezone="Europe/Berlin"
    )

    assert (added.name, added.source, added.paused, added.payload) == (
        name, "api", False, {"kind": "daily"}
    )  # fmt: skip
    assert added.next_fire_at is not None and added.previous_fire_at is None
    assert name in [schedule.name for schedule in client.schedules()]
    assert client.pause_schedule(name).next_fire_at is None
    assert client.resume_schedule(name).next_fire_at == added.next_fire_at
    client.delete_schedule(name)
    with pytest.raises(ScheduleNotFound):
        client.schedule(name)
    with pytest.raises(ValidationError) as refused:
        client.add_schedule(name, "61 * * * *", "report")
    assert refused.value.details == {"field": "cron"}


def test_an_empty_queue_or_schedule_name_is_refused_before_any_request(
    client: SyncClient,
) -> None:
    # `/queues//pause` would be another route, answered "no such route".
    calls: dict[str, list[Callable[[], object]]] = {
        "queue": [
            lambda: client.list(queue=""),
            lambda: client.pause_queue(""),
            lambda: client.resume_queue(""),
        ],
        "name": [
            lambda: client.schedule(""),
            lambda: client.pause_schedule(""),
            lambda: client.resume_schedule(""),
            lambda: client.delete_schedule(""),
        ],
    }
    for field, refused_calls in calls.items():
        for call in refused_calls:
            with pytest.raises(ValidationError) as refused:
                call()
            assert (refused.value.status, refused.value.details) == (None, {"field": field})
            assert refused.value.message == (
                f"{field}: must be 1-128 characters of letters, digits and _ - . :"
            )


def test_a_queue_or_schedule_named_dot_or_dot_dot_is_addressed_by_its_name(
    client: SyncClient,
) -> None:
    # Valid names, but `/queues/../jobs` resolves to `/jobs`: every queue's jobs.
    for name in (".", ".."):
        job = client.enqueue("noop", queue=name)
        listed = client.list(queue=name, limit=500).items
        assert job.id in {each.id for each in listed}
        assert {each.queue for each in listed} == {name}
        assert (client.pause_queue(name).queue, client.resume_queue(name).paused) == (name, False)
        client.add_schedule(name, "@hourly", "report")
        assert client.schedule(name).name == name
        assert client.pause_schedule(name).paused
        client.delete_schedule(name)
        with pytest.raises(ScheduleNotFound):
            client.schedule(name)


async def test_the_async_client_manages_schedules(dev_server: DevServer) -> None:
    name = f"client-{uuid.uuid4().hex[:10]}"
    async with Client(dev_server.url, token=dev_server.token) as tf:
        added = await tf.add_schedule(name, "@hourly", "report", catch_up=True)
        assert (added.cron, added.catch_up) == ("@hourly", True)
        assert (await tf.pause_schedule(name)).paused
        assert (await tf.schedule(name)).paused
        await tf.delete_schedule(name)
        with pytest.raises(ScheduleNotFound):
            await tf.delete_schedule(name)


async def test_the_async_client_pauses_and_resumes_a_queue(dev_server: DevServer) -> None:
    queue = idle_queue()
    async with Client(dev_server.url, token=dev_server.token) as tf:
        assert (await tf.pause_queue(queue)).paused is True
        assert queue in {entry.queue for entry in await tf.queues() if entry.paused}
        assert (await tf.resume_queue(queue)).paused is False


def test_workers_lists_the_dev_servers_worker_with_its_job_types(client: SyncClient) -> None:
    [worker] = client.workers()

    assert "email" in worker.job_types
    assert worker.queues == ("jobs:ready",)
    assert worker.worker_id.startswith(f"{worker.host}:{worker.pid}:")
    assert 0 <= worker.busy_slots <= worker.concurrency
    assert worker.heartbeat_at >= worker.started_at


async def test_the_async_client_lists_the_same_workers(
    client: SyncClient, dev_server: DevServer
) -> None:
    async with Client(dev_server.url, token=dev_server.token) as tf:
        listed = await tf.workers()

    assert [w.worker_id for w in listed] == [w.worker_id for w in client.workers()]


def test_a_new_job_has_neither_snoozed_nor_been_handed_back(client: SyncClient) -> None:
    job = client.enqueue("noop", queue=idle_queue())

    assert (job.snoozes, job.hand_backs, job.unknown_type_since) == (0, 0, None)


def test_a_job_can_be_cancelled_retried_dead_lettered_and_replayed(client: SyncClient) -> None:
    queue = idle_queue()
    job = client.enqueue("noop", queue=queue, delay=3600)
    assert client.cancel(job.id, reason="user asked").state is JobState.CANCELLED
    assert client.get(job.id).reason == "user asked"
    assert client.retry(job.id).state is JobState.PENDING
    assert client.dlq(job.id, reason="poison").state is JobState.DLQ
    entry = client.dead_letter(job.id)
    assert (entry.job_id, entry.queue, entry.reason) == (job.id, queue, "poison")
    assert job.id in {item.job_id for item in client.dead_letters(limit=200).items}
    assert client.replay(job.id).state is JobState.PENDING


def test_list_filters_by_queue_and_state_and_pages(client: SyncClient) -> None:
    queue = idle_queue()
    jobs = [client.enqueue("noop", queue=queue) for _ in range(3)]
    client.cancel(jobs[0].id)
    page = client.list(queue=queue, status="pending", limit=1)
    assert (page.total, len(page.items), page.limit) == (2, 1, 1)
    assert page.items[0].id == jobs[2].id  # newest first
    assert client.list(queue=queue, status=JobState.CANCELLED).items[0].id == jobs[0].id
    stats = client.stats()
    assert {row.queue: row.total for row in stats.queues}[queue] == 3


def test_enqueue_many_splits_into_batches_of_a_thousand(dev_server: DevServer) -> None:
    batches: list[int] = []

    def count(request: httpx.Request) -> None:
        if request.url.path == "/jobs/batch":
            batches.append(request.content.count(b'"jobType"'))

    queue = idle_queue()
    with SyncClient(dev_server.url, token=dev_server.token) as client:
        client._http.event_hooks["request"].append(count)
        items = client.enqueue_many([{"job_type": "noop", "queue": queue}] * 2001)
        assert batches == [1000, 1000, 1]
        assert len({item.id for item in items}) == 2001
        assert {item.status for item in items} == {"created"}
        assert client.list(queue=queue).total == 2001


async def test_enqueue_many_refuses_a_job_without_a_type_or_with_an_unknown_key_sending_none(
    client: SyncClient, dev_server: DevServer
) -> None:
    queue = idle_queue()
    untyped: list[Any] = [{"job_type": "noop", "queue": queue}, {"queue": queue, "payload": {}}]
    camel_case: list[Any] = [{"job_type": "noop", "queue": queue}, {"jobType": "noop"}]

    with pytest.raises(ValidationError) as missing:
        client.enqueue_many(untyped)
    with pytest.raises(TypeError, match="jobType"):
        client.enqueue_many(camel_case)
    async with Client(dev_server.url, token=dev_server.token) as tf:
        with pytest.raises(ValidationError):
            await tf.enqueue_many(untyped)
        with pytest.raises(TypeError, match="jobType"):
            await tf.enqueue_many(camel_case)

    assert missing.value.details == {"field": "jobs[1].job_type", "index": 1}
    assert client.list(queue=queue).total == 0


def test_result_answers_a_succeeded_jobs_result_and_raises_job_failed_for_the_others(
    client: SyncClient,
) -> None:
    dead = client.enqueue("fail", {"terminal": True, "message": "card declined"})
    cancelled = client.cancel(client.enqueue("noop", queue=idle_queue()).id)

    assert client.result(client.enqueue("noop").id, timeout=10) is None  # noop returns None
    with pytest.raises(JobFailed) as dead_lettered:
        client.result(dead.id, timeout=10)
    with pytest.raises(JobFailed) as cancelled_job:
        client.result(cancelled.id, timeout=0)

    assert dead_lettered.value.job.state is JobState.DLQ
    assert dead_lettered.value.message == (
        f"job {dead.id} ended DLQ (terminal error); last error: TerminalError: card declined"
    )
    assert cancelled_job.value.job.id == cancelled.id
    assert cancelled_job.value.message.startswith(f"job {cancelled.id} ended CANCELLED")


async def test_the_async_clients_result_raises_job_failed_alike(
    client: SyncClient, dev_server: DevServer
) -> None:
    dead = client.enqueue("fail", {"terminal": True, "message": "card declined"})

    async with Client(dev_server.url, token=dev_server.token) as tf:
        with pytest.raises(JobFailed) as dead_lettered:
            await tf.result(dead.id, timeout=10)
    assert dead_lettered.value.details["lastError"] == "TerminalError: card declined"


def test_wait_gives_up_at_its_timeout(client: SyncClient) -> None:
    job = client.enqueue("noop", queue=idle_queue())
    with pytest.raises(WaitTimeout) as raised:
        client.wait(job.id, timeout=0.2)
    assert raised.value.details == {"jobId": str(job.id), "state": "PENDING"}


def test_wait_with_no_time_reads_the_job_once_and_returns_it_finished_or_names_its_state(
    client: SyncClient,
) -> None:
    # Its one poll was given no time: it failed before reaching the API, and the
    # WaitTimeout blamed the connection ("operation now in progress").
    finished = client.wait(client.enqueue("noop").id, timeout=10)
    pending = client.enqueue("noop", queue=idle_queue())

    assert client.wait(finished.id, 0).state is JobState.SUCCEEDED
    with pytest.raises(WaitTimeout) as unfinished:
        client.wait(pending.id, 0)
    assert unfinished.value.message == f"job {pending.id} still PENDING after 0s"


async def test_the_async_clients_wait_with_no_time_reads_the_job_once(
    client: SyncClient, dev_server: DevServer
) -> None:
    finished = client.wait(client.enqueue("noop").id, timeout=10)
    pending = client.enqueue("noop", queue=idle_queue())

    async with Client(dev_server.url, token=dev_server.token) as tf:
        assert (await tf.wait(finished.id, 0)).state is JobState.SUCCEEDED
        with pytest.raises(WaitTimeout) as unfinished:
            await tf.wait(pending.id, 0)
    assert unfinished.value.message == f"job {pending.id} still PENDING after 0s"


def test_each_failure_raises_its_typed_error_with_the_apis_code_and_request_id(
    client: SyncClient, dev_server: DevServer
) -> None:
    with pytest.raises(JobNotFound) as not_found:
        client.get(uuid.uuid4())
    assert (not_found.value.code, not_found.value.status) == ("not_found", 404)
    assert not_found.value.request_id

    finished = client.wait(client.enqueue("noop").id, timeout=10)
    with pytest.raises(InvalidTransition) as conflict:
        client.cancel(finished.id)
    assert conflict.value.code == "invalid_state_transition"

    with pytest.raises(ValidationError) as invalid:
        client.enqueue("noop", max_attempts=0)
    assert invalid.value.code == "validation_error"
    assert "maxAttempts" in invalid.value.message

    with SyncClient(dev_server.url, token="wrong") as stranger, pytest.raises(Unauthorized):
        stranger.stats()

    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{bound_not_listening.getsockname()[1]}"
        retry_policy = RetryPolicy(attempts=2, initial_delay=0.0, max_delay=0.0)
        with (
            SyncClient(closed, retry_policy=retry_policy) as nobody,
            pytest.raises(ConnectionFailed) as refused,
        ):
            nobody.enqueue("noop")
    assert refused.value.message == f"cannot connect to {closed}: connection refused"
    assert refused.value.status is None


async def test_the_async_client_enqueues_waits_and_raises_the_same_errors(
    dev_server: DevServer,
) -> None:
    async with Client(dev_server.url, token=dev_server.token) as tf:
        job = await tf.enqueue("email", {"to": "a@b.com"})
        assert (await tf.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
        queue = idle_queue()
        items = await tf.enqueue_many([{"job_type": "noop", "queue": queue}] * 3)
        assert [page_job.id for page_job in (await tf.list(queue=queue)).items] == [
            item.id for item in reversed(items)
        ]
        held = items[0].id
        assert (await tf.dlq(held)).state is JobState.DLQ
        assert (await tf.dead_letter(held)).job_id == held
        assert (await tf.replay(held)).state is JobState.PENDING
        assert (await tf.cancel(held)).state is JobState.CANCELLED
        with pytest.raises(InvalidTransition):
            await tf.cancel(held)
        with pytest.raises(JobNotFound):
            await tf.get(uuid.uuid4())
        with pytest.raises(ValidationError):
            await tf.enqueue("noop", delay=-1)
        with pytest.raises(WaitTimeout):
            await tf.wait(items[1].id, timeout=0.1)
        assert (await tf.stats()).total >= 3


def test_the_async_client_serves_one_event_loop_after_another(dev_server: DevServer) -> None:
    """A second `asyncio.run` must not reuse the first loop's connections: on them the job
    was stored but its answer never read, and a RuntimeError came instead."""
    queue = idle_queue()
    tf = Client(dev_server.url, token=dev_server.token)
    first = asyncio.run(tf.enqueue("noop", queue=queue))
    second = asyncio.run(tf.enqueue("noop", queue=queue))
    asyncio.run(tf.aclose())

    assert first.id != second.id
    with SyncClient(dev_server.url, token=dev_server.token) as client:
        assert client.list(queue=queue).total == 2
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(tf.stats())


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def another_web_server(tmp_path: Path) -> Iterator[str]:
    """What `python -m http.server` serves from an empty folder: a 404 page for every path."""
    handler = functools.partial(_QuietFiles, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


async def test_another_servers_404_is_an_invalid_response_not_a_missing_job(
    another_web_server: str,
) -> None:
    job_id = uuid.uuid4()
    with SyncClient(another_web_server) as tf:
        with pytest.raises(InvalidResponse) as missing_job:
            tf.get(job_id)
        with pytest.raises(InvalidResponse):
            tf.stats()
        with pytest.raises(InvalidResponse):
            tf.schedule("nightly")
    async with Client(another_web_server) as async_tf:
        with pytest.raises(InvalidResponse):
            await async_tf.get(job_id)

    assert missing_job.value.message == (
        f"GET /jobs/{job_id} answered 404 (File not found) with a body that is not the API's error"
    )
    assert missing_job.value.status == 404
