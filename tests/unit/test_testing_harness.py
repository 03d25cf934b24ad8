"""taskforge.testing.InMemoryTaskForge: the API, a worker and a scheduler in the test's event
loop, on the in-memory backend, drained until no job is due or running."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

import taskforge
import taskforge.testing
from taskforge.application.handlers import HandlerRegistry, JobContext, TerminalError
from taskforge.client import Client
from tests.unit.test_testing import Invoice, Order

registry = HandlerRegistry()
chain_client: list[Client] = []
"""The client a chained handler enqueues through: the running harness's."""
hook_calls: list[tuple[str, bool]] = []
cancelled: list[str] = []


@taskforge.task("harness.invoice", queue="billing", registry=registry)
async def invoice(order: Order) -> Invoice:
    await asyncio.sleep(0.02)  # still running when drain first looks
    return Invoice(order_id=order.order_id, total=order.quantity * 2.5)


@taskforge.task("harness.thread", registry=registry)
def thread_name() -> str:
    return threading.current_thread().name


@taskforge.task("harness.flaky", registry=registry)  # 3 attempts, 1 s then 2 s apart
def flaky() -> None:
    raise ValueError("boom")


@taskforge.task("harness.refuse", registry=registry)
def refuse() -> None:
    raise TerminalError("no such order")


@taskforge.task("harness.order", registry=registry)
async def place_order(order: Order) -> None:
    await asyncio.sleep(0.02)
    await invoice.enqueue(chain_client[0], order)


@taskforge.task("harness.stuck", registry=registry)
async def stuck() -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        cancelled.append("stuck")
        raise


@registry.on_failure
async def record(ctx: JobContext, exc: BaseException, dead_lettered: bool) -> None:
    await asyncio.sleep(0.05)  # still running when the failure is settled
    hook_calls.append((str(exc), dead_lettered))


@pytest.fixture
async def tf() -> AsyncIterator[taskforge.testing.InMemoryTaskForge]:
    hook_calls.clear()
    cancelled.clear()
    async with taskforge.testing.InMemoryTaskForge(registry) as harness:
        chain_client[:] = [harness.client]
        yield harness
    chain_client.clear()


async def test_a_typed_task_enqueued_through_the_client_is_drained_with_its_result(
    tf: taskforge.testing.InMemoryTaskForge,
) -> None:
    job = await invoice.enqueue(tf.client, Order(order_id="o-42", quantity=4))

    await tf.drain()

    done = await tf.client.get(job.id)
    assert (done.state, done.queue, done.result) == (
        "SUCCEEDED", "billing", {"order_id": "o-42", "total": 10.0},
    )  # fmt: skip


async def test_a_plain_handler_runs_on_a_worker_thread(
    tf: taskforge.testing.InMemoryTaskForge,
) -> None:
    job = await thread_name.enqueue(tf.client)

    await tf.drain()

    assert (await tf.client.result(job.id, timeout=0)).startswith("taskforge-handler")


async def test_a_failing_job_runs_its_attempts_without_waiting_its_backoff_and_is_dead_lettered(
    tf: taskforge.testing.InMemoryTaskForge,
) -> None:
    job = await flaky.enqueue(tf.client)
    started = time.monotonic()

    await tf.drain(timeout=1.0)  # its backoff alone is 3 s

    dead = await tf.client.get(job.id)
    assert (dead.state, dead.attempt_count, dead.reason) == ("DLQ", 3, "attempts exhausted")
    assert time.monotonic() - started < 1.0
    assert tf.clock.skipped > timedelta(seconds=2.5)  # 1 s and 2 s, less the time taken
    assert hook_calls == [("boom", False), ("boom", False), ("boom", True)]


async def test_drain_returns_once_the_failure_hooks_have_been_called(
    tf: taskforge.testing.InMemoryTaskForge,
) -> None:
    await refuse.enqueue(tf.client)

    await tf.drain()

    assert hook_calls == [("no such order", True)]


async def test_a_delayed_job_waits_unless_drained_with_the_scheduled_ones(
    tf: taskforge.testing.InMemoryTaskForge,
) -> None:
    job = await thread_name.enqueue(tf.client, delay=timedelta(hours=1))

    await tf.drain()
    assert (await tf.client.get(job.id)).state == "PENDING"

    await tf.drain(with_scheduled=True)
    assert (await tf.client.get(job.id)).state == "SUCCEEDED"
    assert tf.clock.skipped >= timedelta(minutes=59)


async def test_a_job_enqueued_by_a_handler_is_drained_too(
    tf: taskforge.testing.InMemoryTaskForge,
) -> None:
    await place_order.enqueue(tf.client, Order(order_id="o-7", quantity=2))

    await tf.drain()

    [listed] = (await tf.client.list(queue="billing")).items
    child = await tf.client.get(listed.id)
    assert (child.job_type, child.state, child.result) == (
        "harness.invoice", "SUCCEEDED", {"order_id": "o-7", "total": 5.0},
    )  # fmt: skip


async def test_drain_timing_out_names_the_unfinished_job(
    tf: taskforge.testing.InMemoryTaskForge,
) -> None:
    job = await stuck.enqueue(tf.client)

    with pytest.raises(TimeoutError) as raised:
        await tf.drain(timeout=0.2)

    message = str(raised.value)
    assert message.startswith("drain did not finish within 0.2s: 1 job(s) unfinished: ")
    assert f"{job.id} (harness.stuck on jobs:ready) RUNNING, attempt 1 of 3" in message


async def test_drain_names_a_job_no_worker_serves(
    tf: taskforge.testing.InMemoryTaskForge,
) -> None:
    job = await tf.client.enqueue("harness.thread", queue="elsewhere")

    with pytest.raises(TimeoutError, match="the worker does not serve its queue") as raised:
        await tf.drain(timeout=0.1)

    assert str(job.id) in str(raised.value)


async def test_leaving_the_block_interrupts_running_work_and_stops_every_task() -> None:
    before = asyncio.all_tasks()
    cancelled.clear()

    with pytest.raises(ZeroDivisionError):
        await _fail_while_a_job_runs()

    assert cancelled == ["stuck"]
    assert asyncio.all_tasks() == before
    assert [t.name for t in threading.enumerate() if t.name.startswith("taskforge-")] == []


async def _fail_while_a_job_runs() -> None:
    async with taskforge.testing.InMemoryTaskForge(registry) as tf:
        job = await stuck.enqueue(tf.client)
        await _until_running(tf, str(job.id))
        raise ZeroDivisionError("the test body fails while the job runs")


async def _until_running(tf: taskforge.testing.InMemoryTaskForge, job_id: str) -> None:
    deadline = time.monotonic() + 5
    while (await tf.client.get(job_id)).state != "RUNNING":
        assert time.monotonic() < deadline, "the job never started"
        await asyncio.sleep(0.01)


def test_importing_the_testing_module_loads_the_harness_only_on_first_use() -> None:
    code = (
        "import json, sys, taskforge.testing\n"
        "before = sorted(m for m in ('litestar', 'dishka', 'httpx') if m in sys.modules)\n"
        "harness = taskforge.testing.InMemoryTaskForge\n"
        "print(json.dumps([before, 'litestar' in sys.modules, harness.__name__]))"
    )
    printed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(printed.stdout) == [[], True, "InMemoryTaskForge"]
