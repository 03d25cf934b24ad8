"""Use cases on the running workers, as the WorkerRegistry knows them."""

from __future__ import annotations

from taskforge.application.ports import Clock, WorkerRegistry
from taskforge.domain.workers import WorkerStatus


class ListWorkers:
    """The live workers (reported within WORKER_STALE_AFTER seconds), by worker id."""

    def __init__(self, workers: WorkerRegistry, clock: Clock) -> None:
        self._workers = workers
        self._clock = clock

    async def __call__(self) -> list[WorkerStatus]:
        return await self._workers.list_live(now=self._clock.now())
