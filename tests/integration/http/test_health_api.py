"""/healthz, /readyz, /stats and /metrics."""

from __future__ import annotations

import re

import httpx
import pytest
from dishka import AsyncContainer

from taskforge.application.metrics import JobMetricsRecorder, WorkerLoad
from taskforge.application.ports import MetricsStore
from taskforge.entrypoints.config import Address
from taskforge.entrypoints.container import Backend
from tests.integration.http.conftest import JobFactory, assert_error

ONLY_POSTGRES_REDIS = pytest.mark.parametrize(
    "backend",
    [pytest.param(Backend.POSTGRES_REDIS, marks=pytest.mark.integration)],
    indirect=True,
    ids=str,
)
"""For behaviour of real services going away; the in-memory backend has none."""

SPEC_METRICS = (
    "taskforge_queue_depth",
    "taskforge_dlq_count",
    "taskforge_job_attempts_total",
    "taskforge_job_success_total",
    "taskforge_job_failure_total",
    "taskforge_job_runtime_seconds",
    "taskforge_job_time_in_queue_seconds",
    "taskforge_worker_utilization",
    "taskforge_worker_concurrency_throttled_total",
    "taskforge_worker_rate_throttled_total",
)


async def test_healthz_is_200(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_200_with_every_check_ok(
    client: httpx.AsyncClient, backend: Backend
) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    expected = ("postgres", "redis") if backend is Backend.POSTGRES_REDIS else ("store", "queue")
    assert response.json() == {"status": "ready", "checks": dict.fromkeys(expected, "ok")}


@ONLY_POSTGRES_REDIS
@pytest.mark.parametrize("overrides", [{"redis_addr": Address("127.0.0.1", 1)}])
async def test_readyz_is_503_naming_redis_when_redis_is_unreachable(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/readyz")

    body = response.json()
    assert response.status_code == 503
    assert (body["code"], body["status"]) == ("not_ready", "not_ready")
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["redis"].startswith("error")
    assert "redis" in body["message"]
    assert body["details"] == body["checks"]


@ONLY_POSTGRES_REDIS
@pytest.mark.parametrize("overrides", [{"redis_addr": Address("127.0.0.1", 1)}])
async def test_enqueue_succeeds_while_redis_is_unreachable(client: httpx.AsyncClient) -> None:
    response = await client.post("/jobs", json={"jobType": "email"})

    assert response.status_code == 201
    assert (await client.get(f"/jobs/{response.json()['id']}")).json()["state"] == "PENDING"


@ONLY_POSTGRES_REDIS
@pytest.mark.parametrize("overrides", [{"postgres_dsn": "postgresql://nobody@127.0.0.1:1/none"}])
async def test_job_routes_are_503_not_ready_when_postgres_is_unreachable(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/jobs")

    assert_error(response, 503, "not_ready")
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["postgres"].startswith("error")


async def test_stats_counts_jobs_per_queue_and_state(
    client: httpx.AsyncClient, create_job: JobFactory, queue_name: str
) -> None:
    due = await create_job()
    await create_job()
    await create_job(delay=3600)
    await client.post(f"/jobs/{due['id']}/dlq")

    response = await client.get("/stats")

    assert response.status_code == 200
    stats = response.json()
    assert set(stats) == {"queues", "totals", "total", "dlq"}
    [mine] = [entry for entry in stats["queues"] if entry["queue"] == queue_name]
    assert mine["depth"] == 2  # the two due jobs were published; the delayed one was not
    assert mine["states"] == {
        "PENDING": 2,
        "RUNNING": 0,
        "SUCCEEDED": 0,
        "FAILED": 0,
        "DLQ": 1,
        "CANCELLED": 0,
    }
    assert mine["total"] == 3
    assert stats["totals"] == mine["states"]
    assert (stats["total"], stats["dlq"]) == (3, 1)


async def test_stats_lists_the_default_queue_even_when_empty(
    client: httpx.AsyncClient, queue_name: str
) -> None:
    stats = (await client.get("/stats")).json()

    assert [entry["queue"] for entry in stats["queues"]] == [queue_name]
    assert stats["queues"][0]["depth"] == 0
    assert (stats["total"], stats["dlq"]) == (0, 0)


async def test_metrics_are_prometheus_text_with_the_spec_series(
    client: httpx.AsyncClient, create_job: JobFactory, queue_name: str
) -> None:
    parked = await create_job()
    await create_job()
    await client.post(f"/jobs/{parked['id']}/dlq")

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in SPEC_METRICS:
        assert re.search(rf"^# TYPE {name.removesuffix('_total')}\S* ", text, re.M), name
    assert f'taskforge_queue_depth{{queue="{queue_name}"}} 2.0' in text
    assert re.search(r"^taskforge_dlq_count 1\.0$", text, re.M)


async def test_metrics_show_what_workers_published_without_created_series(
    client: httpx.AsyncClient, container: AsyncContainer, queue_name: str
) -> None:
    recorder = JobMetricsRecorder()
    recorder.job_started(queue_name, "email", time_in_queue=0.2)
    recorder.job_finished(queue_name, "email", runtime=0.1, succeeded=True)
    batch, load = recorder.take()
    store = await container.get(MetricsStore)
    await store.add(batch, WorkerLoad("worker-1", load), ttl=60, sequence=1)

    text = (await client.get("/metrics")).text

    assert f'taskforge_job_attempts_total{{queue="{queue_name}"}} 1.0' in text
    assert f'taskforge_job_success_total{{queue="{queue_name}"}} 1.0' in text
    assert "_created" not in text
