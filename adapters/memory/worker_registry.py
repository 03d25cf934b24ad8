"""WorkerRegistry in memory: the workers of one process (`taskforge dev`, the tests)."""

from __future__ import annotations

from datetime import datetime

from taskforge.domain.workers import WorkerStatus, stale_before


class InMemoryWorkerRegistry:
    def __init__(self) -> None:
        self._workers: dict[str, WorkerStatus] = {}

    async def report(self, status: WorkerStatus) -> None:
        cutoff = stale_before(status.heartbeat_at)
        for worker_id, known in list(self._workers.items()):
            if known.heartbeat_at < cutoff:
                del self._workers[worker_id]
        self._workers[status.worker_id] = status

    async def remove(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    async def list_live(self, *, now: datetime) -> list[WorkerStatus]:
        return sorted(
            (status for status in self._workers.values() if status.is_live(now)),
            key=lambda status: status.worker_id,
        )
