"""Request and response bodies: camelCase JSON, as the API documents them.

The constraints declared here (patterns, bounds) are what the OpenAPI schema shows and what
decoding enforces; the domain validates the same rules again when the job is built. Rules
the schema shows but decoding leaves to validation (which words the error better): runAt
and delay not both (JobIn's `not`, added in app.py), no NUL in a reason. Rules JSON Schema
cannot say are in the descriptions only: maxDelay >= initialDelay, idempotencyKey and
uniqueKey printable (Python's str.isprintable), no NUL anywhere in a payload and at most
MAX_PAYLOAD_DEPTH levels of it, runAt within its range once its offset is applied.
Longer than most modules: every body of the API, each a short declaration.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar, cast
from uuid import UUID

import msgspec

from taskforge.domain.errors import ValidationError
from taskforge.domain.job import AttemptError, DeadLetter, Job, JsonObject
from taskforge.domain.new_job import NewJob, build_new_job
from taskforge.domain.policy import (
    MAX_ATTEMPTS_LIMIT,
    MAX_DURATION,
    POLICY_OPTIONS,
    VISIBILITY_TIMEOUT_RANGE,
    PolicyOptions,
)
from taskforge.domain.schedule import (
    CRON_MAX,
    DEFAULT_TIMEZONE,
    TIMEZONE_MAX,
    Schedule,
    ScheduleDefinition,
    ScheduleSource,
    build_schedule_definition,
)
from taskforge.domain.states import JobState
from taskforge.domain.validation import (
    DEFAULT_PRIORITY,
    DUE_AT_RANGE,
    HIGHEST_PRIORITY,
    IDEMPOTENCY_KEY_MAX,
    LOWEST_PRIORITY,
    MAX_PAGE_LIMIT,
    MAX_PAYLOAD_DEPTH,
    RESERVED_QUEUE_PREFIX,
)
from taskforge.domain.validation import NAME_PATTERN as DOMAIN_NAME_PATTERN
from taskforge.domain.workers import WorkerStatus

S = TypeVar("S", bound=msgspec.Struct)


def from_fields(body: type[S], *sources: object, **given: Any) -> S:
    """A `body` whose fields are those in `given`, and each other one the attribute of that
    name of the first of `sources` that has one: the fields a value has under the same name
    in the domain are listed once, in the body's declaration. A field that no source has and
    `given` leaves out is an error when the body is built."""
    values = dict(given)
    for name in body.__struct_fields__:
        if name in values:
            continue
        for source in sources:
            value = getattr(source, name, _ABSENT)
            if value is not _ABSENT:
                values[name] = value
                break
    return body(**values)


_ABSENT = object()


MAX_DELAY_SECONDS = MAX_DURATION
"""Upper bound for every duration a caller sets (ten years): later than that is a mistake,
and timestamps computed from larger values would overflow."""

REASON_MAX = 1000
MAX_OFFSET = 2**31 - 1
"""Deeper pages are refused: no store holds that many jobs, and Postgres' OFFSET is bigint."""

NAME_PATTERN = f"^{DOMAIN_NAME_PATTERN.pattern}$"
QUEUE_PATTERN = f"^(?!{re.escape(RESERVED_QUEUE_PREFIX)}){DOMAIN_NAME_PATTERN.pattern}$"
NUL_FREE_PATTERN = "^[^\\x00]*$"
"""A string without NUL (Postgres cannot store it in text or jsonb)."""
STATUS_PATTERN = "^(?:|{})$".format(
    "|".join("".join(f"[{c.upper()}{c.lower()}]" for c in state) for state in JobState)
)
"""A lifecycle state in any letter case, or empty (no filter): JSON Schema patterns have no
case-insensitive flag, so each letter is a class."""

