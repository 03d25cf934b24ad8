"""Use cases on stored jobs and dead letters: reads, operator moves and stats. One class
each, built from ports, one public call. Enqueueing lives in `enqueue`."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from taskforge.application.hints import HintDispatcher
from taskforge.application.ports import (
    DeadLetterStore,
    JobStore,
    ListFilter,
    OperatorMoves,
    ReadyQueue,
)
from taskforge.domain.errors import DeadLetterNotFound, JobNotFound
from taskforge.domain.job import DeadLetter, Job, QueueStats
from taskforge.domain.states import JobState
from taskforge.domain.validation import Page


class GetJob:
    def __init__(self, jobs: JobStore) -> None:
        self._jobs = jobs

    async def __call__(self, job_id: UUID) -> Job:
        job = await self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job


class ListJobs:
    def __init__(self, jobs: JobStore) -> None:
        self._jobs = jobs

    async def __call__(self, where: ListFilter, page: Page) -> tuple[list[Job], int]:
        return await self._jobs.find(where, page)


class CancelJob:
    def __init__(self, moves: OperatorMoves) -> None:
        self._moves = moves

    async def __call__(self, job_id: UUID, reason: str | None) -> Job:
        return await self._moves.cancel(job_id, reason)


class DeadLetterJob:
    def __init__(self, moves: OperatorMoves) -> None:
        self._moves = moves

    async def __call__(self, job_id: UUID, reason: str | None) -> Job:
        return await self._moves.dead_letter(job_id, reason)


class RetryJobNow:
    """Answers once the move is committed; the job's hint follows in the background."""

    def __init__(self, moves: OperatorMoves, hints: HintDispatcher) -> None:
        self._moves = moves
        self._hints = hints

    async def __call__(self, job_id: UUID) -> Job:
        job = await self._moves.retry_now(job_id)
        self._hints.send([job])
        return job


class ReplayDeadLetter:
    """Answers once the move is committed; the job's hint follows in the background."""

    def __init__(self, moves: OperatorMoves, hints: HintDispatcher) -> None:
        self._moves = moves
        self._hints = hints

    async def __call__(self, job_id: UUID) -> Job:
        job = await self._moves.replay(job_id)
        self._hints.send([job])
        return job


class ListDeadLetters:
    def __init__(self, dead_letters: DeadLetterStore) -> None:
        self._dead_letters = dead_letters

    async def __call__(self, page: Page) -> tuple[list[DeadLetter], int]:
        return await self._dead_letters.find(page)


class GetDeadLetter:
    def __init__(self, dead_letters: DeadLetterStore) -> None:
        self._dead_letters = dead_letters

    async def __call__(self, job_id: UUID) -> DeadLetter:
        entry = await self._dead_letters.get(job_id)
        if entry is None:
            raise DeadLetterNotFound(job_id)
        return entry


@dataclass(frozen=True, slots=True)
class QueueOverview:
    queue: str
    depth: int
    """Hints waiting in the ready queue (may include stale or duplicate hints)."""
    counts: dict[JobState, int]


@dataclass(frozen=True, slots=True)
class Stats:
    queues: list[QueueOverview]
    totals: dict[JobState, int]
    dead_letters: int


class GetStats:
    def __init__(
        self,
        jobs: JobStore,
        dead_letters: DeadLetterStore,
        ready_queue: ReadyQueue,
        default_queue: str,
    ) -> None:
        self._jobs = jobs
        self._dead_letters = dead_letters
        self._ready_queue = ready_queue
        self._default_queue = default_queue

    async def __call__(self) -> Stats:
        per_queue = {entry.queue: entry for entry in await self._jobs.stats()}
        per_queue.setdefault(
            self._default_queue, QueueStats(self._default_queue, dict.fromkeys(JobState, 0))
        )
        names = sorted(per_queue)
        depths = await self._ready_queue.depth(names)
        totals = dict.fromkeys(JobState, 0)
        overviews = []
        for name in names:
            counts = per_queue[name].counts
            for state, count in counts.items():
                totals[state] += count
            overviews.append(QueueOverview(name, depths.get(name, 0), counts))
        return Stats(overviews, totals, await self._dead_letters.count())
