"""Route handlers: parse, call one use case, shape the response.

Longer than most modules: every route of the API with its OpenAPI description, one short
handler each, so the whole HTTP surface reads in one place."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Annotated, Any

from dishka import FromDishka
from litestar import Request, Response, delete, get, post
from litestar.enums import MediaType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, Operation, RequestBody
from litestar.params import Body, Parameter

from taskforge.adapters.telemetry.metrics import (
    METRICS_MEDIA_TYPE,
    HttpMetrics,
    render_api_metrics,
)
from taskforge.application.enqueue import EnqueueJob, EnqueueJobs
from taskforge.application.jobs import (
    CancelJob,
    DeadLetterJob,
    GetDeadLetter,
    GetJob,
    GetStats,
    ListDeadLetters,
    ListJobs,
    ReplayDeadLetter,
    RetryJobNow,
)
from taskforge.application.ports import (
    DeadLetterStore,
    IdSource,
    JobStore,
    ListFilter,
    MetricsStore,
    ReadyQueue,
)
from taskforge.application.queues import ListQueues, PauseQueue, QueueSummary, ResumeQueue
from taskforge.application.schedules import (
    DeleteSchedule,
    GetSchedule,
    ListSchedules,
    PauseSchedule,
    ResumeSchedule,
    SaveSchedule,
)
from taskforge.application.timing import settle_within
from taskforge.application.workers import ListWorkers
from taskforge.domain.errors import ValidationError
from taskforge.domain.schedule import validate_schedule_name
from taskforge.domain.states import JobState
from taskforge.domain.validation import MAX_PAGE_LIMIT, Page, parse_job_id, validate_queue_name
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.container import Backend
from taskforge.entrypoints.http.body import json_body, no_body
from taskforge.entrypoints.http.errors import NotReady
from taskforge.entrypoints.http.injection import inject
from taskforge.entrypoints.http.middleware import caller_is_authorized
from taskforge.entrypoints.http.query import declared_query_only
from taskforge.entrypoints.http.schemas import (
    FIELD_RULES,
    JOB_IN_EXAMPLE,
    MAX_OFFSET,
    NAME_PATTERN,
    QUEUE_PATTERN,
    SCHEDULE_IN_EXAMPLE,
    STATUS_PATTERN,
    BatchItemOut,
    DeadLetterOut,
    DeadLetterPage,
    ErrorOut,
    HealthOut,
    JobBatchIn,
    JobBatchOut,
    JobDetailOut,
    JobIn,
    JobOut,
    JobPage,
    NotReadyOut,
    QueueListOut,
    QueueOut,
    QueuePauseOut,
    QueueStatsOut,
    ReadyOut,
    ReasonIn,
    ScheduleIn,
    ScheduleListOut,
    ScheduleOut,
    StatsOut,
    WorkerListOut,
    WorkerOut,
)

READINESS_TIMEOUT = 2.0

_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")

_ERROR_DESCRIPTIONS = {
    400: "validation_error: a parameter or the body is invalid; details.field names it",
    401: "unauthorized: API_TOKEN is set and the bearer token is missing or wrong",
    403: (
        "forbidden: a browser page of another origin asked for this change (Sec-Fetch-Site "
        "cross-site or same-site; without it, an Origin that is not this host)"
    ),
    404: "not_found: no such job, dead letter or schedule",
    409: "invalid_state_transition: the job's current state (details.state) forbids this",
    413: "payload_too_large: the body is over MAX_PAYLOAD_BYTES",
    415: (
        "validation_error: the body is declared as another type than JSON (a body with no "
        "Content-Type, or curl's default application/x-www-form-urlencoded, is read as JSON), "
        "or as compressed (a Content-Encoding other than identity)"
    ),
    500: "internal_error: an unexpected failure (logged with the request id)",
    503: "not_ready: Postgres or Redis cannot answer right now",
}


def errors(*statuses: int, guarded: bool = True) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error responses a route can give. Every route can fail with
    500; a guarded one also answers 401 (when API_TOKEN is set) and 503 (backend down). A
    route that changes something lists 403 (see middleware._cross_site)."""
    implied = {500, 401, 503} if guarded else {500}
    return {
        status: ResponseSpec(ErrorOut, description=_ERROR_DESCRIPTIONS[status])
        for status in sorted({*statuses, *implied})
    }


