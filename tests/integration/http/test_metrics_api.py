"""GET /metrics after real work: a worker and a scheduler run in this process (as in
`taskforge dev`) on each backend, publish what they count, and the API renders it with the
spec's names and labels."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from taskforge.application.handlers import HandlerRegistry, JobContext, Snooze, TerminalError
from taskforge.application.metrics import UNREGISTERED_JOB_TYPE
from tests.integration.http.conftest import Roles
from tests.integration.prometheus_text import (
    SPEC_METRICS_PER_QUEUE,
    names_with_label,
    parse_samples,
    value_of,
)

DEADLINE = 20.0
FAST = {"metrics_flush_interval": 0.05, "scheduler_tick": 0.02}


@pytest.fixture
def release() -> asyncio.Event:
    """Lets the `block` handler return."""
    return asyncio.Event()


@pytest.fixture
def handlers(release: asyncio.Event) -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.handler("ok")
    async def ok(ctx: JobContext) -> None:
        return None

    @registry.handler("flaky")
    async def flaky(ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("the first attempt fails")

    @registry.handler("fail")
    async def fail(ctx: JobContext) -> None:
        raise RuntimeError("always fails")

    @registry.handler("terminal")
    async def terminal(ctx: JobContext) -> None:
        raise TerminalError("cannot work")

    @registry.handler("block")
    async def block(ctx: JobContext) -> None:
        await release.wait()

    @registry.handler("snooze-once")
    async def snooze_once(ctx: JobContext) -> None:
        if ctx.snoozes == 0:
            raise Snooze(0)

    return registry


async def scrape_until(client: httpx.AsyncClient, done: Callable[[str], bool], what: str) -> str:
    """GET /metrics until `done` accepts the text; fail after DEADLINE seconds."""
    deadline = time.monotonic() + DEADLINE
    while True:
        text = (await client.get("/metrics")).text
        if done(text):
            return text
        assert time.monotonic() < deadline, f"never saw {what} in:\n{text}"
        await asyncio.sleep(0.02)


async def enqueue(client: httpx.AsyncClient, job_type: str, **fields: Any) -> str:
    response = await client.post("/jobs", json={"jobType": job_type, **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.mark.parametrize("overrides", [{**FAST, "worker_concurrency": 10, "unknown_type_grace": 0}])
async def test_metrics_count_every_outcome_of_a_known_sequence_of_jobs(
    client: httpx.AsyncClient, roles: Roles, queue_name: str
) -> None:
    roles.start()
    await enqueue(client, "ok")
    await enqueue(client, "flaky", initialDelay=0)  # fails once, succeeds on its retry
    await enqueue(client, "fail", initialDelay=0, maxAttempts=2)  # fails twice: DLQ
    await enqueue(client, "terminal")  # fails once, terminally: DLQ
    await enqueue(client, "nobody-handles-this", maxAttempts=1)  # unknown, no grace: DLQ

    q = {"queue": queue_name}
    text = await scrape_until(
        client,
        lambda text: (
            value_of(text, "taskforge_job_attempts_total", **q) == 7
            and value_of(text, "taskforge_job_success_total", **q) == 2
            and value_of(text, "taskforge_job_failure_total", **q) == 5
        ),
        "7 attempts, 2 successes and 5 failures",
    )

    assert value_of(text, "taskforge_dlq_count") == 3
    assert value_of(text, "taskforge_queue_depth", **q) == 0
    assert value_of(text, "taskforge_worker_concurrency_throttled_total", **q) == 0
    assert value_of(text, "taskforge_worker_rate_throttled_total", **q) == 0
    assert value_of(text, "taskforge_workers", **q) == 1
    utilization = value_of(text, "taskforge_worker_utilization", **q)
    assert utilization is not None
    assert 0 <= utilization <= 1
    runs = {"ok": 1, "flaky": 2, "fail": 2, "terminal": 1, UNREGISTERED_JOB_TYPE: 1}
    for job_type, count in runs.items():
        labels = {**q, "job_type": job_type}
        for histogram in ("taskforge_job_runtime_seconds", "taskforge_job_time_in_queue_seconds"):
            assert value_of(text, f"{histogram}_count", **labels) == count, (histogram, job_type)
            assert value_of(text, f"{histogram}_bucket", **labels, le="+Inf") == count
            assert value_of(text, f"{histogram}_bucket", **labels, le="600.0") == count
    assert names_with_label(text, "queue", queue_name) >= SPEC_METRICS_PER_QUEUE


@pytest.mark.parametrize("overrides", [{**FAST, "unknown_type_grace": 300}])
async def test_a_snooze_is_an_attempt_of_its_own_and_a_hand_back_is_none(
    client: httpx.AsyncClient, roles: Roles, queue_name: str
) -> None:
    roles.start()
    unknown = await enqueue(client, "nobody-handles-this")
    await enqueue(client, "snooze-once")
    deadline = time.monotonic() + DEADLINE
    while (await client.get(f"/jobs/{unknown}")).json()["handBacks"] < 2:
        assert time.monotonic() < deadline, "the job of an unknown type was never handed back"
        await asyncio.sleep(0.05)

    q = {"queue": queue_name}
    text = await scrape_until(
        client,
        lambda text: value_of(text, "taskforge_job_success_total", **q) == 1,
        "the snoozed job's success",
    )

    # attempts = success + failure + snoozed + interrupted; the hand-backs count nowhere
    assert value_of(text, "taskforge_job_attempts_total", **q) == 2
    assert value_of(text, "taskforge_job_snoozed_total", **q) == 1
    assert value_of(text, "taskforge_job_failure_total", **q) == 0
    assert value_of(text, "taskforge_job_interrupted_total", **q) == 0
    snoozed = {**q, "job_type": "snooze-once"}
    assert value_of(text, "taskforge_job_time_in_queue_seconds_count", **snoozed) == 2
    assert value_of(text, "taskforge_job_runtime_seconds_count", **snoozed) == 2
    unregistered = {**q, "job_type": UNREGISTERED_JOB_TYPE}
    assert value_of(text, "taskforge_job_time_in_queue_seconds_count", **unregistered) is None


@pytest.mark.parametrize("overrides", [{**FAST, "worker_concurrency": 1}])
async def test_a_worker_with_every_slot_busy_is_fully_utilized_and_throttles_fetches(
    client: httpx.AsyncClient, roles: Roles, queue_name: str, release: asyncio.Event
) -> None:
    roles.start()
    await enqueue(client, "block")

    q = {"queue": queue_name}
    text = await scrape_until(
        client,
        lambda text: (
            value_of(text, "taskforge_worker_utilization", **q) == 1.0
            and (value_of(text, "taskforge_worker_concurrency_throttled_total", **q) or 0) >= 1
        ),
        "a fully used slot and a throttled fetch",
    )
    release.set()
    await scrape_until(
        client,
        lambda text: (
            value_of(text, "taskforge_job_success_total", **q) == 1
            and value_of(text, "taskforge_worker_utilization", **q) == 0.0
        ),
        "the slot free again",
    )

    assert value_of(text, "taskforge_job_attempts_total", **q) == 1
    assert value_of(text, "taskforge_job_success_total", **q) == 0


@pytest.mark.parametrize(
    "overrides", [{**FAST, "worker_concurrency": 5, "rate_limit_per_sec": 1.0}]
)
async def test_jobs_deferred_by_the_rate_limit_are_counted(
    client: httpx.AsyncClient, roles: Roles, queue_name: str
) -> None:
    for _ in range(3):
        await enqueue(client, "ok")
    roles.start()  # its first fetch takes all three; the bucket holds one permit

    text = await scrape_until(
        client,
        lambda text: (
            (value_of(text, "taskforge_worker_rate_throttled_total", queue=queue_name) or 0) >= 2
        ),
        "two jobs deferred by the rate limit",
    )
    assert value_of(text, "taskforge_worker_concurrency_throttled_total", queue=queue_name) == 0


async def test_http_requests_are_counted_by_route_template_never_by_path(
    client: httpx.AsyncClient,
) -> None:
    ids = [await enqueue(client, "ok") for _ in range(2)]
    for job_id in ids:
        assert (await client.get(f"/jobs/{job_id}")).status_code == 200
    assert (await client.get("/no/such/route")).status_code == 404
    await client.request("BREW", "/jobs")

    text = (await client.get("/metrics")).text

    requests = "taskforge_http_requests_total"
    assert value_of(text, requests, method="POST", route="/jobs", status="201") == 2
    assert value_of(text, requests, method="GET", route="/jobs/{job_id}", status="200") == 2
    assert value_of(text, requests, method="GET", route="(unmatched)", status="404") == 1
    assert any(s.name == requests and s.labels["method"] == "OTHER" for s in parse_samples(text))
    latency = "taskforge_http_request_duration_seconds_count"
    assert value_of(text, latency, method="GET", route="/jobs/{job_id}") == 2
    labels = {value for s in parse_samples(text) for value in s.labels.values()}
    assert not any(job_id in value for job_id in ids for value in labels)


async def test_depth_is_read_for_the_default_queue_before_any_worker_published(
    client: httpx.AsyncClient, queue_name: str
) -> None:
    await enqueue(client, "ok")
    await enqueue(client, "ok")

    text = (await client.get("/metrics")).text

    assert value_of(text, "taskforge_queue_depth", queue=queue_name) == 2
    assert value_of(text, "taskforge_dlq_count") == 0


ZERO_FROM_THE_START = (
    "taskforge_job_attempts_total",
    "taskforge_job_success_total",
    "taskforge_job_failure_total",
    "taskforge_worker_concurrency_throttled_total",
    "taskforge_worker_rate_throttled_total",
    "taskforge_worker_leases_lost_total",
    "taskforge_worker_utilization",
    "taskforge_workers",
)


async def test_the_default_queue_has_every_counter_and_gauge_at_zero_before_any_worker(
    client: httpx.AsyncClient, queue_name: str
) -> None:
    text = (await client.get("/metrics")).text

    for name in ZERO_FROM_THE_START:
        assert value_of(text, name, queue=queue_name) == 0, name
    assert value_of(text, "taskforge_queue_depth", queue=queue_name) == 0


@pytest.mark.parametrize("overrides", [FAST])
async def test_a_queue_whose_workers_all_stopped_reads_zero_workers_and_utilization(
    client: httpx.AsyncClient, roles: Roles, queue_name: str
) -> None:
    roles.start()
    q = {"queue": queue_name}
    await scrape_until(client, lambda t: value_of(t, "taskforge_workers", **q) == 1, "a worker")

    await roles.shutdown()

    text = (await client.get("/metrics")).text
    assert value_of(text, "taskforge_workers", **q) == 0
    assert value_of(text, "taskforge_worker_utilization", **q) == 0
    assert value_of(text, "taskforge_job_attempts_total", **q) == 0
