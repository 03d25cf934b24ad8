"""The job lifecycle: states and the one table of legal transitions.

The database enforces the same table with a trigger (see migrations/); a test compares the
two pair by pair, so this module is the single source of truth.

One word per concept, in the service's Python (routes, JSON fields, metric names, CLI
commands and the Python client keep the API's words):
- attempt: one run of a handler under a lease; `attempt_count` counts them, and once it
  reaches `max_attempts` the attempts are exhausted (policy.attempts_exhausted).
- retry: the automatic next attempt of a FAILED job once its backoff has passed (the
  worker's `RetryLater`, the scheduler's `promote_due`); `retry_count` counts them.
- retry now: an operator's move of a FAILED, DLQ or CANCELLED job to PENDING, due at once
  (`POST /jobs/{id}/retry`: `RetryJobNow`, `OperatorMoves.retry_now`).
- dead-letter (verb): move a job to DLQ, by a failure decision (`DeadLettered`) or by an
  operator (`POST /jobs/{id}/dlq`: `DeadLetterJob`, `OperatorMoves.dead_letter`).
- dead letter (noun): the DLQ entry kept for a dead-lettered job (`DeadLetter`, the
  `dead_letters` table, `DeadLetterStore`).
- replay: an operator's move of a dead letter back to PENDING with its counts reset.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from uuid import UUID

from taskforge.domain.errors import InvalidTransition


class JobState(StrEnum):
    PENDING = "PENDING"
    """Waiting to run. Enqueue, retry promotion, lease expiry, replay and retry now move
    jobs in; a worker's claim moves them out (to RUNNING), as do cancel and manual DLQ.
    A pending job whose `next_run_at` is in the future is a delayed job."""

    RUNNING = "RUNNING"
    """Claimed by a worker that holds a lease (`lease_token`, `lease_expires_at`). Only the
    lease holder may settle it; the scheduler takes it back when the lease expires."""

    SUCCEEDED = "SUCCEEDED"
    """The handler returned. Terminal: nothing moves a job out of it."""

    FAILED = "FAILED"
    """The last attempt raised a retryable error and attempts are left; the scheduler moves
    it back to PENDING at `next_run_at`, computed from the retry policy."""

    DLQ = "DLQ"
    """Dead-lettered: a terminal error, exhausted attempts, or an operator's decision. A row
    in `dead_letters` exists exactly while a job is here; replay or retry moves it out."""

    CANCELLED = "CANCELLED"
    """Stopped by an operator. A running handler is interrupted at its next heartbeat and
    its late result is discarded. Only a retry now moves a job out."""


PENDING, RUNNING, SUCCEEDED, FAILED, DLQ, CANCELLED = JobState

TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    PENDING: frozenset({RUNNING, DLQ, CANCELLED}),
    RUNNING: frozenset({PENDING, SUCCEEDED, FAILED, DLQ, CANCELLED}),
    FAILED: frozenset({PENDING, DLQ, CANCELLED}),
    DLQ: frozenset({PENDING}),
    CANCELLED: frozenset({PENDING}),
    SUCCEEDED: frozenset(),
}

TERMINAL_STATES = frozenset({SUCCEEDED, DLQ, CANCELLED})
"""States in which a job stays until an operator acts (SUCCEEDED: forever)."""


def can_transition(current: JobState, target: JobState) -> bool:
    return target in TRANSITIONS[current]


def ensure_transition(current: JobState, target: JobState, job_id: UUID | None = None) -> None:
    """Raise InvalidTransition unless the table allows `current -> target`."""
    if not can_transition(current, target):
        raise InvalidTransition(job_id, current.value, target.value)


def sources_of(target: JobState) -> frozenset[JobState]:
    """Every state from which `target` can be entered."""
    return frozenset(state for state, targets in TRANSITIONS.items() if target in targets)


OPERATOR_RETRY_SOURCES = frozenset({FAILED, DLQ, CANCELLED})
"""Where a retry now may start. RUNNING -> PENDING belongs to the scheduler alone
(lease expiry), and a PENDING job has nothing to retry."""


def ensure_retry_now(current: JobState, job_id: UUID | None = None) -> None:
    if current not in OPERATOR_RETRY_SOURCES:
        raise InvalidTransition(job_id, current.value, PENDING.value)
