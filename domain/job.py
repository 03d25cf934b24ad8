"""The job entity and the values that describe a job being claimed, settled or read back.
A job being created is `new_job`'s."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from taskforge.domain.policy import RetryPolicy
from taskforge.domain.states import JobState
from taskforge.domain.validation import DEFAULT_PRIORITY

JsonObject = dict[str, Any]

DEFAULT_VISIBILITY_TIMEOUT = 30.0

MAX_ATTEMPT_ERRORS = 20
"""How many failed attempts a job keeps in `errors` (the latest)."""

UNIQUE_KEY_STATES = frozenset({JobState.PENDING, JobState.RUNNING, JobState.FAILED})
"""A job holds its `unique_key` in its queue while in one of these states: no other job of
the queue with that key may be in one of them at the same time. Once it is SUCCEEDED, DLQ or
CANCELLED the key is free (a retry or replay takes it back, if no other job holds it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptError:
    """One failed attempt as the job keeps it: which attempt, when the store recorded the
    failure (UTC), the error in one line and, when there is one, its traceback (at most
    MAX_TRACEBACK_BYTES, see outcome.bound_traceback)."""

    attempt: int
    at: datetime
    error: str
    traceback: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One unit of work and its execution state. Timestamps are timezone-aware UTC.

    `lease_token` and `lease_expires_at` are set exactly while the job is RUNNING;
    `reason` is the operator's or the system's reason for a cancel or a dead-letter.
    `timeout` is the attempt's time limit in seconds (0: none); `priority` orders the claims
    of its queue (0 first, 9 last; see dispatch_order). `errors` holds the last
    MAX_ATTEMPT_ERRORS failed attempts, oldest first; `result` is the JSON value the handler
    returned when the job SUCCEEDED (None: it returned None, or the job has not succeeded).
    Only reads and moves of one job load them (lists and claims leave `errors` empty and
    `result` None: a job's errors may weigh 160 KiB, its result MAX_RESULT_BYTES).
    """

    id: UUID
    queue: str
    job_type: str
    payload: JsonObject
    state: JobState
    policy: RetryPolicy
    visibility_timeout: float
    next_run_at: datetime
    created_at: datetime
    updated_at: datetime
    timeout: float = 0.0
    priority: int = DEFAULT_PRIORITY
    idempotency_key: str | None = None
    unique_key: str | None = None
    attempt_count: int = 0
    retry_count: int = 0
    snoozes: int = 0
    """Times a handler snoozed the job (taskforge.Snooze); none of them used an attempt."""
    hand_backs: int = 0
    """Times a worker handed the job back unfinished (shutdown, no handler for its type);
    none of them used an attempt."""
    unknown_type_since: datetime | None = None
    """Since when no live worker serving the job's queue has had a handler for its type, as
    far as the workers that handed it back saw; None: a handler was seen (or never looked
    for). The job is dead-lettered as unknown UNKNOWN_TYPE_GRACE seconds after it."""
    lease_owner: str | None = None
    lease_token: UUID | None = None
    lease_expires_at: datetime | None = None
    last_error: str | None = None
    reason: str | None = None
    traceparent: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    errors: tuple[AttemptError, ...] = ()
    result: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """Proof that a worker owns a running job. Every write by the worker names it (fencing)."""

    job_id: UUID
    token: UUID


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """The `dead_letters` row written when a job enters DLQ; removed by replay or retry."""

    job_id: UUID
    queue: str
    job_type: str
    payload: JsonObject
    reason: str
    last_error: str | None
    attempts: int
    failed_at: datetime
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: str
    counts: dict[JobState, int]
    """Jobs per state; every state is present, zero included."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class ReadyHint:
    """ "Job `job_id` may be ready on `queue`": what the ready queue carries. A hint may be stale
    or duplicated; claiming is what decides."""

    queue: str
    job_id: UUID
    traceparent: str | None = field(default=None, compare=False)
    """The job's traceparent, when the scheduler's sweeps return the hint (to continue the
    job's trace). Not part of the hint's identity, and the ready queue does not keep it."""
    priority: int = DEFAULT_PRIORITY
    """The job's priority: the ready queue hands out hints of a higher one (a lower number)
    first."""

    @classmethod
    def of(cls, job: Job) -> ReadyHint:
        """The hint for `job`, in its queue and at its priority."""
        return cls(job.queue, job.id, job.traceparent, job.priority)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReapedDeadLetter:
    """A job whose lease expired on its last attempt, dead-lettered by the scheduler's
    sweep (Sweeps.reap_expired): what the scheduler names it by in its log and trace."""

    job_id: UUID
    queue: str
    job_type: str
    reason: str
    last_error: str
    traceparent: str | None = None
    """The job's traceparent: its dead-lettering joins the job's trace."""


def dispatch_order(job: Job) -> tuple[int, datetime, UUID]:
    """The order in which a queue's due PENDING jobs are claimed: higher priority (lower
    number) first, then oldest due first, then by id. Postgres claims in the same order."""
    return (job.priority, job.next_run_at, job.id)
