"""Rows to domain objects, and the column lists the store roles read them with."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from taskforge.domain.job import AttemptError, DeadLetter, Job, ReadyHint, ReapedDeadLetter
from taskforge.domain.policy import RetryPolicy
from taskforge.domain.states import JobState

JOB_FIELDS = (
    "id",
    "queue",
    "job_type",
    "payload",
    "state",
    "idempotency_key",
    "unique_key",
    "max_attempts",
    "initial_delay",
    "backoff",
    "max_delay",
    "jitter",
    "visibility_timeout",
    "timeout",
    "priority",
    "attempt_count",
    "retry_count",
    "snoozes",
    "hand_backs",
    "unknown_type_since",
    "next_run_at",
    "lease_owner",
    "lease_token",
    "lease_expires_at",
    "last_error",
    "reason",
    "traceparent",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
)
JOB_COLUMNS = ", ".join(JOB_FIELDS)
"""A job without its `errors` (up to 160 KiB a job) and `result` (up to MAX_RESULT_BYTES), as
lists, claims and enqueues read it."""
JOB_DETAIL_COLUMNS = f"{JOB_COLUMNS}, errors, result"
"""A job with its `errors` and `result`, as statements that answer for one job read it."""
# Qualified, for statements that join `jobs` with a CTE sharing some column names.
JOBS_COLUMNS = ", ".join(f"jobs.{field}" for field in JOB_FIELDS)

DEAD_LETTER_COLUMNS = (
    "job_id, queue, job_type, payload, reason, last_error, attempts, failed_at, created_at, "
    "updated_at"
)


def hint_from_row(row: asyncpg.Record) -> ReadyHint:
    return ReadyHint(row["queue"], row["id"], row["traceparent"], row["priority"])


def reaped_dead_letter_from_row(row: asyncpg.Record) -> ReapedDeadLetter:
    return ReapedDeadLetter(
        job_id=row["id"],
        queue=row["queue"],
        job_type=row["job_type"],
        reason=row["reason"],
        last_error=row["last_error"],
        traceparent=row["traceparent"],
    )


def retry_policy_from_row(row: asyncpg.Record | Mapping[str, Any]) -> RetryPolicy:
    """The retry policy columns `jobs` and `schedules` share."""
    return RetryPolicy.of(
        row["max_attempts"], row["initial_delay"], row["backoff"], row["max_delay"], row["jitter"]
    )


def as_uuid(value: Any) -> UUID:
    """A uuid column's value: asyncpg reads a UUID, unless the connection (an application's,
    which the SDK writes on) has a codec of its own for uuid, one that reads text say."""
    return value if isinstance(value, UUID) else UUID(str(value))


def job_from_row(row: asyncpg.Record | Mapping[str, Any]) -> Job:
    return Job(
        id=as_uuid(row["id"]),
        queue=row["queue"],
        job_type=row["job_type"],
        payload=row["payload"],
        state=JobState(row["state"]),
        policy=retry_policy_from_row(row),
        visibility_timeout=row["visibility_timeout"],
        timeout=row["timeout"],
        priority=row["priority"],
        next_run_at=row["next_run_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        idempotency_key=row["idempotency_key"],
        unique_key=row["unique_key"],
        attempt_count=row["attempt_count"],
        retry_count=row["retry_count"],
        snoozes=row["snoozes"],
        hand_backs=row["hand_backs"],
        unknown_type_since=row["unknown_type_since"],
        lease_owner=row["lease_owner"],
        lease_token=row["lease_token"],
        lease_expires_at=row["lease_expires_at"],
        last_error=row["last_error"],
        reason=row["reason"],
        traceparent=row["traceparent"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        errors=errors_from_json(row.get("errors")),
        result=row.get("result"),
    )


def errors_from_json(entries: list[dict[str, Any]] | None) -> tuple[AttemptError, ...]:
    """The `errors` column as written by with_error; None when the row was read without it."""
    return tuple(
        AttemptError(
            attempt=entry["attempt"],
            at=datetime.fromisoformat(entry["at"]),
            error=entry["error"],
            traceback=entry["traceback"],
        )
        for entry in entries or ()
    )


def dead_letter_from_row(row: asyncpg.Record) -> DeadLetter:
    return DeadLetter(
        job_id=row["job_id"],
        queue=row["queue"],
        job_type=row["job_type"],
        payload=row["payload"],
        reason=row["reason"],
        last_error=row["last_error"],
        attempts=row["attempts"],
        failed_at=row["failed_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
