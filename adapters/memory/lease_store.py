"""LeaseStore in memory: claims, heartbeats, settlements and hand-backs, fenced by the
lease token as in Postgres."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from uuid import UUID

from taskforge.adapters.jsonb import stored_json
from taskforge.adapters.memory.state import (
    NO_LEASE,
    InMemoryView,
    first_to_dispatch,
    with_error,
    without_details,
)
from taskforge.domain.job import Job, Lease
from taskforge.domain.outcome import (
    DeadLettered,
    HandedBack,
    RetryLater,
    Settlement,
    Snoozed,
    Succeeded,
)
from taskforge.domain.states import JobState

PENDING, RUNNING, SUCCEEDED, FAILED, DLQ, CANCELLED = JobState


class InMemoryLeaseStore(InMemoryView):
    async def claim(self, job_ids: Sequence[UUID], owner: str) -> list[Job]:
        now = self._state.clock.now()
        claimed = []
        for job_id in dict.fromkeys(job_ids):
            job = self._state.jobs.get(job_id)
            if (
                job is not None
                and job.state is PENDING
                and job.next_run_at <= now
                and job.queue not in self._state.paused_queues
            ):
                claimed.append(self._claim(job, owner, now))
        return claimed

    async def claim_due(self, queues: Sequence[str], limit: int, owner: str) -> list[Job]:
        now = self._state.clock.now()
        queues = [queue for queue in queues if queue not in self._state.paused_queues]
        pending = (
            job for job in self._state.jobs.values() if job.queue in queues and job.state is PENDING
        )
        return [self._claim(job, owner, now) for job in first_to_dispatch(pending, now, limit)]

    def _claim(self, job: Job, owner: str, now: datetime) -> Job:
        claimed = self._state.put(
            job,
            state=RUNNING,
            attempt_count=job.attempt_count + 1,
            lease_owner=owner,
            lease_token=self._state.ids.new_id(),
            lease_expires_at=now + timedelta(seconds=job.visibility_timeout),
            started_at=now,
            finished_at=None,
            updated_at=now,
        )
        return without_details(claimed)

    def _held(self, lease: Lease) -> Job | None:
        job = self._state.jobs.get(lease.job_id)
        if job is None or job.state is not RUNNING or job.lease_token != lease.token:
            return None
        return job

    async def heartbeat(self, leases: Sequence[Lease]) -> set[UUID]:
        now = self._state.clock.now()
        held = set()
        for lease in leases:
            job = self._held(lease)
            if job is not None:
                expires = now + timedelta(seconds=job.visibility_timeout)
                self._state.put(job, lease_expires_at=expires, updated_at=now)
                held.add(job.id)
        return held

    async def settle(self, settlements: Sequence[Settlement]) -> set[UUID]:
        state = self._state
        now = state.clock.now()
        applied = set()
        for settlement in settlements:
            job = self._held(settlement.lease)
            if job is None:
                continue
            match settlement:
                case Succeeded(result=result):
                    state.put(
                        job,
                        state=SUCCEEDED,
                        result=None if result is None else stored_json(json.loads(result)),
                        finished_at=now,
                        updated_at=now,
                        **NO_LEASE,
                    )
                case RetryLater(error=error, delay=delay, traceback=traceback):
                    state.put(
                        job,
                        state=FAILED,
                        last_error=error,
                        errors=with_error(job, now, error, traceback),
                        next_run_at=now + delay,
                        updated_at=now,
                        **NO_LEASE,
                    )
                case DeadLettered(error=error, reason=reason, traceback=traceback):
                    job = state.put(job, errors=with_error(job, now, error, traceback))
                    state.dead_letter(job, reason, error, now)
                case Snoozed(delay=delay):
                    # A worker with a handler ran it: the type is known again (as Postgres).
                    self._release_until(
                        job, now, delay, snoozes=job.snoozes + 1, unknown_type_since=None
                    )
                case HandedBack(delay=delay, unknown_type_since=since):
                    self._release_until(
                        job, now, delay, hand_backs=job.hand_backs + 1, unknown_type_since=since
                    )
            applied.add(job.id)
        return applied

    async def release(self, leases: Sequence[Lease]) -> set[UUID]:
        now = self._state.clock.now()
        released = set()
        for lease in leases:
            job = self._held(lease)
            if job is not None:
                self._state.requeue(
                    job, now, attempt_count=job.attempt_count - 1, hand_backs=job.hand_backs + 1
                )
                released.add(job.id)
        return released

    def _release_until(self, job: Job, now: datetime, delay: timedelta, **changes: object) -> None:
        """Back to PENDING without counting the attempt, due after `delay`, its hint not
        published yet (the scheduler publishes it once due)."""
        released = self._state.requeue(job, now, attempt_count=job.attempt_count - 1, **changes)
        self._state.put(released, next_run_at=now + delay)
        self._state.published_at[job.id] = None