FIELD_RULES: dict[str, str] = {
    "body": "must be a JSON object",
    "jobType": "must be 1-128 characters of letters, digits and _ - . :",
    "queue": (
        "must be 1-128 characters of letters, digits and _ - . : "
        f"and must not start with {RESERVED_QUEUE_PREFIX!r}"
    ),
    "payload": (
        "must be a JSON object with no NUL character (\\u0000) in any string or key, "
        f"at most {MAX_PAYLOAD_DEPTH} levels deep"
    ),
    "idempotencyKey": f"must be 1-{IDEMPOTENCY_KEY_MAX} printable characters",
    "uniqueKey": f"must be 1-{IDEMPOTENCY_KEY_MAX} printable characters",
    "maxAttempts": f"must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}",
    "initialDelay": f"must be a number of seconds from 0 to {MAX_DELAY_SECONDS:.0f}",
    "backoff": "must be a number >= 1",
    "maxDelay": (
        f"must be a number of seconds from 0 to {MAX_DELAY_SECONDS:.0f}, and at least "
        "initialDelay (default 1); unset, it is 300 or initialDelay if that is larger"
    ),
    "jitter": "must be true or false",
    "visibilityTimeout": (
        f"must be a number of seconds from {VISIBILITY_TIMEOUT_RANGE[0]:g} "
        f"to {VISIBILITY_TIMEOUT_RANGE[1]:g}"
    ),
    "runAt": f"must be an ISO-8601 date-time {DUE_AT_RANGE}, e.g. 2030-01-01T09:00:00Z",
    # Without "not with runAt": a delay beside a runAt is refused by validation, in words
    # of its own; this is the message of a bad delay sent alone too.
    "delay": f"must be a number of seconds from 0 to {MAX_DELAY_SECONDS:.0f}",
    "timeout": (
        f"must be a number of seconds from 0 to {MAX_DELAY_SECONDS:.0f}; an attempt that runs "
        "longer fails as timed out (0: no limit)"
    ),
    "priority": (
        f"must be a whole number from {HIGHEST_PRIORITY} (claimed first) to {LOWEST_PRIORITY} "
        f"(claimed last); default {DEFAULT_PRIORITY}"
    ),
    "reason": f"must be a string of at most {REASON_MAX} characters, without NUL (\\u0000)",
    "name": "must be 1-128 characters of letters, digits and _ - . :",
    "cron": (
        "must be a cron expression of 5 fields (minute hour day-of-month month day-of-week) "
        "or one of @hourly @daily @weekly @monthly @yearly"
    ),
    "timezone": (
        f"must be an IANA time zone name such as Europe/Berlin (default {DEFAULT_TIMEZONE})"
    ),
    "catchUp": (
        "must be true or false: after every scheduler was down, fire each missed tick (true) "
        "or only the most recent one (false, the default)"
    ),
    "limit": (
        f"must be a whole number >= 1 (values above {MAX_PAGE_LIMIT} are clamped to "
        f"{MAX_PAGE_LIMIT})"
    ),
    "offset": f"must be a whole number up to {MAX_OFFSET} (negative values count as 0)",
}
"""What each input accepts, in words: the OpenAPI descriptions and the 400 messages."""


def _rule(
    field: str, schema_only: dict[str, Any] | None = None, **constraints: Any
) -> msgspec.Meta:
    """`constraints` are enforced when decoding and shown in the schema; `schema_only` is
    shown in the schema and enforced by validation further in (with its own message)."""
    text = FIELD_RULES[field]
    # The schema generator drops falsy bounds (a minimum of 0); restate them explicitly.
    extra = {
        schema_key: 0
        for key, schema_key in (("ge", "minimum"), ("le", "maximum"))
        if constraints.get(key) == 0
    } | (schema_only or {})
    return msgspec.Meta(
        description=text[0].upper() + text[1:] + ".",
        extra_json_schema={"extra": extra} if extra else None,
        **constraints,
    )


