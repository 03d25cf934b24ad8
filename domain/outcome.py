"""What happens to a job after an attempt: the failure decision and settlement values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from taskforge.domain.job import Job, Lease
from taskforge.domain.policy import RandomSource
from taskforge.domain.states import JobState


class FailureKind(StrEnum):
    RETRYABLE = "retryable"
    """Any exception from a handler, unless it says otherwise: worth another attempt."""

    TERMINAL = "terminal"
    """A TerminalError, an unknown jobType or an invalid payload: retrying cannot help."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Succeeded:
    lease: Lease


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryLater:
    """Attempts are left: FAILED now, due again after `delay` (from the store's clock)."""

    lease: Lease
    error: str
    delay: timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLettered:
    lease: Lease
    error: str
    reason: str


Settlement = Succeeded | RetryLater | DeadLettered
"""A fenced write that ends one attempt; applied only while `lease` still owns the job."""

EXHAUSTED_REASON = "attempts exhausted"
MANUAL_DLQ_REASON = "moved to DLQ by an operator"
TERMINAL_REASON = "terminal error"
LEASE_EXPIRED_ERROR = "lease expired before the attempt finished"


def decide_failure(
    job: Job, lease: Lease, error: str, kind: FailureKind, random: RandomSource
) -> RetryLater | DeadLettered:
    """Retryable with attempts left -> FAILED with a backoff delay; otherwise DLQ."""
    if kind is FailureKind.TERMINAL:
        return DeadLettered(lease=lease, error=error, reason=TERMINAL_REASON)
    if job.attempt_count >= job.policy.max_attempts:
        return DeadLettered(lease=lease, error=error, reason=EXHAUSTED_REASON)
    delay = job.policy.delay_after(job.attempt_count, random)
    return RetryLater(lease=lease, error=error, delay=delay)


def target_state(settlement: Settlement) -> JobState:
    match settlement:
        case Succeeded():
            return JobState.SUCCEEDED
        case RetryLater():
            return JobState.FAILED
        case DeadLettered():
            return JobState.DLQ
