"""Metrics and traces across real processes: the API's /metrics is the cluster's view of
what separate worker processes did, and one trace follows a job from POST /jobs through
the scheduler to the worker."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration.prometheus_text import SPEC_METRICS_PER_QUEUE, names_with_label, value_of
from tests.support import free_port

from .conftest import Process, Stack

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

DEADLINE = 30.0
FLUSH = {"METRICS_FLUSH_INTERVAL": "0.2"}  # a stopped worker drops out after 3 x 0.2 s


async def scrape_until(url: str, done: Callable[[str], bool], what: str) -> str:
    deadline = time.monotonic() + DEADLINE
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            text = (await client.get(url)).text
            if done(text):
                return text
            assert time.monotonic() < deadline, f"never saw {what} at {url}:\n{text}"
            await asyncio.sleep(0.05)


async def test_the_apis_metrics_sum_what_separate_worker_processes_did(stack: Stack) -> None:
    await stack.start_api()
    ports = [free_port(), free_port()]
    for port in ports:
        stack.start_worker("--concurrency", "1", METRICS_ADDR=f"127.0.0.1:{port}", **FLUSH)
    stack.start_scheduler()
    queue = stack.env["QUEUE_NAME"]
    api = f"{stack.api_url}/metrics"
    await scrape_until(
        api, lambda t: value_of(t, "taskforge_workers", queue=queue) == 2, "2 workers"
    )

    sleepers = [await stack.enqueue("sleep", payload={"seconds": 0.3}) for _ in range(4)]
    failing = await stack.enqueue("fail", maxAttempts=2, initialDelay=0.1)
    for job_id in sleepers:
        await stack.wait_for(job_id, "SUCCEEDED")
    await stack.wait_for(failing, "DLQ")

    text = await scrape_until(
        api,
        lambda t: (
            value_of(t, "taskforge_job_attempts_total", queue=queue) == 6
            and value_of(t, "taskforge_job_success_total", queue=queue) == 4
            and value_of(t, "taskforge_job_failure_total", queue=queue) == 2
        ),
        "6 attempts: 4 successes, 2 failures",
    )
    assert names_with_label(text, "queue", queue) >= SPEC_METRICS_PER_QUEUE
    assert (value_of(text, "taskforge_dlq_count") or 0) >= 1
    sleeps = {"queue": queue, "job_type": "sleep"}
    assert value_of(text, "taskforge_job_runtime_seconds_count", **sleeps) == 4
    assert value_of(text, "taskforge_job_runtime_seconds_bucket", **sleeps, le="0.25") == 0
    assert value_of(text, "taskforge_job_runtime_seconds_bucket", **sleeps, le="0.5") == 4
    per_worker = []
    async with httpx.AsyncClient() as client:
        for port in ports:
            own = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            per_worker.append(value_of(own, "taskforge_job_attempts_total", queue=queue) or 0)
    assert sum(per_worker) == 6
    assert all(attempts > 0 for attempts in per_worker), per_worker  # both did some of it


async def test_a_worker_that_stopped_drops_out_of_utilization(stack: Stack) -> None:
    await stack.start_api()
    workers = [stack.start_worker("--concurrency", "1", **FLUSH) for _ in range(2)]
    queue = stack.env["QUEUE_NAME"]
    api = f"{stack.api_url}/metrics"
    await scrape_until(
        api, lambda t: value_of(t, "taskforge_workers", queue=queue) == 2, "2 workers"
    )

    job_id = await stack.enqueue("ledger_sleep", payload={"seconds": 60}, visibilityTimeout=120)
    [run] = await stack.wait_for_ledger(job_id, 1)
    # One of two single-slot workers is busy.
    await scrape_until(
        api, lambda t: value_of(t, "taskforge_worker_utilization", queue=queue) == 0.5, "0.5"
    )
    [idle] = [worker for worker in workers if worker.pid != run["pid"]]
    idle.signal(signal.SIGKILL)  # no goodbye: only the TTL can tell
    idle.wait(10)

    text = await scrape_until(
        api,
        lambda t: (
            value_of(t, "taskforge_workers", queue=queue) == 1
            and value_of(t, "taskforge_worker_utilization", queue=queue) == 1.0
        ),
        "the busy worker alone",
    )
    assert value_of(text, "taskforge_job_attempts_total", queue=queue) == 1


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"


def spans_of(process: Process) -> list[dict[str, Any]]:
    """The spans a process wrote so far: every line of its standard output is one."""
    assert process.stdout is not None
    text = process.stdout.read_text() if process.stdout.exists() else ""
    *complete, _partial = text.split("\n")  # the exporter may be writing the last line
    return [json.loads(line) for line in complete]


async def test_one_trace_follows_a_retried_job_from_post_jobs_through_scheduler_and_worker(
    stack: Stack,
) -> None:
    stack.separate_stdout = True
    tracing = {
        "TRACING_ENABLED": "true",
        "TRACING_EXPORTER": "stdout",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export every 0.1 s instead of every 5 s
    }
    api = await stack.start_api(**tracing)
    worker = stack.start_worker(**tracing)
    scheduler = stack.start_scheduler(**tracing)
    async with stack.client() as client:
        response = await client.post(
            "/jobs",
            json={"jobType": "fail", "queue": stack.env["QUEUE_NAME"], "maxAttempts": 2},
            headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"},
        )
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    job = await stack.wait_for(job_id, "DLQ")

    deadline = time.monotonic() + DEADLINE
    while True:
        by_name: dict[str, list[dict[str, Any]]] = {}
        for process in (api, scheduler, worker):
            for span in spans_of(process):
                if span["context"]["trace_id"] == f"0x{TRACE_ID}":
                    by_name.setdefault(span["name"], []).append(span)
        # Each process exports its spans in batches of its own: the API's may come last.
        if (
            len(by_name.get("taskforge.job.run", [])) == 2
            and {"taskforge.job.requeue", "POST /jobs", "taskforge.job.enqueue"} <= by_name.keys()
        ):
            break
        assert time.monotonic() < deadline, f"spans so far: {by_name}"
        await asyncio.sleep(0.1)

    [request] = by_name["POST /jobs"]
    [enqueue] = by_name["taskforge.job.enqueue"]
    [requeue] = by_name["taskforge.job.requeue"]
    first, second = sorted(by_name["taskforge.job.run"], key=lambda s: s["attributes"]["attempt"])
    services = {
        name: {span["resource"]["attributes"]["service.name"] for span in spans}
        for name, spans in by_name.items()
    }
    assert services == {
        "POST /jobs": {"taskforge-api"},
        "taskforge.job.enqueue": {"taskforge-api"},
        "taskforge.job.requeue": {"taskforge-scheduler"},
        "taskforge.job.run": {"taskforge-worker"},
    }
    assert request["parent_id"] == f"0x{CALLER_SPAN_ID}"
    assert enqueue["parent_id"] == request["context"]["span_id"]
    enqueue_span_id = enqueue["context"]["span_id"].removeprefix("0x")
    assert job["traceparent"] == f"00-{TRACE_ID}-{enqueue_span_id}-01"
    for span in (requeue, first, second):
        assert span["parent_id"] == enqueue["context"]["span_id"]
    for span in (enqueue, requeue, first, second):
        assert span["attributes"]["job_id"] == job_id
        assert span["attributes"]["queue"] == stack.env["QUEUE_NAME"]
    assert [first["attributes"]["outcome"], second["attributes"]["outcome"]] == [
        "retry",
        "dead_lettered",
    ]
    lines = worker.log.read_text().splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    [failure] = [line for line in logged if f"job {job_id} attempt 1 failed" in line["message"]]
    assert failure["trace_id"] == TRACE_ID