# The job policy fields, shared by a job (JobIn) and a schedule's jobs (ScheduleIn), which
# policy_options hands to the domain. Each body declares them where they stand in its own
# field order, which users see: the 400 of an unknown field lists the fields in that order,
# and so does the schema (a shared base class would put them first).
QueueField = Annotated[str, _rule("queue", pattern=QUEUE_PATTERN)] | None
MaxAttemptsField = Annotated[int, _rule("maxAttempts", ge=1, le=MAX_ATTEMPTS_LIMIT)] | None
InitialDelayField = Annotated[float, _rule("initialDelay", ge=0, le=MAX_DELAY_SECONDS)] | None
BackoffField = Annotated[float, _rule("backoff", ge=1)] | None
MaxDelayField = Annotated[float, _rule("maxDelay", ge=0, le=MAX_DELAY_SECONDS)] | None
JitterField = Annotated[bool, _rule("jitter")] | None
VisibilityTimeoutField = (
    Annotated[
        float,
        _rule("visibilityTimeout", ge=VISIBILITY_TIMEOUT_RANGE[0], le=VISIBILITY_TIMEOUT_RANGE[1]),
    ]
    | None
)
TimeoutField = Annotated[float, _rule("timeout", ge=0, le=MAX_DELAY_SECONDS)] | None
PriorityField = Annotated[int, _rule("priority", ge=HIGHEST_PRIORITY, le=LOWEST_PRIORITY)] | None


class JobIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel", kw_only=True):
    """POST /jobs. Durations are seconds; `runAt` (ISO-8601) or `delay` makes a delayed job,
    not both. Unset policy fields take the defaults: maxAttempts 3, initialDelay 1, backoff
    2, maxDelay 300, jitter false, visibilityTimeout 30, timeout JOB_TIMEOUT (0: none),
    priority 5 (0 is claimed first, 9 last); maxDelay must be at least initialDelay."""

    job_type: Annotated[str, _rule("jobType", pattern=NAME_PATTERN, examples=["email"])]
    payload: Annotated[
        JsonObject,
        msgspec.Meta(
            description="Handler input, a JSON object (default {}) with no NUL character "
            f"(\\u0000) in any string or key, at most {MAX_PAYLOAD_DEPTH} levels deep."
        ),
    ] = msgspec.field(default_factory=dict)
    idempotency_key: (
        Annotated[str, _rule("idempotencyKey", min_length=1, max_length=IDEMPOTENCY_KEY_MAX)] | None
    ) = None
    unique_key: (
        Annotated[str, _rule("uniqueKey", min_length=1, max_length=IDEMPOTENCY_KEY_MAX)] | None
    ) = None
    queue: QueueField = None
    max_attempts: MaxAttemptsField = None
    initial_delay: InitialDelayField = None
    backoff: BackoffField = None
    max_delay: MaxDelayField = None
    jitter: JitterField = None
    visibility_timeout: VisibilityTimeoutField = None
    run_at: Annotated[datetime, _rule("runAt")] | None = None
    delay: Annotated[float, _rule("delay", ge=0, le=MAX_DELAY_SECONDS)] | None = None
    timeout: TimeoutField = None
    priority: PriorityField = None

    def to_new_job(
        self,
        job_id: UUID,
        default_queue: str,
        traceparent: str | None,
        default_timeout: float = 0.0,
    ) -> NewJob:
        """Validate every field (the message names the first bad one, as the API spells it)
        into a NewJob; NewJob itself checks the payload, runAt and delay."""
        try:
            return self._new_job(job_id, default_queue, traceparent, default_timeout)
        except ValidationError as exc:
            raise in_api_names(exc) from None

    def _new_job(
        self, job_id: UUID, default_queue: str, traceparent: str | None, default_timeout: float
    ) -> NewJob:
        run_at = self.run_at
        if run_at is not None and run_at.tzinfo is None:
            run_at = run_at.replace(tzinfo=UTC)  # an ISO-8601 time without offset is UTC
        return build_new_job(
            job_id=job_id,
            job_type=self.job_type,
            payload=self.payload,
            queue=self.queue if self.queue is not None else default_queue,
            idempotency_key=self.idempotency_key,
            unique_key=self.unique_key,
            run_at=run_at,
            delay=self.delay,
            traceparent=traceparent,
            **policy_options(self, default_timeout),
        )


