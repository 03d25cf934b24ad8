"""Typed tasks through every target: a database connection of each driver (checked before
anything is written), `Client` and `SyncClient` against a live API, and a worker process
that serves the queue its task declares and hands the handler the decoded payload."""

from __future__ import annotations

import inspect
from typing import Any

import asyncpg
import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider

import taskforge
from taskforge.application.handlers import HandlerRegistry
from taskforge.client.values import Job
from taskforge.domain.states import JobState
from tests.integration.processes.conftest import Stack
from tests.integration.sdk.test_transactional_enqueue import (  # one suite of drivers
    Session,
    observer,
    session,
    stored_ids,
    stored_traceparents,
    traceparent_naming,
)
from tests.support import DevServer

__all__ = ["observer", "session"]


class Greeting(msgspec.Struct):
    """The payload of `typed_greet`, as support/taskforge_typed.py declares it."""

    name: str
    times: int = 1


def greet_task(queue: str) -> taskforge.Task[Greeting]:
    """The producer's declaration of support/taskforge_typed.py's task (the worker's
    process has its own), in a registry of its own."""

    @taskforge.task(
        "typed_greet", queue=queue, max_attempts=2, priority=7, registry=HandlerRegistry()
    )
    async def greet(greeting: Greeting, ctx: taskforge.JobContext) -> str:
        raise AssertionError("runs in the worker process")

    return greet


async def enqueue_on(
    session: Session, task: taskforge.Task[Greeting], payload: Any, **overrides: Any
) -> Job:
    answer: Any = task.enqueue(session.conn, payload, **overrides)
    if session.driver == "psycopg-sync":
        assert not inspect.isawaitable(answer), "a sync connection's enqueue is plain"
    else:
        answer = await answer
    assert isinstance(answer, Job)
    return answer


async def test_a_typed_task_is_stored_in_the_transaction_with_its_queue_and_policy(
    session: Session, observer: asyncpg.Connection, queue_name: str
) -> None:
    job = await enqueue_on(session, greet_task(queue_name), Greeting(name="Ada"))
    await session.commit()

    assert (job.queue, job.job_type, job.max_attempts, job.state) == (
        queue_name, "typed_greet", 2, JobState.PENDING,
    )  # fmt: skip
    assert job.payload == {"name": "Ada", "times": 1}
    assert await stored_ids(observer, queue_name) == {job.id}


async def test_a_typed_task_s_priority_is_stored_unless_the_enqueue_overrides_it(
    session: Session, observer: asyncpg.Connection, queue_name: str
) -> None:
    task = greet_task(queue_name)
    declared = await enqueue_on(session, task, Greeting(name="Ada"))
    overridden = await enqueue_on(session, task, Greeting(name="Bo"), priority=0)
    await session.commit()

    stored = await observer.fetch("SELECT id, priority FROM jobs WHERE queue = $1", queue_name)
    assert {row["id"]: row["priority"] for row in stored} == {declared.id: 7, overridden.id: 0}
    assert (declared.priority, overridden.priority) == (7, 0)


async def test_an_override_of_none_keeps_the_task_s_own_queue_and_policy(
    session: Session, observer: asyncpg.Connection, queue_name: str
) -> None:
    job = await enqueue_on(
        session, greet_task(queue_name), Greeting(name="Ada"), queue=None, priority=None
    )
    await session.commit()

    assert (job.queue, job.priority, job.max_attempts) == (queue_name, 7, 2)
    assert await stored_ids(observer, queue_name) == {job.id}


async def test_a_typed_task_enqueued_in_a_span_keeps_its_traceparent(
    session: Session, observer: asyncpg.Connection, queue_name: str
) -> None:
    task = greet_task(queue_name)
    with TracerProvider().get_tracer("the application").start_as_current_span("signup") as span:
        traced = await enqueue_on(session, task, Greeting(name="Ada"))
    untraced = await enqueue_on(session, task, Greeting(name="Bo"))
    await session.commit()

    assert await stored_traceparents(observer, [traced, untraced]) == {
        traced.id: traceparent_naming(span),
        untraced.id: None,
    }


