"""The one "database" of the in-memory backend, which every in-memory store role is a view
of, with the writes several roles share (a requeue, an entry into DLQ)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from taskforge.application.ports import Clock, IdSource
from taskforge.domain.errors import JobNotFound, UniqueKeyTaken
from taskforge.domain.job import (
    MAX_ATTEMPT_ERRORS,
    UNIQUE_KEY_STATES,
    AttemptError,
    DeadLetter,
    Job,
    dispatch_order,
)
from taskforge.domain.schedule import Schedule
from taskforge.domain.states import JobState

PENDING, RUNNING, SUCCEEDED, FAILED, DLQ, CANCELLED = JobState

NO_LEASE: dict[str, object] = {"lease_owner": None, "lease_token": None, "lease_expires_at": None}


class InMemoryState:
    """Jobs, dead letters and published times, with the store's own clock (Postgres's `now()`)
    and source of lease tokens. Each role's view of it (InMemoryJobStore, InMemoryLeaseStore,
    InMemorySweeps, InMemoryOperatorMoves, InMemoryDeadLetterStore) sees every other's writes."""

    def __init__(self, clock: Clock, ids: IdSource) -> None:
        self.clock = clock
        self.ids = ids
        self.jobs: dict[UUID, Job] = {}
        self.by_idempotency_key: dict[str, UUID] = {}
        self.by_unique_key: dict[tuple[str, str], UUID] = {}
        """The last job to take each (queue, unique key); it holds the key only while its
        state is in UNIQUE_KEY_STATES (see unique_key_holder)."""
        self.paused_queues: dict[str, datetime] = {}
        """Paused queues, each with when it was paused."""
        self.dead_letters: dict[UUID, DeadLetter] = {}
        self.schedules: dict[str, Schedule] = {}
        self.published_at: dict[UUID, datetime | None] = {}

    def existing(self, job_id: UUID) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def forget(self, job: Job) -> None:
        """Delete `job` and what points at it (its keys, its published time, its dead
        letter), as deleting its row does in Postgres: a store that prunes jobs for ever
        holds nothing of them."""
        del self.jobs[job.id]
        self.dead_letters.pop(job.id, None)
        self.published_at.pop(job.id, None)
        if job.idempotency_key is not None:
            self.by_idempotency_key.pop(job.idempotency_key, None)
        if job.unique_key is not None:
            unique = (job.queue, job.unique_key)
            if self.by_unique_key.get(unique) == job.id:  # else a later job holds it now
                del self.by_unique_key[unique]

    def unique_key_holder(self, queue: str, unique_key: str) -> Job | None:
        """The job of `queue` that holds `unique_key` now, if one does."""
        job_id = self.by_unique_key.get((queue, unique_key))
        job = None if job_id is None else self.jobs.get(job_id)
        return job if job is not None and job.state in UNIQUE_KEY_STATES else None

    def put(self, job: Job, **changes: object) -> Job:
        updated = dataclasses.replace(job, **changes)  # type: ignore[arg-type]
        self.jobs[job.id] = updated
        return updated

    def requeue(self, job: Job, now: datetime, **changes: object) -> Job:
        """Back to PENDING, due now, without a result; its hint counts as published (the
        caller pushes it). A finished job takes its unique key back: UniqueKeyTaken when
        another job holds it."""
        if job.unique_key is not None and job.state not in UNIQUE_KEY_STATES:
            holder = self.unique_key_holder(job.queue, job.unique_key)
            if holder is not None and holder.id != job.id:
                raise UniqueKeyTaken(
                    job.id, job.state.value, PENDING.value, job.unique_key, holder.id
                )
            self.by_unique_key[job.queue, job.unique_key] = job.id
        self.published_at[job.id] = now
        return self.put(
            job,
            state=PENDING,
            next_run_at=now,
            updated_at=now,
            finished_at=None,
            reason=None,
            result=None,
            **NO_LEASE,
            **changes,
        )

    def dead_letter(self, job: Job, reason: str, error: str | None, now: datetime) -> Job:
        """Into DLQ, with its dead_letters entry."""
        dead = self.put(
            job,
            state=DLQ,
            reason=reason,
            last_error=error,
            finished_at=now,
            updated_at=now,
            **NO_LEASE,
        )
        self.dead_letters[job.id] = DeadLetter(
            job_id=job.id,
            queue=job.queue,
            job_type=job.job_type,
            payload=job.payload,
            reason=reason,
            last_error=error,
            attempts=job.attempt_count,
            failed_at=now,
            created_at=now,
            updated_at=now,
        )
        return dead


class InMemoryView:
    """Base of the in-memory store roles: each is a view of one shared InMemoryState."""

    def __init__(self, state: InMemoryState) -> None:
        self._state = state


def with_error(
    job: Job, now: datetime, error: str, traceback: str | None
) -> tuple[AttemptError, ...]:
    """The job's errors with its current attempt's failure added, the oldest dropped."""
    failure = AttemptError(attempt=job.attempt_count, at=now, error=error, traceback=traceback)
    return (*job.errors, failure)[-MAX_ATTEMPT_ERRORS:]


def without_details(job: Job) -> Job:
    """Lists, claims and enqueues leave `errors` and `result` out, as the Postgres store does
    (they are heavy); reads and moves of one job carry them."""
    if job.errors or job.result is not None:
        return dataclasses.replace(job, errors=(), result=None)
    return job


def oldest_due(jobs: Iterable[Job], now: datetime, limit: int) -> list[Job]:
    due = [job for job in jobs if job.next_run_at <= now]
    return sorted(due, key=lambda job: (job.next_run_at, job.id))[:limit]


def first_to_dispatch(jobs: Iterable[Job], now: datetime, limit: int) -> list[Job]:
    """The first `limit` due jobs in dispatch order: by priority, then oldest due first."""
    due = [job for job in jobs if job.next_run_at <= now]
    return sorted(due, key=dispatch_order)[:limit]
