"""The cluster's job metrics in this process: what `taskforge dev` and the unit tests use."""

from __future__ import annotations

import time
from collections.abc import Callable

from taskforge.application.metrics import ClusterMetrics, JobMetrics, WorkerLoad


class InMemoryMetricsStore:
    """The `MetricsStore` port in memory; a worker's load expires `ttl` seconds after its
    last write, by the injected monotonic clock."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._totals = JobMetrics()
        self._workers: dict[str, tuple[float, WorkerLoad]] = {}
        self._applied: dict[str, int] = {}

    async def add(self, batch: JobMetrics, load: WorkerLoad, ttl: float, *, sequence: int) -> None:
        self._workers[load.worker_id] = (self._monotonic() + ttl, load)
        if sequence <= self._applied.get(load.worker_id, 0):
            return
        self._applied[load.worker_id] = sequence
        self._totals.add(batch)

    async def remove_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)
        self._applied.pop(worker_id, None)

    async def read(self) -> ClusterMetrics:
        now = self._monotonic()
        for worker_id, (expires_at, _) in list(self._workers.items()):
            if expires_at <= now:
                del self._workers[worker_id]
        workers = [load for _, load in sorted(self._workers.values(), key=lambda e: e[1].worker_id)]
        return ClusterMetrics(self._totals.copy(), workers)
