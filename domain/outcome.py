"""What happens to a job after an attempt: the failure decision and settlement values."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from taskforge.domain.job import Job, Lease
from taskforge.domain.policy import RandomSource
from taskforge.domain.states import JobState


class FailureKind(StrEnum):
    RETRYABLE = "retryable"
    """Any exception from a handler, unless it says otherwise: worth another attempt."""

    TERMINAL = "terminal"
    """A TerminalError (a typed task's payload that does not decode raises one): retrying
    cannot help. A job of a type no handler serves never gets this far: the worker hands it
    back for another worker, then dead-letters it (Worker._unknown_type)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Succeeded:
    lease: Lease
    result: str | None = None
    """The handler's return value as JSON text (see result.encode_result); None: none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryLater:
    """Attempts are left: FAILED now, due again after `delay` (from the store's clock)."""

    lease: Lease
    error: str
    delay: timedelta
    traceback: str | None = None
    """Kept with `error` in the job's `errors`; bounded by bound_traceback."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLettered:
    lease: Lease
    error: str
    reason: str
    traceback: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Snoozed:
    """The handler asked to run the job later (taskforge.Snooze): PENDING again, due after
    `delay`; the attempt is not counted and `snoozes` + 1."""

    lease: Lease
    delay: timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class HandedBack:
    """The worker has no handler for the job's type and another worker may have one: PENDING
    again, due after `delay` (so that other workers get it first), the attempt not counted,
    `hand_backs` + 1 and the job's `unknown_type_since` set to this one's."""

    lease: Lease
    delay: timedelta
    unknown_type_since: datetime | None


Settlement = Succeeded | RetryLater | DeadLettered | Snoozed | HandedBack
"""A fenced write that ends one attempt; applied only while `lease` still owns the job."""

Release = Snoozed | HandedBack
"""The settlements that release a job without counting its attempt (DESIGN: attempts that
do not count)."""

EXHAUSTED_REASON = "attempts exhausted"
MANUAL_DLQ_REASON = "moved to DLQ by an operator"
TERMINAL_REASON = "terminal error"
DEFAULT_MAX_SNOOZES = 100
"""Snoozes a job may take before its next one dead-letters it (MAX_SNOOZES)."""
DEFAULT_UNKNOWN_TYPE_GRACE = 300.0
"""Seconds without a live worker that has a handler for a job's type before the job is
dead-lettered as unknown (UNKNOWN_TYPE_GRACE)."""

SNOOZE_LIMIT_REASON = "snoozed too many times"
UNKNOWN_TYPE_REASON = "unknown job type"
WORKER_ERROR_REASON = "the worker could not decide the attempt's outcome"
"""Dead-letters a job whose own data made even the failure decision raise: retrying
cannot help, and an operator can replay it once the cause is fixed."""
LEASE_EXPIRED_ERROR = "lease expired before the attempt finished"

MAX_TRACEBACK_BYTES = 8 * 1024
"""The most a kept traceback takes, in UTF-8 bytes, its cut mark included."""
TRACEBACK_CUT_MARK = "[... {} bytes cut ...]\n"
MAX_TRACEBACK_PART = 1_000
"""The most of one part of a traceback (a frame, an exception's message) kept, in
characters: a long message (an HTTP answer's body quoted whole) keeps its start and leaves
room for the frames, which bound_traceback would otherwise cut to make room for it. The
error itself keeps more of the message (MAX_ERROR_LENGTH)."""
TRACEBACK_PART_CUT_MARK = "[... {} characters cut ...]\n"


def decide_failure(
    job: Job,
    lease: Lease,
    error: str,
    kind: FailureKind,
    random: RandomSource,
    traceback: str | None = None,
) -> RetryLater | DeadLettered:
    """Retryable with attempts left -> FAILED with a backoff delay; otherwise DLQ."""
    if kind is FailureKind.TERMINAL:
        return DeadLettered(lease=lease, error=error, reason=TERMINAL_REASON, traceback=traceback)
    if job.policy.exhausted_by(job.attempt_count):
        return DeadLettered(lease=lease, error=error, reason=EXHAUSTED_REASON, traceback=traceback)
    delay = job.policy.delay_after(job.attempt_count, random)
    return RetryLater(lease=lease, error=error, delay=delay, traceback=traceback)


def storable_text(text: str) -> str:
    """`text` as every store can keep it: NUL (which Postgres text cannot hold) and lone
    surrogates (which UTF-8 cannot encode) are written as backslash escapes. Errors are
    free-form, so this is applied to every error and traceback a worker records."""
    if text.isascii():
        return text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def joined_traceback(parts: Iterable[str]) -> str:
    """A traceback from its parts (traceback.format_exception's: a frame each, an exception's
    message whole), each cut to MAX_TRACEBACK_PART characters, then bounded (bound_traceback)."""
    return bound_traceback("".join(_cut_part(part) for part in parts))


def _cut_part(part: str) -> str:
    if len(part) <= MAX_TRACEBACK_PART:
        return part
    kept = part[:MAX_TRACEBACK_PART]
    line_end = "" if kept.endswith("\n") else "\n"
    return kept + line_end + TRACEBACK_PART_CUT_MARK.format(len(part) - MAX_TRACEBACK_PART)


def bound_traceback(text: str) -> str:
    """`text` made storable, in at most MAX_TRACEBACK_BYTES: a longer one keeps its end
    (where the error was raised) behind a mark saying how many bytes were cut from the
    start."""
    text = storable_text(text)
    data = text.encode("utf-8")
    if len(data) <= MAX_TRACEBACK_BYTES:
        return text
    # The mark's length depends on the count it shows; the full length is the longest.
    room = MAX_TRACEBACK_BYTES - len(TRACEBACK_CUT_MARK.format(len(data)).encode())
    # A character split by the cut is dropped whole.
    tail = data[-room:].decode("utf-8", "ignore")
    return TRACEBACK_CUT_MARK.format(len(data) - len(tail.encode())) + tail


def target_state(settlement: Settlement) -> JobState:
    match settlement:
        case Succeeded():
            return JobState.SUCCEEDED
        case RetryLater():
            return JobState.FAILED
        case DeadLettered():
            return JobState.DLQ
        case Snoozed() | HandedBack():
            return JobState.PENDING