_API_NAMES = {
    field.name: field.encode_name
    for field in msgspec.structs.fields(JobIn)
    if field.name != field.encode_name
} | {"catch_up": "catchUp"}
"""The domain's snake_case field names and their camelCase API spelling (`max_attempts`:
`maxAttempts`), from JobIn's own fields (and ScheduleIn's one more)."""
_DOMAIN_NAME = re.compile(rf"\b({'|'.join(_API_NAMES)})\b")


def in_api_names(error: ValidationError) -> ValidationError:
    """A domain error about a job or schedule body, its field and any field its message
    names (`max_delay: must be >= initial_delay`) spelled as the API spells them. Only for
    errors the domain raised: their messages never quote a request's values."""

    def api(text: str) -> str:
        return _DOMAIN_NAME.sub(lambda name: _API_NAMES[name.group()], text)

    return ValidationError(api(error.field), api(error.message), details=error.details)


JOB_IN_EXAMPLE: dict[str, Any] = {
    "jobType": "email",
    "payload": {"to": "a@b.com"},
    "idempotencyKey": "abc-123",
    "maxAttempts": 5,
    "delay": 10,
}


MAX_BATCH_JOBS = 1000


class JobBatchIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /jobs/batch: up to 1000 job bodies, stored all or none."""

    jobs: Annotated[
        list[JobIn],
        msgspec.Meta(
            min_length=1,
            max_length=MAX_BATCH_JOBS,
            description=f"1 to {MAX_BATCH_JOBS} jobs, each shaped like the body of POST /jobs.",
        ),
    ]


class BatchItemOut(msgspec.Struct, kw_only=True):
    id: UUID
    status: str
    """`created`, or `existing` when the item's idempotencyKey named a job already stored, or
    its uniqueKey an unfinished job of its queue (or an earlier item of the batch)."""
    state: str


class JobBatchOut(msgspec.Struct, kw_only=True):
    items: list[BatchItemOut]
    """One per job of the request, in request order."""
    created: int
    existing: int


class ReasonIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Optional body of POST /jobs/{id}/cancel and /dlq: why the operator acted."""

    reason: (
        Annotated[str, _rule("reason", {"pattern": NUL_FREE_PATTERN}, max_length=REASON_MAX)] | None
    ) = None

    def checked_reason(self) -> str | None:
        if self.reason is not None and "\x00" in self.reason:
            raise ValidationError("reason", "must not contain NUL characters (\\u0000)")
        return self.reason


class JobOut(msgspec.Struct, rename="camel", kw_only=True):
    """A job. Timestamps are ISO-8601 UTC; durations are seconds. `reason` is the cancel or
    dead-letter reason; `leaseOwner` and `leaseExpiresAt` are set while the job is RUNNING;
    `timeout` is each attempt's time limit (0: none); `priority` orders the claims of its
    queue (0 first, 9 last). `snoozes` and `handBacks` count the
    runs that ended without using an attempt: the handler snoozed, or the worker handed the
    job back (shutdown, no handler for its type); `unknownTypeSince` is set while no live
    worker serving the queue has a handler for its type (UNKNOWN_TYPE_GRACE counts from it).
    """

    id: UUID
    queue: str
    job_type: str
    payload: dict[str, Any]
    state: JobState
    idempotency_key: str | None
    unique_key: str | None
    attempt_count: int
    retry_count: int
    snoozes: int
    hand_backs: int
    unknown_type_since: datetime | None
    max_attempts: int
    initial_delay: float
    backoff: float
    max_delay: float
    jitter: bool
    visibility_timeout: float
    timeout: float
    priority: int
    next_run_at: datetime
    last_error: str | None
    reason: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return from_fields(cls, job, job.policy)


class AttemptErrorOut(msgspec.Struct, kw_only=True):
    """One failed attempt: its number, when it failed, the error and its traceback (the
    end of it when longer than 8 KiB; null when there is none, e.g. a lease that expired)."""

    attempt: int
    at: datetime
    error: str
    traceback: str | None

    @classmethod
    def of(cls, error: AttemptError) -> AttemptErrorOut:
        return from_fields(cls, error)


