"""Use cases on queues as a whole: pausing, resuming, and listing them with their counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from taskforge.application.hints import HintDispatcher
from taskforge.application.ports import JobStore, QueuePauses
from taskforge.domain.states import JobState

RESUME_HINTS = 10_000
"""Hints a resume sends at once, for the first due jobs in claim order (by priority, then
longest due); the republish sweep sends the rest's (within HintDispatcher.MAX_PENDING, so a
resume cannot crowd out other hints)."""


class PauseQueue:
    """Stop claims of the queue's jobs; idempotent. Returns when it was paused."""

    def __init__(self, pauses: QueuePauses) -> None:
        self._pauses = pauses

    async def __call__(self, queue: str) -> datetime:
        return await self._pauses.pause(queue)


class ResumeQueue:
    """Claims of the queue's jobs start again at once: the hints of its due jobs are sent
    right away rather than by the next republish sweep. Idempotent."""

    def __init__(self, pauses: QueuePauses, hints: HintDispatcher) -> None:
        self._pauses = pauses
        self._hints = hints

    async def __call__(self, queue: str) -> None:
        self._hints.send(await self._pauses.resume(queue, RESUME_HINTS))


@dataclass(frozen=True, slots=True)
class QueueSummary:
    queue: str
    counts: dict[JobState, int]
    """Jobs per state; every state is present, zero included."""
    paused_at: datetime | None
    """When the queue was paused; None while it runs."""

    @property
    def paused(self) -> bool:
        return self.paused_at is not None


class ListQueues:
    """Every queue that has jobs or is paused, plus the default queue, by name."""

    def __init__(self, jobs: JobStore, pauses: QueuePauses, default_queue: str) -> None:
        self._jobs = jobs
        self._pauses = pauses
        self._default_queue = default_queue

    async def __call__(self) -> list[QueueSummary]:
        counts = {entry.queue: entry.counts for entry in await self._jobs.stats()}
        paused = await self._pauses.paused()
        names = sorted({*counts, *paused, self._default_queue})
        return [
            QueueSummary(name, counts.get(name) or dict.fromkeys(JobState, 0), paused.get(name))
            for name in names
        ]