@dataclass
class OptionalBodyOperation(Operation):
    """An operation whose JSON body may be omitted (the framework marks every body required)."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False


JobId = Annotated[
    str, Parameter(description="The job's id (a UUID).", schema_extra={"format": "uuid"})
]
Limit = Annotated[
    int | None,
    Parameter(
        description=f"Page size: default 50; values above {MAX_PAGE_LIMIT} are clamped.", ge=1
    ),
]
Offset = Annotated[
    int | None,
    Parameter(
        description=f"Items to skip, up to {MAX_OFFSET}; negative values count as 0.",
        le=MAX_OFFSET,
    ),
]
Status = Annotated[
    str | None,
    Parameter(
        description="Lifecycle state filter, case-insensitive: "
        + ", ".join(JobState)
        + " (empty: no filter).",
        # Schema only: parse_state refuses other values with the allowed ones listed.
        schema_extra={"pattern": STATUS_PATTERN},
    ),
]
Reason = Annotated[
    ReasonIn | None,
    Body(
        description='Optional: no body, an empty body, {} and {"reason": "..."} all work.',
        examples=[Example(summary="With a reason", value={"reason": "user requested"})],
    ),
]


def parse_state(raw: str | None) -> JobState | None:
    if raw is None or raw == "":
        return None
    try:
        return JobState(raw.upper())
    except ValueError:
        allowed = ", ".join(JobState)
        raise ValidationError(
            "status", f"unknown state {raw!r}; allowed: {allowed}", details={"allowed": [*JobState]}
        ) from None


def _reason(data: ReasonIn | None) -> str | None:
    return data.checked_reason() if data is not None else None


@get(
    "/healthz",
    tags=["health"],
    summary="Liveness: 200 whenever the process is up",
    responses=errors(guarded=False),
)
async def healthz() -> HealthOut:
    return HealthOut(status="ok")


@get(
    "/readyz",
    tags=["health"],
    summary="Readiness: checks the job store and the ready queue",
    description=(
        "200 when every backing service answers (and the database schema is current); 503 "
        "naming the failing check, within READINESS_TIMEOUT seconds whatever the services do. "
        "Why a check fails is shown only to a caller with the bearer token (or when no "
        "API_TOKEN is set); others see `error`."
    ),
    responses={
        **errors(guarded=False),
        503: ResponseSpec(NotReadyOut, description="not_ready: a check failed"),
    },
)
@inject
async def readyz(
    request: Request[Any, Any, Any],
    jobs: FromDishka[JobStore],
    ready_queue: FromDishka[ReadyQueue],
    backend: FromDishka[Backend],
) -> ReadyOut:
    names = ("store", "queue") if backend is Backend.MEMORY else ("postgres", "redis")
    results = await settle_within(READINESS_TIMEOUT, [jobs.ping(), ready_queue.ping()])
    failures = {
        name: result
        for name, result in zip(names, results, strict=True)
        if isinstance(result, BaseException)
    }
    if not failures:
        return ReadyOut(status="ready", checks=dict.fromkeys(names, "ok"))
    detailed = caller_is_authorized(request.scope)
    checks = dict.fromkeys(names, "ok")
    for name, failure in failures.items():
        checks[name] = f"error: {_short(failure)}" if detailed else "error"
    raise NotReady(checks)


def _short(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {READINESS_TIMEOUT:g}s"
    return (str(exc) or type(exc).__name__)[:200]


@post(
    "/jobs",
    tags=["jobs"],
    summary="Enqueue a job",
    description=(
        "201 with the new job. When `idempotencyKey` matches an existing job, 200 with that "
        "job (same `id`) and nothing is enqueued; likewise when `uniqueKey` matches a "
        "PENDING, RUNNING or FAILED job of the same queue."
    ),
    status_code=201,
    response_description="The job was created",
    responses={
        200: ResponseSpec(
            JobOut, description="A job with this idempotencyKey (or unfinished uniqueKey) existed"
        ),
        **errors(400, 403, 413, 415),
    },
    before_request=json_body(JobIn, required=True),
)
@inject
async def create_job(
    request: Request[Any, Any, Any],
    data: Annotated[
        JobIn,
        Body(
            description="The job to enqueue; only jobType is required.",
            examples=[Example(summary="An email job", value=JOB_IN_EXAMPLE)],
        ),
    ],
    enqueue: FromDishka[EnqueueJob],
    ids: FromDishka[IdSource],
    settings: FromDishka[Settings],
) -> Response[JobOut]:
    new_job = data.to_new_job(
        ids.new_id(), settings.queue_name, _incoming_traceparent(request), settings.job_timeout
    )
    result = await enqueue(new_job)
    return Response(JobOut.of(result.job), status_code=201 if result.created else 200)


def _incoming_traceparent(request: Request[Any, Any, Any]) -> str | None:
    """The caller's traceparent header, kept with the job when tracing is off (with tracing
    on, the request's span continues it and the job gets the enqueue span's)."""
    header = request.headers.get("traceparent")
    return header if header and _TRACEPARENT.fullmatch(header) else None


@post(
    "/jobs/batch",
    tags=["jobs"],
    summary="Enqueue up to 1000 jobs at once",
    description=(
        "One write for the whole batch: every job is stored, or none is. Items are answered "
        "in request order with `created`, or `existing` when their idempotencyKey named a "
        "job already stored (or their uniqueKey an unfinished job of the queue). A bad item "
        "is a 400 naming it as `jobs[<index>].<field>`. "
        "201 when at least one job was created, else 200."
    ),
    status_code=201,
    responses={
        200: ResponseSpec(JobBatchOut, description="Every item named an existing job"),
        **errors(400, 403, 413, 415),
    },
    before_request=json_body(JobBatchIn, required=True, item_type=JobIn),
)
@inject
async def create_jobs(
    request: Request[Any, Any, Any],
    data: Annotated[JobBatchIn, Body(description="The jobs to enqueue, in order.")],
    enqueue: FromDishka[EnqueueJobs],
    ids: FromDishka[IdSource],
    settings: FromDishka[Settings],
) -> Response[JobBatchOut]:
    traceparent = _incoming_traceparent(request)
    new_jobs = []
    for index, item in enumerate(data.jobs):
        try:
            new_jobs.append(
                item.to_new_job(
                    ids.new_id(), settings.queue_name, traceparent, settings.job_timeout
                )
            )
        except ValidationError as exc:
            raise ValidationError(
                f"jobs[{index}].{exc.field}", exc.message, details={"index": index}
            ) from None
    results = await enqueue(new_jobs)
    items = [
        BatchItemOut(
            id=result.job.id,
            status="created" if result.created else "existing",
            state=result.job.state.value,
        )
        for result in results
    ]
    created = sum(result.created for result in results)
    body = JobBatchOut(items=items, created=created, existing=len(items) - created)
    return Response(body, status_code=201 if created else 200)


@get(
    "/jobs",
    tags=["jobs"],
    summary="List jobs, newest first",
    responses=errors(400),
    before_request=declared_query_only,
)
@inject
async def list_jobs(
    list_jobs: FromDishka[ListJobs],
    limit: Limit = None,
    offset: Offset = None,
    status: Status = None,
    queue: Annotated[
        str | None,
        Parameter(
            description="Only this queue: " + FIELD_RULES["queue"] + ".",
            schema_extra={"pattern": QUEUE_PATTERN},
        ),
    ] = None,
) -> JobPage:
    where = ListFilter(
        queue=validate_queue_name(queue) if queue is not None else None, state=parse_state(status)
    )
    return await _job_page(list_jobs, where, Page.clamp(limit, offset))


@get(
    "/queues/{queue_name:str}/jobs",
    tags=["jobs"],
    summary="List one queue's jobs, newest first",
    responses=errors(400),
    before_request=declared_query_only,
)
@inject
async def list_queue_jobs(
    queue_name: Annotated[
        str,
        Parameter(
            description="The queue, e.g. jobs:ready; " + FIELD_RULES["queue"] + ".",
            schema_extra={"pattern": QUEUE_PATTERN},
        ),
    ],
    list_jobs: FromDishka[ListJobs],
    limit: Limit = None,
    offset: Offset = None,
    status: Status = None,
) -> JobPage:
    where = ListFilter(queue=validate_queue_name(queue_name), state=parse_state(status))
    return await _job_page(list_jobs, where, Page.clamp(limit, offset))


async def _job_page(list_jobs: ListJobs, where: ListFilter, page: Page) -> JobPage:
    items, total = await list_jobs(where, page)
    return JobPage(
        items=[JobOut.of(job) for job in items], limit=page.limit, offset=page.offset, total=total
    )


@get(
    "/jobs/{job_id:str}",
    tags=["jobs"],
    summary="One job",
    description="The job, with `errors`: the last 20 failed attempts and their tracebacks, "
    "and `result`: the JSON value its handler returned once it SUCCEEDED (else null).",
    responses=errors(400, 404),
    before_request=declared_query_only,
)
@inject
async def get_job(job_id: JobId, get_job: FromDishka[GetJob]) -> JobDetailOut:
    return JobDetailOut.of(await get_job(parse_job_id(job_id)))


@post(
    "/jobs/{job_id:str}/retry",
    tags=["jobs"],
    summary="Retry a FAILED, DLQ or CANCELLED job now",
    description="FAILED keeps its counts; DLQ and CANCELLED restart from attempt 0.",
    status_code=200,
    responses=errors(400, 403, 404, 409),
    before_request=no_body,
)
@inject
async def retry_job(job_id: JobId, retry_now: FromDishka[RetryJobNow]) -> JobOut:
    return JobOut.of(await retry_now(parse_job_id(job_id)))


@post(
    "/jobs/{job_id:str}/dlq",
    tags=["jobs"],
    summary="Move a PENDING, RUNNING or FAILED job to the dead-letter queue",
    status_code=200,
    responses=errors(400, 403, 404, 409, 413, 415),
    before_request=json_body(ReasonIn | None, required=False),
    operation_class=OptionalBodyOperation,
)
@inject
async def dead_letter_job(
    job_id: JobId, dead_letter: FromDishka[DeadLetterJob], data: Reason = None
) -> JobOut:
    return JobOut.of(await dead_letter(parse_job_id(job_id), _reason(data)))


@post(
    "/jobs/{job_id:str}/cancel",
    tags=["jobs"],
    summary="Cancel a PENDING, RUNNING or FAILED job",
    status_code=200,
    responses=errors(400, 403, 404, 409, 413, 415),
    before_request=json_body(ReasonIn | None, required=False),
    operation_class=OptionalBodyOperation,
)
@inject
async def cancel_job(job_id: JobId, cancel: FromDishka[CancelJob], data: Reason = None) -> JobOut:
    return JobOut.of(await cancel(parse_job_id(job_id), _reason(data)))


@get(
    "/dlq",
    tags=["dlq"],
    summary="List dead letters, newest first",
    responses=errors(400),
    before_request=declared_query_only,
)
@inject
async def list_dead_letters(
    list_entries: FromDishka[ListDeadLetters], limit: Limit = None, offset: Offset = None
) -> DeadLetterPage:
    page = Page.clamp(limit, offset)
    items, total = await list_entries(page)
    return DeadLetterPage(
        items=[DeadLetterOut.of(entry) for entry in items],
        limit=page.limit,
        offset=page.offset,
        total=total,
    )


@get(
    "/dlq/{job_id:str}",
    tags=["dlq"],
    summary="One dead letter",
    responses=errors(400, 404),
    before_request=declared_query_only,
)
@inject
async def get_dead_letter(job_id: JobId, get_entry: FromDishka[GetDeadLetter]) -> DeadLetterOut:
    return DeadLetterOut.of(await get_entry(parse_job_id(job_id)))


@post(
    "/dlq/{job_id:str}/replay",
    tags=["dlq"],
    summary="Replay a dead-lettered job",
    description="Deletes the dead letter and re-enqueues the job from attempt 0.",
    status_code=200,
    responses=errors(400, 403, 404, 409),
    before_request=no_body,
)
@inject
async def replay_dead_letter(job_id: JobId, replay: FromDishka[ReplayDeadLetter]) -> JobOut:
    return JobOut.of(await replay(parse_job_id(job_id)))


QueueName = Annotated[
    str,
    Parameter(
        description="The queue, e.g. jobs:ready; " + FIELD_RULES["queue"] + ".",
        schema_extra={"pattern": QUEUE_PATTERN},
    ),
]


@get(
    "/queues",
    tags=["queues"],
    summary="Every queue with its job counts per state and whether it is paused",
    description=(
        "The queues that have jobs or are paused, plus QUEUE_NAME, sorted by name. A paused "
        "queue's jobs are not started; running ones finish and enqueueing still works."
    ),
    responses=errors(400),
    before_request=declared_query_only,
)
@inject
async def list_queues(list_queues: FromDishka[ListQueues]) -> QueueListOut:
    return QueueListOut(items=[_queue_out(queue) for queue in await list_queues()])


@post(
    "/queues/{queue_name:str}/pause",
    tags=["queues"],
    summary="Pause a queue: its jobs are not started until it is resumed",
    description=(
        "Idempotent; any valid queue name, also one with no jobs yet. Every worker stops "
        "claiming the queue's jobs; running jobs finish, enqueueing still works."
    ),
    status_code=200,
    responses=errors(400, 403),
    before_request=no_body,
)
@inject
async def pause_queue(queue_name: QueueName, pause: FromDishka[PauseQueue]) -> QueuePauseOut:
    queue = validate_queue_name(queue_name)
    return QueuePauseOut(queue=queue, paused=True, paused_at=await pause(queue))


@post(
    "/queues/{queue_name:str}/resume",
    tags=["queues"],
    summary="Resume a paused queue: its due jobs start at once",
    description="Idempotent; resuming a queue that is not paused changes nothing.",
    status_code=200,
    responses=errors(400, 403),
    before_request=no_body,
)
@inject
async def resume_queue(queue_name: QueueName, resume: FromDishka[ResumeQueue]) -> QueuePauseOut:
    queue = validate_queue_name(queue_name)
    await resume(queue)
    return QueuePauseOut(queue=queue, paused=False, paused_at=None)


@get(
    "/workers",
    tags=["workers"],
    summary="The live workers: what each serves, which job types it runs, how busy it is",
    description=(
        "Every worker reports itself every 5 s; one silent for 30 s is left out (and pruned). "
        "A job whose type no live worker serving its queue runs is handed back, and "
        "dead-lettered after UNKNOWN_TYPE_GRACE seconds."
    ),
    responses=errors(400),
    before_request=declared_query_only,
)
@inject
async def list_workers(list_workers: FromDishka[ListWorkers]) -> WorkerListOut:
    return WorkerListOut(items=[WorkerOut.of(status) for status in await list_workers()])


def _queue_out(queue: QueueSummary) -> QueueOut:
    return QueueOut(
        queue=queue.queue,
        paused=queue.paused,
        paused_at=queue.paused_at,
        states={state.value: n for state, n in queue.counts.items()},
        total=sum(queue.counts.values()),
    )


ScheduleName = Annotated[
    str,
    Parameter(
        description="The schedule's name; " + FIELD_RULES["name"] + ".",
        schema_extra={"pattern": NAME_PATTERN},
    ),
]


@post(
    "/schedules",
    tags=["schedules"],
    summary="Create or replace a schedule of periodic jobs",
    description=(
        "At every tick of `cron` in `timezone` (default UTC), a `jobType` job is enqueued "
        "with `payload` and the policy fields, its idempotencyKey "
        "`schedule:<name>:<tick, UTC>`. 201 with a new schedule; 200 when a schedule of "
        "that name was replaced (it keeps its pause and, when cron and timezone are "
        "unchanged, its next fire time). A bad expression is a 400 naming `cron`, an "
        "unknown time zone one naming `timezone`."
    ),
    status_code=201,
    response_description="The schedule was created",
    responses={
        200: ResponseSpec(ScheduleOut, description="A schedule of this name was replaced"),
        **errors(400, 403, 413, 415),
    },
    before_request=json_body(ScheduleIn, required=True),
)
@inject
async def create_schedule(
    data: Annotated[
        ScheduleIn,
        Body(
            description="The schedule; name, cron and jobType are required.",
            examples=[Example(summary="A nightly report", value=SCHEDULE_IN_EXAMPLE)],
        ),
    ],
    save: FromDishka[SaveSchedule],
    settings: FromDishka[Settings],
) -> Response[ScheduleOut]:
    definition = data.to_definition(settings.queue_name, settings.job_timeout)
    schedule, created = await save(definition)
    return Response(ScheduleOut.of(schedule), status_code=201 if created else 200)


@get(
    "/schedules",
    tags=["schedules"],
    summary="Every schedule, by name, with its next and previous fire times",
    responses=errors(400),
    before_request=declared_query_only,
)
@inject
async def list_schedules(list_schedules: FromDishka[ListSchedules]) -> ScheduleListOut:
    return ScheduleListOut(items=[ScheduleOut.of(item) for item in await list_schedules()])


@get(
    "/schedules/{name:str}",
    tags=["schedules"],
    summary="One schedule",
    responses=errors(400, 404),
    before_request=declared_query_only,
)
@inject
async def get_schedule(name: ScheduleName, get_schedule: FromDishka[GetSchedule]) -> ScheduleOut:
    return ScheduleOut.of(await get_schedule(validate_schedule_name(name)))


@delete(
    "/schedules/{name:str}",
    tags=["schedules"],
    summary="Delete a schedule",
    description=(
        "Jobs it already enqueued stay. A schedule declared in code comes back when a "
        "worker or scheduler next starts with it (pause it to stop it for good)."
    ),
    status_code=204,
    responses=errors(400, 403, 404),
)
@inject
async def delete_schedule(name: ScheduleName, delete: FromDishka[DeleteSchedule]) -> None:
    await delete(validate_schedule_name(name))


@post(
    "/schedules/{name:str}/pause",
    tags=["schedules"],
    summary="Pause a schedule: its ticks enqueue nothing until it is resumed",
    description="Idempotent; the pause outlives restarts and redeclarations in code.",
    status_code=200,
    responses=errors(400, 403, 404),
    before_request=no_body,
)
@inject
async def pause_schedule(name: ScheduleName, pause: FromDishka[PauseSchedule]) -> ScheduleOut:
    return ScheduleOut.of(await pause(validate_schedule_name(name)))


@post(
    "/schedules/{name:str}/resume",
    tags=["schedules"],
    summary="Resume a schedule from its next tick (the ticks of the pause are skipped)",
    description="Idempotent; resuming a schedule that is not paused changes nothing.",
    status_code=200,
    responses=errors(400, 403, 404),
    before_request=no_body,
)
@inject
async def resume_schedule(name: ScheduleName, resume: FromDishka[ResumeSchedule]) -> ScheduleOut:
    return ScheduleOut.of(await resume(validate_schedule_name(name)))


@get(
    "/stats",
    tags=["health"],
    summary="Per-queue depth and state counts, totals, DLQ size",
    responses=errors(400),
    before_request=declared_query_only,
)
@inject
async def stats(get_stats: FromDishka[GetStats]) -> StatsOut:
    result = await get_stats()
    return StatsOut(
        queues=[
            QueueStatsOut(
                queue=q.queue,
                depth=q.depth,
                states={state.value: n for state, n in q.counts.items()},
                total=sum(q.counts.values()),
            )
            for q in result.queues
        ],
        totals={state.value: n for state, n in result.totals.items()},
        total=sum(result.totals.values()),
        dlq=result.dead_letters,
    )


@get(
    "/metrics",
    tags=["health"],
    summary="Prometheus metrics",
    description=(
        "The whole cluster's job metrics (summed over every worker process, published about "
        "once a second), live queue depths and the DLQ size, then this API process's HTTP "
        "request and process series."
    ),
    media_type=MediaType.TEXT,
    responses=errors(503, guarded=False),
)
@inject
async def metrics(
    store: FromDishka[MetricsStore],
    dead_letters: FromDishka[DeadLetterStore],
    ready_queue: FromDishka[ReadyQueue],
    http_metrics: FromDishka[HttpMetrics],
    settings: FromDishka[Settings],
) -> Response[str]:
    """The whole cluster's job metrics (what every worker published to the MetricsStore),
    the live depth of every queue they serve plus QUEUE_NAME (one round trip) and the DLQ
    size, then this API process's HTTP and process series."""
    view, dead = await asyncio.gather(store.read(), dead_letters.count())
    depths = await ready_queue.depth(sorted(view.queues | {settings.queue_name}))
    text = render_api_metrics(view, depths, dead, http_metrics).decode()
    return Response(text, media_type=METRICS_MEDIA_TYPE)


ROUTES = [
    healthz,
    readyz,
    stats,
    create_job,
    create_jobs,
    list_jobs,
    list_queue_jobs,
    list_queues,
    pause_queue,
    resume_queue,
    create_schedule,
    list_schedules,
    get_schedule,
    delete_schedule,
    pause_schedule,
    resume_schedule,
    list_workers,
    get_job,
    retry_job,
    dead_letter_job,
    cancel_job,
    list_dead_letters,
    get_dead_letter,
    replay_dead_letter,
    metrics,
]

__all__ = ["ROUTES"]
