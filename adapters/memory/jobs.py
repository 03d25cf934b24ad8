from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from uuid import UUID

from taskforge.application.ports import Clock, IdSource, ListFilter
from taskforge.domain.errors import DeadLetterNotFound, JobIdTaken, JobNotFound
from taskforge.domain.job import (
    MAX_ATTEMPT_ERRORS,
    AttemptError,
    DeadLetter,
    Job,
    Lease,
    NewJob,
    QueueStats,
    ReadyHint,
)
from taskforge.domain.outcome import (
    EXHAUSTED_REASON,
    LEASE_EXPIRED_ERROR,
    MANUAL_DLQ_REASON,
    DeadLettered,
    RetryLater,
    Settlement,
    Succeeded,
)
from taskforge.domain.states import JobState, ensure_operator_retry, ensure_transition
from taskforge.domain.validation import Page

PENDING, RUNNING, SUCCEEDED, FAILED, DLQ, CANCELLED = JobState


class InMemoryState:
    """What the in-memory repository and dead-letter store share (one "database")."""

    def __init__(self) -> None:
        self.jobs: dict[UUID, Job] = {}
        self.by_idempotency_key: dict[str, UUID] = {}
        self.dead_letters: dict[UUID, DeadLetter] = {}
        self.published_at: dict[UUID, datetime | None] = {}


def _newest_first(items: Iterable[Job]) -> list[Job]:
    return sorted(items, key=lambda job: (job.created_at, job.id), reverse=True)


