"""The API's resources as immutable Python values: snake_case names, parsed types.

Fields the API adds later are ignored by older clients rather than refused, so a client
keeps working against a newer API. The values are frozen msgspec Structs: built about seven
times faster than frozen dataclasses (a thousand jobs from `enqueue_many` are a thousand of
them), copied with `msgspec.structs.replace`, turned into dicts with
`msgspec.structs.asdict`. This module, and msgspec with it, loads with the first decoded
answer: `taskforge-cli`, which prints the API's answers undecoded, starts without either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

import msgspec

from taskforge.domain.states import TERMINAL_STATES, JobState
from taskforge.domain.validation import DEFAULT_PRIORITY

T = TypeVar("T")


class AttemptError(msgspec.Struct, frozen=True, kw_only=True):
    """One failed attempt, as kept with the job (the last 20 attempts)."""

    attempt: int
    at: datetime
    error: str
    traceback: str | None = None


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """A job as `GET /jobs/{id}` answers it. `errors` and `result` (the JSON value the
    handler returned once the job SUCCEEDED) are only filled by `get` (and `wait`); lists
    and operator moves leave them empty, as the API does. `conflict` is the client's own:
    no answer of the API carries it."""

    id: UUID
    queue: str
    job_type: str
    payload: dict[str, Any]
    state: JobState
    idempotency_key: str | None
    unique_key: str | None = None
    attempt_count: int
    retry_count: int
    snoozes: int = 0
    """Runs the handler ended with taskforge.Snooze; none used an attempt."""
    hand_backs: int = 0
    """Runs a worker handed back unfinished (shutdown, no handler for the job's type)."""
    unknown_type_since: datetime | None = None
    """Set while no live worker serving the queue has a handler for the job's type."""
    max_attempts: int
    initial_delay: float
    backoff: float
    max_delay: float
    jitter: bool
    visibility_timeout: float
    timeout: float
    priority: int = DEFAULT_PRIORITY
    """0 (claimed first) to 9 (claimed last)."""
    next_run_at: datetime
    last_error: str | None
    reason: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    errors: tuple[AttemptError, ...] = ()
    result: Any = None
    conflict: bool = False
    """True only on what an enqueue answered, when it found this job stored before the call
    (its idempotency key, or its queue's unfinished job holding the unique key) and stored
    none; False on every other read of a job."""

    @property
    def terminal(self) -> bool:
        """SUCCEEDED, DLQ or CANCELLED: the job stays there until an operator acts."""
        return self.state in TERMINAL_STATES


class _Page(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """One page of a list: `limit` and `offset` as the API applied them; `total` counts
    every match."""

    items: tuple[T, ...]
    limit: int
    offset: int
    total: int


class JobPage(_Page[Job], frozen=True, kw_only=True):
    """One page of jobs, newest first; `total` counts every match."""


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
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


class DeadLetterPage(_Page[DeadLetter], frozen=True, kw_only=True):
    """One page of dead letters, newest first (by `failed_at`)."""


class BatchItem(msgspec.Struct, frozen=True, kw_only=True):
    """One job of `enqueue_many`, in the order given: `existing` when the job was stored
    before the call (its idempotency key, or its queue's unfinished job holding the unique
    key, or an earlier job of the batch), else `created`."""

    id: UUID
    status: Literal["created", "existing"]
    state: JobState

    @property
    def conflict(self) -> bool:
        """`existing`: as `Job.conflict` says of an enqueue's job."""
        return self.status == "existing"


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    queue: str
    depth: int
    """Hints waiting in Redis for this queue."""
    states: dict[str, int]
    total: int


class QueueInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A queue as `GET /queues` lists it (`states` and `total` are None in the answers of
    pause and resume), and whether it is paused, since `paused_at`."""

    queue: str
    paused: bool
    paused_at: datetime | None = None
    states: dict[str, int] | None = None
    total: int | None = None


class WorkerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A live worker as `GET /workers` lists it: what it serves and runs, how busy it is."""

    worker_id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    job_types: tuple[str, ...]
    concurrency: int
    busy_slots: int
    started_at: datetime
    heartbeat_at: datetime


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    queues: tuple[QueueStats, ...]
    totals: dict[str, int]
    total: int
    dlq: int


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """A schedule of periodic jobs: at every tick of `cron` in `timezone`, a `job_type`
    job on `queue`. `source` is "code" (declared beside a handler) or "api";
    `next_fire_at` is None while paused; `previous_fire_at` is the last tick fired."""

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
    created_at: datetime
    updated_at: datetime
    priority: int = DEFAULT_PRIORITY
    """The priority of each tick's job: 0 (claimed first) to 9 (claimed last)."""


_CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")


def snake_keys(resource: Mapping[str, Any]) -> dict[str, Any]:
    """`{"jobType": ...}` -> `{"job_type": ...}`, top level only: a payload's keys are the
    caller's and stay as they are."""
    return {_CAMEL_HUMP.sub("_", key).lower(): value for key, value in resource.items()}


def _convert(value: Any, into: type[T]) -> T:
    return msgspec.convert(value, into)


def job_of(resource: Mapping[str, Any], *, conflict: bool = False) -> Job:
    fields = snake_keys(resource)
    fields["conflict"] = conflict
    return _convert(fields, Job)


def job_page_of(page: Mapping[str, Any]) -> JobPage:
    items = [snake_keys(item) for item in page["items"]]
    return _convert({**page, "items": items}, JobPage)


def dead_letter_of(resource: Mapping[str, Any]) -> DeadLetter:
    return _convert(snake_keys(resource), DeadLetter)


def dead_letter_page_of(page: Mapping[str, Any]) -> DeadLetterPage:
    items = [snake_keys(item) for item in page["items"]]
    return _convert({**page, "items": items}, DeadLetterPage)


def batch_items_of(answer: Mapping[str, Any]) -> list[BatchItem]:
    return _convert(answer["items"], list[BatchItem])


def queue_of(resource: Mapping[str, Any]) -> QueueInfo:
    return _convert(snake_keys(resource), QueueInfo)


def queues_of(answer: Mapping[str, Any]) -> list[QueueInfo]:
    return [queue_of(item) for item in answer["items"]]


def workers_of(answer: Mapping[str, Any]) -> list[WorkerInfo]:
    return [_convert(snake_keys(item), WorkerInfo) for item in answer["items"]]


def stats_of(answer: Mapping[str, Any]) -> Stats:
    return _convert(answer, Stats)


def schedule_of(resource: Mapping[str, Any]) -> Schedule:
    return _convert(snake_keys(resource), Schedule)


def schedules_of(answer: Mapping[str, Any]) -> list[Schedule]:
    return [schedule_of(item) for item in answer["items"]]
