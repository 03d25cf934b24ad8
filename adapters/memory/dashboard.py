"""The dashboard's reads in memory: job counts per queue (always exact) and dead letters
grouped by error shape."""

from __future__ import annotations

from taskforge.adapters.memory.state import InMemoryView
from taskforge.domain.dashboard import (
    COUNT_COLUMNS,
    DeadLetterGroup,
    QueueJobCounts,
    error_shape,
)
from taskforge.domain.job import DeadLetter
from taskforge.domain.states import JobState

PENDING, RUNNING, SUCCEEDED, FAILED, DLQ, CANCELLED = JobState

_COLUMN_OF_STATE = {
    RUNNING: "running",
    FAILED: "failed",
    DLQ: "dlq",
    SUCCEEDED: "succeeded",
    CANCELLED: "cancelled",
}


class InMemoryJobCounts(InMemoryView):
    async def per_queue(self, exact_up_to: int) -> list[QueueJobCounts]:
        now = self._state.clock.now()
        per_queue: dict[str, dict[str, int]] = {}
        for job in self._state.jobs.values():
            counts = per_queue.setdefault(job.queue, dict.fromkeys(COUNT_COLUMNS, 0))
            if job.state is PENDING:
                counts["ready" if job.next_run_at <= now else "delayed"] += 1
            else:
                counts[_COLUMN_OF_STATE[job.state]] += 1
        return [
            QueueJobCounts(queue=queue, counts=counts)
            for queue, counts in sorted(per_queue.items())
        ]


def shape_of(entry: DeadLetter) -> str:
    return error_shape(entry.last_error if entry.last_error is not None else entry.reason)


class InMemoryDeadLetterGroups(InMemoryView):
    async def groups(self, limit: int) -> list[DeadLetterGroup]:
        grouped: dict[tuple[str, str], list[DeadLetter]] = {}
        for entry in self._state.dead_letters.values():
            grouped.setdefault((entry.job_type, shape_of(entry)), []).append(entry)
        found = [
            DeadLetterGroup(
                job_type=job_type,
                error_shape=shape,
                count=len(entries),
                first_failed_at=min(entry.failed_at for entry in entries),
                last_failed_at=max(entry.failed_at for entry in entries),
            )
            for (job_type, shape), entries in grouped.items()
        ]
        found.sort(key=lambda group: (group.last_failed_at, group.job_type, group.error_shape))
        return found[::-1][:limit]

    async def members(self, job_type: str, error_shape: str, limit: int) -> list[DeadLetter]:
        entries = [
            entry
            for entry in self._state.dead_letters.values()
            if entry.job_type == job_type and shape_of(entry) == error_shape
        ]
        entries.sort(key=lambda entry: (entry.failed_at, entry.job_id), reverse=True)
        return entries[:limit]

    async def purge(self, job_type: str, error_shape: str, limit: int) -> int:
        state = self._state
        doomed = await self.members(job_type, error_shape, limit)
        for entry in doomed:
            state.forget(state.jobs[entry.job_id])
        return len(doomed)