class JobDetailOut(JobOut, kw_only=True):
    """A job with `errors`: its last 20 failed attempts, oldest first, and `result`: the
    JSON value its handler returned once it SUCCEEDED, null otherwise (lists leave both
    out)."""

    errors: list[AttemptErrorOut]
    result: Any

    @classmethod
    def of(cls, job: Job) -> JobDetailOut:
        return from_fields(
            cls, job, job.policy, errors=[AttemptErrorOut.of(error) for error in job.errors]
        )


class DeadLetterOut(msgspec.Struct, rename="camel", kw_only=True):
    """A `dead_letters` entry: the job's payload, why it was dead-lettered, its last error
    and how many attempts it had."""

    job_id: UUID
    queue: str
    job_type: str
    payload: dict[str, Any]
    reason: str
    last_error: str | None
    attempts: int
    failed_at: datetime
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, entry: DeadLetter) -> DeadLetterOut:
        return from_fields(cls, entry)


class JobPage(msgspec.Struct, kw_only=True):
    """Newest first. `limit` and `offset` are the values applied (after clamping); `total`
    counts every match."""

    items: list[JobOut]
    limit: int
    offset: int
    total: int


class DeadLetterPage(msgspec.Struct, kw_only=True):
    """Newest first (by failedAt). `total` counts every entry."""

    items: list[DeadLetterOut]
    limit: int
    offset: int
    total: int


class ErrorOut(msgspec.Struct, kw_only=True):
    """Every error response, from every route and from the framework. `code` is stable
    snake_case; `details` names the offending input where there is one."""

    code: str
    message: str
    details: Any = None


class QueueStatsOut(msgspec.Struct, kw_only=True):
    """One queue: hints waiting in the ready queue (`depth`) and jobs per state."""

    queue: str
    depth: int
    states: dict[str, int]
    total: int


class StatsOut(msgspec.Struct, kw_only=True):
    """Per queue depth and state counts, the counts over all queues, and the DLQ size."""

    queues: list[QueueStatsOut]
    totals: dict[str, int]
    total: int
    dlq: int


class QueueOut(msgspec.Struct, rename="camel", kw_only=True):
    """One queue: whether it is paused (since `pausedAt`), and its jobs per state."""

    queue: str
    paused: bool
    paused_at: datetime | None
    states: dict[str, int]
    total: int


class QueuePauseOut(msgspec.Struct, rename="camel", kw_only=True):
    """The answer of pause and resume: the queue, and whether it is paused now (since
    `pausedAt`)."""

    queue: str
    paused: bool
    paused_at: datetime | None


class QueueListOut(msgspec.Struct, kw_only=True):
    """Every queue that has jobs or is paused, plus QUEUE_NAME, by name."""

    items: list[QueueOut]


class WorkerOut(msgspec.Struct, rename="camel", kw_only=True):
    """One live worker as it last reported itself (every 5 s): the queues it serves, the job
    types it has handlers for, and how many of its `concurrency` slots run a job."""

    worker_id: str
    host: str
    pid: int
    queues: list[str]
    job_types: list[str]
    concurrency: int
    busy_slots: int
    started_at: datetime
    heartbeat_at: datetime

    @classmethod
    def of(cls, status: WorkerStatus) -> WorkerOut:
        return from_fields(
            cls, status, queues=list(status.queues), job_types=list(status.job_types)
        )


class WorkerListOut(msgspec.Struct, kw_only=True):
    """The live workers (reported within the last 30 s), by workerId."""

    items: list[WorkerOut]


class HealthOut(msgspec.Struct, kw_only=True):
    status: str


class ReadyOut(msgspec.Struct, kw_only=True):
    """`checks` maps each backing service to "ok" or the error it gave."""

    status: str
    checks: dict[str, str]


class NotReadyOut(msgspec.Struct, kw_only=True):
    """The 503 of /readyz: the error shape plus the readiness fields, so both error-handling
    clients and probes read it."""

    code: str
    message: str
    details: dict[str, str]
    status: str
    checks: dict[str, str]


class ScheduleIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel", kw_only=True):
    """POST /schedules: a `jobType` job on `queue` at every tick of `cron` in `timezone`.
    The job fields take the defaults of POST /jobs; a schedule with this `name` is replaced
    (keeping its pause and, when cron and timezone are unchanged, its next fire time)."""

    name: Annotated[str, _rule("name", pattern=NAME_PATTERN, examples=["nightly-report"])]
    cron: Annotated[str, _rule("cron", min_length=1, max_length=CRON_MAX, examples=["30 2 * * *"])]
    job_type: Annotated[str, _rule("jobType", pattern=NAME_PATTERN, examples=["report"])]
    payload: Annotated[
        JsonObject,
        msgspec.Meta(
            description="Each tick's job's payload, a JSON object (default {}) with no NUL "
            f"character (\\u0000) in any string or key, at most {MAX_PAYLOAD_DEPTH} levels deep."
        ),
    ] = msgspec.field(default_factory=dict)
    queue: QueueField = None
    timezone: (
        Annotated[
            str,
            _rule("timezone", min_length=1, max_length=TIMEZONE_MAX, examples=["Europe/Berlin"]),
        ]
        | None
    ) = None
    catch_up: Annotated[bool, _rule("catchUp")] | None = None
    max_attempts: MaxAttemptsField = None
    initial_delay: InitialDelayField = None
    backoff: BackoffField = None
    max_delay: MaxDelayField = None
    jitter: JitterField = None
    visibility_timeout: VisibilityTimeoutField = None
    timeout: TimeoutField = None
    priority: PriorityField = None

    def to_definition(self, default_queue: str, default_timeout: float) -> ScheduleDefinition:
        """Every field checked but the cron expression's meaning (the calendar reads it);
        the message names the first bad field as the API spells it."""
        try:
            return build_schedule_definition(
                name=self.name,
                cron=self.cron,
                job_type=self.job_type,
                queue=self.queue if self.queue is not None else default_queue,
                payload=self.payload,
                timezone=self.timezone,
                catch_up=self.catch_up,
                source=ScheduleSource.API,
                **policy_options(self, default_timeout),
            )
        except ValidationError as exc:
            raise in_api_names(exc) from None


def policy_options(body: JobIn | ScheduleIn, default_timeout: float) -> PolicyOptions:
    """The job policy fields `body` sets, as the domain's builders take them: one left unset
    is left out (it takes the domain's default), but `timeout` takes `default_timeout`
    (JOB_TIMEOUT)."""
    options: dict[str, Any] = {"timeout": default_timeout}
    for name in POLICY_OPTIONS:
        if (value := getattr(body, name)) is not None:
            options[name] = value
    return cast(PolicyOptions, options)


SCHEDULE_IN_EXAMPLE: dict[str, Any] = {
    "name": "nightly-report",
    "cron": "30 2 * * *",
    "timezone": "Europe/Berlin",
    "jobType": "report",
    "payload": {"kind": "daily"},
    "maxAttempts": 5,
}


class ScheduleOut(msgspec.Struct, rename="camel", kw_only=True):
    """A schedule: its job template, when it fires, and where it was declared (`source`:
    "code" or "api"). `nextFireAt` is null while it is paused; `previousFireAt` is the last
    tick that fired (null: none yet). Timestamps are ISO-8601 UTC."""

    name: str
    cron: str
    timezone: str
    catch_up: bool
    source: str
    paused: bool
    next_fire_at: datetime | None
    previous_fire_at: datetime | None
    job_type: str
    queue: str
    payload: dict[str, Any]
    max_attempts: int
    initial_delay: float
    backoff: float
    max_delay: float
    jitter: bool
    visibility_timeout: float
    timeout: float
    priority: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, schedule: Schedule) -> ScheduleOut:
        definition = schedule.definition
        return from_fields(
            cls,
            definition,
            definition.policy,
            schedule,
            source=definition.source.value,
            next_fire_at=None if schedule.paused else schedule.next_fire_at,
            previous_fire_at=schedule.last_fire_at,
        )


class ScheduleListOut(msgspec.Struct, kw_only=True):
    """Every schedule, by name."""

    items: list[ScheduleOut]
