"""The job lifecycle: states and the one table of legal transitions.

The database enforces the same table with a trigger (see migrations/); a test compares the
two pair by pair, so this module is the single source of truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from uuid import UUID

from taskforge.domain.errors import InvalidTransition


class JobState(StrEnum):
    PENDING = "PENDING"
    """Waiting to run. Enqueue, retry promotion, lease expiry, replay and manual retry move
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
    its late result is discarded. Only a manual retry moves a job out."""


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
"""Where an operator's retry may start. RUNNING -> PENDING belongs to the scheduler alone
(lease expiry), and a PENDING job has nothing to retry."""


def ensure_operator_retry(current: JobState, job_id: UUID | None = None) -> None:
    if current not in OPERATOR_RETRY_SOURCES:
        raise InvalidTransition(job_id, current.value, PENDING.value)
