"""OperatorMoves in memory: cancel, dead-letter, retry and replay, checked against the
domain's transition table."""

from __future__ import annotations

from uuid import UUID

from taskforge.adapters.memory.state import NO_LEASE, InMemoryView
from taskforge.domain.errors import DeadLetterNotFound
from taskforge.domain.job import Job
from taskforge.domain.outcome import MANUAL_DLQ_REASON
from taskforge.domain.states import JobState, ensure_retry_now, ensure_transition

PENDING, RUNNING, SUCCEEDED, FAILED, DLQ, CANCELLED = JobState


STARTED_OVER: dict[str, object] = {
    "attempt_count": 0,
    "retry_count": 0,
    "snoozes": 0,
    "hand_backs": 0,
    "unknown_type_since": None,
}
"""A replayed job's execution counts, as for a new job."""


class InMemoryOperatorMoves(InMemoryView):
    async def cancel(self, job_id: UUID, reason: str | None) -> Job:
        job = self._state.existing(job_id)
        ensure_transition(job.state, CANCELLED, job_id)
        now = self._state.clock.now()
        return self._state.put(
            job, state=CANCELLED, reason=reason, finished_at=now, updated_at=now, **NO_LEASE
        )

    async def dead_letter(self, job_id: UUID, reason: str | None) -> Job:
        job = self._state.existing(job_id)
        ensure_transition(job.state, DLQ, job_id)
        return self._state.dead_letter(
            job, reason or MANUAL_DLQ_REASON, job.last_error, self._state.clock.now()
        )

    async def retry_now(self, job_id: UUID) -> Job:
        job = self._state.existing(job_id)
        ensure_retry_now(job.state, job_id)
        now = self._state.clock.now()
        if job.state is FAILED:
            return self._state.requeue(job, now)
        requeued = self._state.requeue(job, now, **STARTED_OVER)
        self._state.dead_letters.pop(job_id, None)
        return requeued

    async def replay(self, job_id: UUID) -> Job:
        if job_id not in self._state.dead_letters:
            raise DeadLetterNotFound(job_id)
        job = self._state.existing(job_id)
        ensure_transition(job.state, PENDING, job_id)
        now = self._state.clock.now()
        requeued = self._state.requeue(job, now, **STARTED_OVER)
        del self._state.dead_letters[job_id]
        return requeued
