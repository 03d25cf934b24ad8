"""Use cases of the dashboard that the REST API has no counterpart for: the overview's
counts and charts, and dead letters handled by group."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from taskforge.application.jobs import ReplayDeadLetter
from taskforge.application.ports import (
    Clock,
    DeadLetterGroups,
    JobCounts,
    MetricsStore,
    QueuePauses,
    WorkerRegistry,
)
from taskforge.domain.dashboard import DeadLetterGroup, QueueJobCounts
from taskforge.domain.errors import DeadLetterNotFound, InvalidTransition, JobNotFound
from taskforge.domain.job import DeadLetter
from taskforge.domain.workers import WorkerStatus

EXACT_COUNT_LIMIT = 10_000
"""Counts up to this are exact; above it a store may estimate (see JobCounts)."""
CHART_MINUTES = 60
GROUP_LIMIT = 200
"""Dead-letter groups shown, the most recently failing first."""
GROUP_ACTION_LIMIT = 1_000
"""Jobs one replay or purge of a group moves; a bigger group takes several clicks."""


@dataclass(frozen=True, slots=True)
class MinuteOfWork:
    minute: datetime
    succeeded: float
    failed: float
    """Attempts that ended in a failure, retryable or terminal."""

    @property
    def failure_rate(self) -> float:
        finished = self.succeeded + self.failed
        return self.failed / finished if finished else 0.0


class ThroughputHistory:
    """Attempts finished per minute over the last CHART_MINUTES, from the cluster's metric
    totals sampled when the API starts and whenever the overview is read. When nobody looked
    for a while, the minutes in between share what happened evenly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._minutes: dict[datetime, MinuteOfWork] = {}
        self._last: tuple[datetime, int, int] | None = None
        self._first: datetime | None = None

    @property
    def started_at(self) -> datetime | None:
        """When the first sample was taken (None: not yet): the charts count from then."""
        return self._first

    def sample(self, now: datetime, succeeded_total: int, failed_total: int) -> list[MinuteOfWork]:
        """Record the totals at `now`; returns the minutes of the chart, oldest first."""
        minute = now.replace(second=0, microsecond=0)
        with self._lock:
            last = self._last
            self._last = (now, succeeded_total, failed_total)
            if self._first is None:
                self._first = now
            if last is not None and succeeded_total >= last[1] and failed_total >= last[2]:
                first = last[0].replace(second=0, microsecond=0)
                span = int((minute - first) / timedelta(minutes=1)) + 1
                share_ok = (succeeded_total - last[1]) / span
                share_failed = (failed_total - last[2]) / span
                for step in range(min(span, CHART_MINUTES)):
                    at = minute - timedelta(minutes=step)
                    seen = self._minutes.get(at, MinuteOfWork(at, 0.0, 0.0))
                    self._minutes[at] = MinuteOfWork(
                        at, seen.succeeded + share_ok, seen.failed + share_failed
                    )
            oldest = minute - timedelta(minutes=CHART_MINUTES - 1)
            for at in [at for at in self._minutes if at < oldest]:
                del self._minutes[at]
            return [
                self._minutes.get(at, MinuteOfWork(at, 0.0, 0.0))
                for at in (oldest + timedelta(minutes=step) for step in range(CHART_MINUTES))
            ]


@dataclass(frozen=True, slots=True)
class Overview:
    queues: list[QueueJobCounts]
    paused: dict[str, datetime]
    minutes: list[MinuteOfWork]
    charts_since: datetime | None
    """When the charts began counting (ThroughputHistory.started_at)."""
    workers: list[WorkerStatus]
    """The live workers, as they last reported (WorkerRegistry)."""
    at: datetime


class SampleThroughput:
    """The charts' minutes, with the cluster's totals read now. The API samples once when
    it starts, so that the charts count from then, not from the first view."""

    def __init__(self, metrics: MetricsStore, history: ThroughputHistory, clock: Clock) -> None:
        self._metrics = metrics
        self._history = history
        self._clock = clock

    async def __call__(self) -> list[MinuteOfWork]:
        cluster = await self._metrics.read()
        totals = cluster.totals.counts.values()
        return self._history.sample(
            self._clock.now(),
            sum(queue.success for queue in totals),
            sum(queue.failure for queue in totals),
        )


class GetOverview:
    def __init__(
        self,
        counts: JobCounts,
        pauses: QueuePauses,
        sample: SampleThroughput,
        history: ThroughputHistory,
        workers: WorkerRegistry,
        clock: Clock,
    ) -> None:
        self._counts = counts
        self._pauses = pauses
        self._sample = sample
        self._history = history
        self._workers = workers
        self._clock = clock

    async def __call__(self) -> Overview:
        queues = await self._counts.per_queue(EXACT_COUNT_LIMIT)
        paused = await self._pauses.paused()
        minutes = await self._sample()
        now = self._clock.now()
        live = await self._workers.list_live(now=now)
        return Overview(queues, paused, minutes, self._history.started_at, live, now)


class ListDeadLetterGroups:
    def __init__(self, groups: DeadLetterGroups) -> None:
        self._groups = groups

    async def __call__(self) -> list[DeadLetterGroup]:
        return await self._groups.groups(GROUP_LIMIT)


class ListDeadLetterGroupMembers:
    def __init__(self, groups: DeadLetterGroups) -> None:
        self._groups = groups

    async def __call__(self, job_type: str, error_shape: str, limit: int) -> list[DeadLetter]:
        return await self._groups.members(job_type, error_shape, limit)


class ReplayDeadLetterGroup:
    """Replays up to GROUP_ACTION_LIMIT of the group's dead letters, newest first; returns
    how many moved (one replayed meanwhile by someone else is skipped)."""

    def __init__(self, groups: DeadLetterGroups, replay: ReplayDeadLetter) -> None:
        self._groups = groups
        self._replay = replay

    async def __call__(self, job_type: str, error_shape: str) -> int:
        moved = 0
        for entry in await self._groups.members(job_type, error_shape, GROUP_ACTION_LIMIT):
            try:
                await self._replay(entry.job_id)
            except (DeadLetterNotFound, InvalidTransition, JobNotFound):
                continue
            moved += 1
        return moved


class PurgeDeadLetterGroup:
    """Deletes up to GROUP_ACTION_LIMIT of the group's dead-lettered jobs; returns how many."""

    def __init__(self, groups: DeadLetterGroups) -> None:
        self._groups = groups

    async def __call__(self, job_type: str, error_shape: str) -> int:
        return await self._groups.purge(job_type, error_shape, GROUP_ACTION_LIMIT)
