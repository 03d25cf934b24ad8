"""Tracing in one process (as in `taskforge dev`): a retried job's spans, from POST /jobs
through the scheduler's re-queue to each of the worker's attempts, form one trace, as do a
job's whose worker died on its last attempt, up to the scheduler's dead-lettering; with
tracing off, nothing on the way starts a span."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any
from uuid import UUID

import httpx
import pytest
from dishka import AsyncContainer
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from taskforge.adapters.telemetry.tracing import OpenTelemetryTracing
from taskforge.application.enqueue import ENQUEUE_SPAN
from taskforge.application.handlers import HandlerRegistry, JobContext
from taskforge.application.ports import JobStore, LeaseStore
from taskforge.application.scheduler import DEAD_LETTER_SPAN, REQUEUE_SPAN
from taskforge.application.worker import RUN_SPAN
from taskforge.domain.job import Job
from taskforge.domain.states import JobState
from taskforge.entrypoints.container import Backend
from tests.integration.http.conftest import LogLines, Roles

pytestmark = pytest.mark.parametrize("backend", [Backend.MEMORY], indirect=True, ids=str)

DEADLINE = 20.0
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"
FAST = {"metrics_flush_interval": 0.05, "scheduler_tick": 0.02}
TRACED = {**FAST, "tracing_enabled": True, "tracing_exporter": "none"}


@pytest.fixture
def handlers() -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.handler("flaky")
    async def flaky(ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("the first attempt fails")

    return registry


@pytest.fixture
async def exported(container: AsyncContainer) -> InMemorySpanExporter:
    """Every span this test's process finishes, as it finishes."""
    tracing = await container.get(OpenTelemetryTracing | None)
    assert tracing is not None, "tracing is off"
    exporter = InMemorySpanExporter()
    tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans_started(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts every span started through OpenTelemetry (SDK, no-op and proxy tracers alike)
    and every tracer provider created, while the test runs."""
    counts: Counter[str] = Counter()

    def counting(cls: Any, method: str) -> None:
        original = getattr(cls, method)

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            counts[f"{cls.__name__}.{method}"] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, wrapper)

    for tracer_class in (sdk_trace.Tracer, trace.NoOpTracer, trace.ProxyTracer):
        counting(tracer_class, "start_span")
        counting(tracer_class, "start_as_current_span")
    counting(sdk_trace.TracerProvider, "__init__")
    return counts


async def wait_for_state(container: AsyncContainer, job_id: str, state: JobState) -> Job:
    jobs: JobStore = await container.get(JobStore)
    deadline = time.monotonic() + DEADLINE
    while True:
        job = await jobs.get(UUID(job_id))
        if job is not None and job.state is state:
            return job
        assert time.monotonic() < deadline, f"job never reached {state}: {job}"
        await asyncio.sleep(0.01)


async def enqueue_retried_job(client: httpx.AsyncClient, container: AsyncContainer) -> Job:
    """POST a job that fails once and succeeds on its retry; wait for its success."""
    response = await client.post(
        "/jobs",
        json={"jobType": "flaky", "initialDelay": 0},
        headers={"traceparent": TRACEPARENT},
    )
    assert response.status_code == 201, response.text
    return await wait_for_state(container, response.json()["id"], JobState.SUCCEEDED)


def span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def parent_id(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param(FAST, {}, id="off"),
        # one provider; spans for the request, the enqueue, two attempts and the re-queue
        pytest.param(TRACED, {"TracerProvider.__init__": 1, "Tracer.start_span": 5}, id="on"),
    ],
)
async def test_a_retried_job_starts_no_span_at_all_unless_tracing_is_on(
    client: httpx.AsyncClient,
    container: AsyncContainer,
    roles: Roles,
    spans_started: Counter[str],
    expected: dict[str, int],
) -> None:
    roles.start()

    await enqueue_retried_job(client, container)
    await roles.shutdown()

    assert spans_started == expected


@pytest.mark.parametrize("overrides", [TRACED])
async def test_a_retried_job_is_one_trace_from_post_jobs_to_its_last_attempt(
    client: httpx.AsyncClient,
    container: AsyncContainer,
    roles: Roles,
    exported: InMemorySpanExporter,
    logs: LogLines,
    queue_name: str,
) -> None:
    roles.start()

    job = await enqueue_retried_job(client, container)

    spans = exported.get_finished_spans()
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    [request] = by_name["POST /jobs"]
    [enqueue] = by_name[ENQUEUE_SPAN]
    [requeue] = by_name[REQUEUE_SPAN]
    first, second = sorted(by_name[RUN_SPAN], key=lambda s: s.start_time or 0)
    assert {trace_id(span) for span in spans} == {TRACE_ID}
    assert request.kind is SpanKind.SERVER
    assert parent_id(request) == CALLER_SPAN_ID
    assert parent_id(enqueue) == span_id(request)
    assert job.traceparent == f"00-{TRACE_ID}-{span_id(enqueue)}-01"
    for span in (requeue, first, second):
        assert parent_id(span) == span_id(enqueue)
    for span in (enqueue, requeue, first, second):
        assert span.attributes is not None
        assert (span.attributes["job_id"], span.attributes["queue"]) == (str(job.id), queue_name)
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/jobs"
    assert request.attributes["http.response.status_code"] == 201
    assert [span.attributes and span.attributes["attempt"] for span in (first, second)] == [1, 2]
    assert first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is StatusCode.UNSET
    lines = logs()
    [access] = [line for line in lines if line.get("path") == "/jobs"]
    [failure] = [line for line in lines if "attempt 1 failed" in line["message"]]
    assert access["trace_id"] == failure["trace_id"] == TRACE_ID


@pytest.mark.parametrize("overrides", [TRACED])
async def test_a_job_whose_worker_died_on_its_last_attempt_ends_its_trace_dead_lettered(
    client: httpx.AsyncClient,
    container: AsyncContainer,
    roles: Roles,
    exported: InMemorySpanExporter,
    logs: LogLines,
    queue_name: str,
) -> None:
    response = await client.post(
        "/jobs",
        json={"jobType": "flaky", "maxAttempts": 1, "visibilityTimeout": 1},
        headers={"traceparent": TRACEPARENT},
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    leases = await container.get(LeaseStore)
    # Claimed by a worker that dies with it: only its lease's expiry ends the attempt.
    assert [job.id for job in await leases.claim([UUID(job_id)], "gone")] == [UUID(job_id)]
    roles.start()

    job = await wait_for_state(container, job_id, JobState.DLQ)

    [enqueue] = [span for span in exported.get_finished_spans() if span.name == ENQUEUE_SPAN]
    [dead_letter] = [
        span for span in exported.get_finished_spans() if span.name == DEAD_LETTER_SPAN
    ]
    assert trace_id(dead_letter) == TRACE_ID
    assert parent_id(dead_letter) == span_id(enqueue)
    assert dead_letter.attributes == {
        "job_id": job_id,
        "queue": queue_name,
        "reason": job.reason,
    }
    assert dead_letter.status.status_code is StatusCode.ERROR
    [line] = [entry for entry in logs() if "dead-lettered" in entry["message"]]
    assert (line["level"], line["logger"]) == ("warn", "taskforge.scheduler")
    assert (line["job_id"], line["job_type"], line["trace_id"]) == (job_id, "flaky", TRACE_ID)


@pytest.mark.parametrize("overrides", [TRACED])
async def test_an_invalid_traceparent_header_starts_a_trace_of_its_own(
    client: httpx.AsyncClient, container: AsyncContainer, exported: InMemorySpanExporter
) -> None:
    response = await client.post(
        "/jobs", json={"jobType": "flaky"}, headers={"traceparent": "00-not-a-trace-01"}
    )
    assert response.status_code == 201

    [request] = [span for span in exported.get_finished_spans() if span.name == "POST /jobs"]
    job = await (await container.get(JobStore)).get(UUID(response.json()["id"]))

    assert request.parent is None
    assert job is not None
    assert job.traceparent is not None
    assert job.traceparent.split("-")[1] == trace_id(request)


@pytest.mark.parametrize("overrides", [TRACED])
async def test_each_job_of_a_batch_gets_its_own_enqueue_span_in_the_requests_trace(
    client: httpx.AsyncClient, container: AsyncContainer, exported: InMemorySpanExporter
) -> None:
    response = await client.post(
        "/jobs/batch",
        json={"jobs": [{"jobType": "flaky"}, {"jobType": "flaky"}]},
        headers={"traceparent": TRACEPARENT},
    )
    assert response.status_code == 201, response.text
    ids = [item["id"] for item in response.json()["items"]]

    enqueues = [span for span in exported.get_finished_spans() if span.name == ENQUEUE_SPAN]
    jobs = await container.get(JobStore)
    stored = [await jobs.get(UUID(job_id)) for job_id in ids]

    assert sorted(
        str(span.attributes and span.attributes["job_id"]) for span in enqueues
    ) == sorted(ids)
    assert [job and job.traceparent for job in stored] == [
        f"00-{TRACE_ID}-{span_id(span)}-01"
        for span in sorted(
            enqueues, key=lambda s: ids.index(str(s.attributes and s.attributes["job_id"]))
        )
    ]


@pytest.mark.parametrize("overrides", [TRACED])
async def test_probes_and_scrapes_are_not_traced(
    client: httpx.AsyncClient, exported: InMemorySpanExporter
) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status_code == 200

    assert exported.get_finished_spans() == ()


async def test_with_tracing_off_the_callers_traceparent_is_kept_as_sent(
    client: httpx.AsyncClient, container: AsyncContainer
) -> None:
    response = await client.post(
        "/jobs", json={"jobType": "flaky"}, headers={"traceparent": TRACEPARENT}
    )

    job = await (await container.get(JobStore)).get(UUID(response.json()["id"]))

    assert job is not None
    assert job.traceparent == TRACEPARENT
