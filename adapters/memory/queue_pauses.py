"""QueuePauses in memory: the paused queues of one InMemoryState, which its claims and
sweeps consult."""

from __future__ import annotations

from datetime import datetime

from taskforge.adapters.memory.state import InMemoryView, first_to_dispatch, without_details
from taskforge.domain.job import Job
from taskforge.domain.states import JobState


class InMemoryQueuePauses(InMemoryView):
    async def pause(self, queue: str) -> datetime:
        return self._state.paused_queues.setdefault(queue, self._state.clock.now())

    async def resume(self, queue: str, limit: int) -> list[Job]:
        state = self._state
        if state.paused_queues.pop(queue, None) is None:
            return []
        now = state.clock.now()
        pending = (
            job
            for job in state.jobs.values()
            if job.queue == queue and job.state is JobState.PENDING
        )
        due = first_to_dispatch(pending, now, limit)
        for job in due:
            state.published_at[job.id] = now
        return [without_details(job) for job in due]

    async def paused(self) -> dict[str, datetime]:
        return dict(self._state.paused_queues)