async def test_a_payload_that_does_not_fit_writes_nothing(
    session: Session, observer: asyncpg.Connection, queue_name: str
) -> None:
    with pytest.raises(taskforge.ValidationError) as refused:
        await enqueue_on(session, greet_task(queue_name), {"name": "Ada", "times": "twice"})
    await session.commit()

    assert refused.value.details == {"field": "payload.times"}
    assert await stored_ids(observer, queue_name) == set()


async def test_a_worker_serves_the_queue_its_task_declares_and_decodes_the_payload(
    stack: Stack, migrated_dsn: str, queue_name: str
) -> None:
    stack.start_scheduler()
    worker = stack.start("worker", "--handlers", "taskforge_typed", TYPED_TASK_QUEUE=queue_name)
    conn = await asyncpg.connect(migrated_dsn)
    try:
        async with conn.transaction():
            job = await greet_task(queue_name).enqueue(conn, Greeting(name="Ada", times=2))
    finally:
        await conn.close()

    row = await stack.wait_for(str(job.id), "SUCCEEDED", "DLQ")
    assert row["state"] == "SUCCEEDED", row["last_error"]
    assert msgspec.json.decode(row["result"]) == "hello Ada hello Ada (attempt 1)"
    assert f"worker serving {queue_name} " in worker.tail(100)


def cleanup_task(queue: str) -> taskforge.Task[None]:
    """The producer's declaration of support/taskforge_typed.py's task taking no payload."""

    @taskforge.task("typed_cleanup", queue=queue, registry=HandlerRegistry())
    async def cleanup() -> str:
        raise AssertionError("runs in the worker process")

    return cleanup


async def test_a_worker_runs_a_task_taking_no_payload_and_dead_letters_one_sent_a_payload(
    stack: Stack, migrated_dsn: str, queue_name: str
) -> None:
    stack.start_scheduler()
    stack.start("worker", "--handlers", "taskforge_typed", TYPED_TASK_QUEUE=queue_name)
    conn = await asyncpg.connect(migrated_dsn)
    try:
        async with conn.transaction():
            job = await cleanup_task(queue_name).enqueue(conn)
            # as a producer that does not know the task (raw HTTP, another language) may
            sent = await taskforge.enqueue(
                conn, "typed_cleanup", {"dry_run": True}, queue=queue_name
            )
    finally:
        await conn.close()

    row = await stack.wait_for(str(job.id), "SUCCEEDED", "DLQ")
    assert row["state"] == "SUCCEEDED", row["last_error"]
    assert (job.payload, msgspec.json.decode(row["result"])) == ({}, "cleaned")
    refused = await stack.wait_for(str(sent.id), "SUCCEEDED", "DLQ")
    assert refused["state"] == "DLQ"
    assert "payload.dry_run" in refused["last_error"]


def test_a_sync_client_enqueues_a_typed_task_and_waits_for_it(dev_server: DevServer) -> None:
    # `taskforge dev` runs its demo `email` handler on its default queue.
    @taskforge.task("email", registry=HandlerRegistry())
    def send_email(email: Greeting) -> None: ...

    with taskforge.SyncClient(dev_server.url, token=dev_server.token) as tf:
        job = send_email.enqueue(tf, Greeting(name="Ada"))
        assert job.payload == {"name": "Ada", "times": 1}
        assert tf.wait(job.id, timeout=10).state is JobState.SUCCEEDED


async def test_a_client_enqueues_a_typed_task_and_nothing_is_sent_for_a_bad_one(
    dev_server: DevServer,
) -> None:
    @taskforge.task("email", max_attempts=4, registry=HandlerRegistry())
    async def send_email(email: Greeting) -> None: ...

    async with taskforge.Client(dev_server.url, token=dev_server.token) as tf:
        job = await send_email.enqueue(tf, Greeting(name="Ada"), priority=3)
        assert (job.max_attempts, job.priority, (await tf.wait(job.id, timeout=10)).state) == (
            4, 3, JobState.SUCCEEDED,
        )  # fmt: skip
        before = (await tf.list(status="PENDING")).total
        with pytest.raises(taskforge.ValidationError):
            await send_email.enqueue(tf, {"times": 1})  # type: ignore[call-overload]
        assert (await tf.list(status="PENDING")).total == before