class InMemoryJobRepository:
    def __init__(self, state: InMemoryState, clock: Clock, ids: IdSource) -> None:
        self._state = state
        self._clock = clock
        self._ids = ids

    async def add(self, job: NewJob) -> tuple[Job, bool]:
        [result] = self._add_all([job], self._clock.now())
        return result

    async def add_many(self, jobs: Sequence[NewJob]) -> list[tuple[Job, bool]]:
        return self._add_all(jobs, self._clock.now())

    def _add_all(self, news: Sequence[NewJob], now: datetime) -> list[tuple[Job, bool]]:
        """All or none, like one INSERT: every job is checked and built before the first
        is stored. Within the batch, a repeated idempotency key yields the first job."""
        results: list[tuple[Job, bool]] = []
        created: dict[UUID, Job] = {}
        by_key: dict[str, Job] = {}
        for new in news:
            key = new.idempotency_key
            holder = None if key is None else (by_key.get(key) or self._holder(key))
            if holder is not None:
                results.append((holder, False))
                continue
            if new.id in self._state.jobs or new.id in created:
                raise JobIdTaken(new.id)
            job = new.stored(new.due_at(now), now)
            created[job.id] = job
            if key is not None:
                by_key[key] = job
            results.append((job, True))
        for job in created.values():
            self._state.jobs[job.id] = job
            if job.idempotency_key is not None:
                self._state.by_idempotency_key[job.idempotency_key] = job.id
            self._state.published_at[job.id] = now if job.next_run_at <= now else None
        return results

    def _holder(self, key: str) -> Job | None:
        job_id = self._state.by_idempotency_key.get(key)
        return None if job_id is None else _without_errors(self._state.jobs[job_id])

    async def get(self, job_id: UUID) -> Job | None:
        return self._state.jobs.get(job_id)

    async def find(self, where: ListFilter, page: Page) -> tuple[list[Job], int]:
        matches = [
            job
            for job in self._state.jobs.values()
            if (where.queue is None or job.queue == where.queue)
            and (where.state is None or job.state is where.state)
        ]
        ordered = _newest_first(matches)
        window = ordered[page.offset : page.offset + page.limit]
        return [_without_errors(job) for job in window], len(ordered)

    async def claim(self, job_ids: Sequence[UUID], owner: str) -> list[Job]:
        now = self._clock.now()
        claimed = []
        for job_id in dict.fromkeys(job_ids):
            job = self._state.jobs.get(job_id)
            if job is not None and job.state is PENDING and job.next_run_at <= now:
                claimed.append(self._claim(job, owner, now))
        return claimed

    async def claim_due(self, queues: Sequence[str], limit: int, owner: str) -> list[Job]:
        now = self._clock.now()
        due = sorted(
            (
                job
                for job in self._state.jobs.values()
                if job.queue in queues and job.state is PENDING and job.next_run_at <= now
            ),
            key=lambda job: (job.next_run_at, job.id),
        )
        return [self._claim(job, owner, now) for job in due[:limit]]

    def _claim(self, job: Job, owner: str, now: datetime) -> Job:
        claimed = self._put(
            job,
            state=RUNNING,
            attempt_count=job.attempt_count + 1,
            lease_owner=owner,
            lease_token=self._ids.new_id(),
            lease_expires_at=now + timedelta(seconds=job.visibility_timeout),
            started_at=now,
            finished_at=None,
            updated_at=now,
        )
        return _without_errors(claimed)

    def _held(self, lease: Lease) -> Job | None:
        job = self._state.jobs.get(lease.job_id)
        if job is None or job.state is not RUNNING or job.lease_token != lease.token:
            return None
        return job

    async def heartbeat(self, leases: Sequence[Lease]) -> set[UUID]:
        now = self._clock.now()
        held = set()
        for lease in leases:
            job = self._held(lease)
            if job is not None:
                expires = now + timedelta(seconds=job.visibility_timeout)
                self._put(job, lease_expires_at=expires, updated_at=now)
                held.add(job.id)
        return held

    async def settle(self, settlements: Sequence[Settlement]) -> set[UUID]:
        now = self._clock.now()
        applied = set()
        for settlement in settlements:
            job = self._held(settlement.lease)
            if job is None:
                continue
            match settlement:
                case Succeeded():
                    self._put(job, state=SUCCEEDED, finished_at=now, updated_at=now, **_NO_LEASE)
                case RetryLater(error=error, delay=delay, traceback=traceback):
                    self._put(
                        job,
                        state=FAILED,
                        last_error=error,
                        errors=_with_error(job, now, error, traceback),
                        next_run_at=now + delay,
                        updated_at=now,
                        **_NO_LEASE,
                    )
                case DeadLettered(error=error, reason=reason, traceback=traceback):
                    job = self._put(job, errors=_with_error(job, now, error, traceback))
                    self._dead_letter(job, reason, error, now)
            applied.add(job.id)
        return applied

    async def release(self, leases: Sequence[Lease]) -> set[UUID]:
        now = self._clock.now()
        released = set()
        for lease in leases:
            job = self._held(lease)
            if job is not None:
                self._requeue(job, now, attempt_count=job.attempt_count - 1)
                released.add(job.id)
        return released

    async def cancel(self, job_id: UUID, reason: str | None) -> Job:
        job = self._get(job_id)
        ensure_transition(job.state, CANCELLED, job_id)
        now = self._clock.now()
        return self._put(
            job, state=CANCELLED, reason=reason, finished_at=now, updated_at=now, **_NO_LEASE
        )

    async def dead_letter(self, job_id: UUID, reason: str | None) -> Job:
        job = self._get(job_id)
        ensure_transition(job.state, DLQ, job_id)
        return self._dead_letter(
            job, reason or MANUAL_DLQ_REASON, job.last_error, self._clock.now()
        )

    async def retry(self, job_id: UUID) -> Job:
        job = self._get(job_id)
        ensure_operator_retry(job.state, job_id)
        now = self._clock.now()
        if job.state is FAILED:
            return self._requeue(job, now)
        self._state.dead_letters.pop(job_id, None)
        return self._requeue(job, now, attempt_count=0, retry_count=0)

    async def replay(self, job_id: UUID) -> Job:
        if job_id not in self._state.dead_letters:
            raise DeadLetterNotFound(job_id)
        job = self._get(job_id)
        ensure_transition(job.state, PENDING, job_id)
        del self._state.dead_letters[job_id]
        return self._requeue(job, self._clock.now(), attempt_count=0, retry_count=0)

    async def promote_due(self, limit: int) -> list[ReadyHint]:
        now = self._clock.now()
        due = self._oldest_due(
            (job for job in self._state.jobs.values() if job.state is FAILED), now, limit
        )
        return [_hint(self._requeue(job, now, retry_count=job.retry_count + 1)) for job in due]

    async def reap_expired(self, limit: int) -> tuple[list[ReadyHint], int]:
        now = self._clock.now()
        expired = sorted(
            (
                job
                for job in self._state.jobs.values()
                if job.state is RUNNING
                and job.lease_expires_at is not None
                and job.lease_expires_at < now
            ),
            key=lambda job: (job.lease_expires_at, job.id),
        )[:limit]
        hints, dead = [], 0
        for job in expired:
            job = self._put(job, errors=_with_error(job, now, LEASE_EXPIRED_ERROR, None))
            if job.attempt_count >= job.policy.max_attempts:
                self._dead_letter(job, EXHAUSTED_REASON, LEASE_EXPIRED_ERROR, now)
                dead += 1
            else:
                hints.append(_hint(self._requeue(job, now, last_error=LEASE_EXPIRED_ERROR)))
        return hints, dead

    async def find_unpublished(self, limit: int, older_than: float) -> list[ReadyHint]:
        now = self._clock.now()
        stale_before = now - timedelta(seconds=older_than)
        candidates = (
            job
            for job in self._state.jobs.values()
            if job.state is PENDING
            and _is_stale(self._state.published_at.get(job.id), stale_before)
        )
        due = self._oldest_due(candidates, now, limit)
        for job in due:
            self._state.published_at[job.id] = now
        return [_hint(job) for job in due]

    async def count_due(self, queues: Sequence[str]) -> dict[str, int]:
        now = self._clock.now()
        wanted = set(queues)
        due = Counter(
            job.queue
            for job in self._state.jobs.values()
            if job.state is PENDING and job.queue in wanted and job.next_run_at <= now
        )
        return dict(due)

    async def mark_unpublished(self) -> int:
        pending = [job_id for job_id, job in self._state.jobs.items() if job.state is PENDING]
        for job_id in pending:
            self._state.published_at[job_id] = None
        return len(pending)

    async def prune_finished(self, older_than: float, limit: int) -> int:
        cutoff = self._clock.now() - timedelta(seconds=older_than)
        doomed = sorted(
            (
                job
                for job in self._state.jobs.values()
                if job.state in (SUCCEEDED, CANCELLED)
                and job.finished_at is not None
                and job.finished_at < cutoff
            ),
            key=lambda job: (job.created_at, job.id),
        )[:limit]
        for job in doomed:
            del self._state.jobs[job.id]
            self._state.published_at.pop(job.id, None)
            if job.idempotency_key is not None:
                self._state.by_idempotency_key.pop(job.idempotency_key, None)
        return len(doomed)

    async def stats(self) -> list[QueueStats]:
        per_queue: dict[str, dict[JobState, int]] = {}
        for job in self._state.jobs.values():
            counts = per_queue.setdefault(job.queue, dict.fromkeys(JobState, 0))
            counts[job.state] += 1
        return [QueueStats(queue, counts) for queue, counts in sorted(per_queue.items())]

    async def ping(self) -> None:
        return None

    def _get(self, job_id: UUID) -> Job:
        job = self._state.jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    @staticmethod
    def _oldest_due(jobs: Iterable[Job], now: datetime, limit: int) -> list[Job]:
        due = [job for job in jobs if job.next_run_at <= now]
        return sorted(due, key=lambda job: (job.next_run_at, job.id))[:limit]

    def _put(self, job: Job, **changes: object) -> Job:
        updated = dataclasses.replace(job, **changes)  # type: ignore[arg-type]
        self._state.jobs[job.id] = updated
        return updated

    def _requeue(self, job: Job, now: datetime, **changes: object) -> Job:
        self._state.published_at[job.id] = now
        return self._put(
            job,
            state=PENDING,
            next_run_at=now,
            updated_at=now,
            finished_at=None,
            reason=None,
            **_NO_LEASE,
            **changes,
        )

    def _dead_letter(self, job: Job, reason: str, error: str | None, now: datetime) -> Job:
        dead = self._put(
            job,
            state=DLQ,
            reason=reason,
            last_error=error,
            finished_at=now,
            updated_at=now,
            **_NO_LEASE,
        )
        self._state.dead_letters[job.id] = DeadLetter(
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


_NO_LEASE: dict[str, object] = {"lease_owner": None, "lease_token": None, "lease_expires_at": None}


def _with_error(
    job: Job, now: datetime, error: str, traceback: str | None
) -> tuple[AttemptError, ...]:
    """The job's errors with its current attempt's failure added, the oldest dropped."""
    failure = AttemptError(attempt=job.attempt_count, at=now, error=error, traceback=traceback)
    return (*job.errors, failure)[-MAX_ATTEMPT_ERRORS:]


def _without_errors(job: Job) -> Job:
    """Lists, claims and enqueues leave errors out, as the Postgres store does (they are
    heavy); reads and moves of one job carry them."""
    return dataclasses.replace(job, errors=()) if job.errors else job


def _hint(job: Job) -> ReadyHint:
    return ReadyHint(job.queue, job.id, job.traceparent)


def _is_stale(published_at: datetime | None, stale_before: datetime) -> bool:
    return published_at is None or published_at < stale_before


class InMemoryDeadLetterStore:
    def __init__(self, state: InMemoryState) -> None:
        self._state = state

    async def find(self, page: Page) -> tuple[list[DeadLetter], int]:
        ordered = sorted(
            self._state.dead_letters.values(),
            key=lambda entry: (entry.failed_at, entry.job_id),
            reverse=True,
        )
        return ordered[page.offset : page.offset + page.limit], len(ordered)

    async def get(self, job_id: UUID) -> DeadLetter | None:
        return self._state.dead_letters.get(job_id)

    async def count(self) -> int:
        return len(self._state.dead_letters)
