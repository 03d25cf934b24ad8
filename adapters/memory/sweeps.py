"""Sweeps in memory: the scheduler's passes over due, expired and finished jobs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from uuid import UUID

from taskforge.adapters.memory.state import (
    InMemoryView,
    first_to_dispatch,
    oldest_due,
    with_error,
)
from taskforge.application.ports import STALE_LOOKOUT
from taskforge.domain.job import Job, ReadyHint, ReapedDeadLetter, dispatch_order
from taskforge.domain.outcome import EXHAUSTED_REASON, LEASE_EXPIRED_ERROR
from taskforge.domain.states import JobState

PENDING, RUNNING, SUCCEEDED, FAILED, DLQ, CANCELLED = JobState


class InMemorySweeps(InMemoryView):
    async def promote_due(self, limit: int) -> list[ReadyHint]:
        state = self._state
        now = state.clock.now()
        due = oldest_due((job for job in state.jobs.values() if job.state is FAILED), now, limit)
        return [
            ReadyHint.of(state.requeue(job, now, retry_count=job.retry_count + 1)) for job in due
        ]

    async def reap_expired(self, limit: int) -> tuple[list[ReadyHint], list[ReapedDeadLetter]]:
        state = self._state
        now = state.clock.now()
        expired = sorted(
            (
                job
                for job in state.jobs.values()
                if job.state is RUNNING
                and job.lease_expires_at is not None
                and job.lease_expires_at < now
            ),
            key=lambda job: (job.lease_expires_at, job.id),
        )[:limit]
        hints: list[ReadyHint] = []
        dead: list[ReapedDeadLetter] = []
        for job in expired:
            job = state.put(job, errors=with_error(job, now, LEASE_EXPIRED_ERROR, None))
            if job.policy.exhausted_by(job.attempt_count):
                state.dead_letter(job, EXHAUSTED_REASON, LEASE_EXPIRED_ERROR, now)
                dead.append(
                    ReapedDeadLetter(
                        job_id=job.id,
                        queue=job.queue,
                        job_type=job.job_type,
                        reason=EXHAUSTED_REASON,
                        last_error=LEASE_EXPIRED_ERROR,
                        traceparent=job.traceparent,
                    )
                )
            else:
                hints.append(ReadyHint.of(state.requeue(job, now, last_error=LEASE_EXPIRED_ERROR)))
        return hints, dead

    async def find_unpublished(
        self, covered: Mapping[str, int], limit: int, older_than: float
    ) -> list[ReadyHint]:
        if limit <= 0:
            return []
        state = self._state
        now = state.clock.now()
        stale_before = now - timedelta(seconds=older_than)
        pending: dict[str, list[Job]] = {queue: [] for queue in covered}
        for job in state.jobs.values():
            if job.state is PENDING and job.queue in pending:
                pending[job.queue].append(job)
        chosen: list[Job] = []
        for queue, hints in covered.items():
            if queue in state.paused_queues:
                continue
            due = first_to_dispatch(pending[queue], now, len(pending[queue]))
            stale = [job for job in due if _is_stale(state.published_at.get(job.id), stale_before)]
            oldest = {job.id for job in _oldest_of_each_priority(due)}
            if any(job.id in oldest for job in stale):
                chosen += stale[: max(len(due) - hints, 0)]
        chosen = sorted(chosen, key=dispatch_order)[:limit]
        for job in chosen:
            state.published_at[job.id] = now
        return [ReadyHint.of(job) for job in chosen]

    async def find_never_published(self, limit: int) -> list[ReadyHint]:
        state = self._state
        now = state.clock.now()
        candidates = (
            job
            for job in state.jobs.values()
            if job.state is PENDING
            and job.queue not in state.paused_queues
            and state.published_at.get(job.id) is None
        )
        due = first_to_dispatch(candidates, now, limit)
        for job in due:
            state.published_at[job.id] = now
        return [ReadyHint.of(job) for job in due]

    async def count_pending(self) -> dict[str, int]:
        state = self._state
        pending = Counter(
            job.queue
            for job in state.jobs.values()
            if job.state is PENDING and job.queue not in state.paused_queues
        )
        return dict(pending)

    async def mark_unpublished(self, job_ids: Sequence[UUID] | None = None) -> int:
        state = self._state
        chosen = state.jobs if job_ids is None else dict.fromkeys(job_ids)
        pending = [
            job_id
            for job_id in chosen
            if (job := state.jobs.get(job_id)) is not None and job.state is PENDING
        ]
        for job_id in pending:
            state.published_at[job_id] = None
        return len(pending)

    async def prune_finished(self, older_than: float, limit: int) -> int:
        state = self._state
        cutoff = state.clock.now() - timedelta(seconds=older_than)
        doomed = sorted(
            (
                job
                for job in state.jobs.values()
                if job.state in (SUCCEEDED, CANCELLED)
                and job.finished_at is not None
                and job.finished_at < cutoff
            ),
            key=lambda job: (job.finished_at, job.id),
        )[:limit]
        for job in doomed:
            state.forget(job)
        return len(doomed)

    async def fold_job_counts(self) -> int:
        return 0  # counts are read from the jobs themselves


def _oldest_of_each_priority(due: list[Job]) -> list[Job]:
    """Of jobs in dispatch order, each priority's first STALE_LOOKOUT."""
    seen: Counter[int] = Counter()
    oldest = []
    for job in due:
        seen[job.priority] += 1
        if seen[job.priority] <= STALE_LOOKOUT:
            oldest.append(job)
    return oldest


def _is_stale(published_at: datetime | None, stale_before: datetime) -> bool:
    return published_at is None or published_at < stale_before
