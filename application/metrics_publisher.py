"""Publishing a worker's metrics: batches from its recorder to the cluster-wide store."""

from __future__ import annotations

import asyncio
import logging

from taskforge.application.metrics import JobMetrics, JobMetricsRecorder, WorkerLoad
from taskforge.application.ports import MetricsStore
from taskforge.application.timing import sleep_unless

log = logging.getLogger("taskforge.metrics")


class MetricsPublisher:
    """Flushes a worker's recorder to the MetricsStore every `interval` seconds, one write
    each, numbered from 1. A failed write is resent unchanged, under its number, before
    anything newer (which waits, merged, for the next number), so an outage delays counts
    but loses none (unless the process ends during it) and a write that was applied
    although it failed is not counted twice. The worker's load is kept by the store for
    `ttl` seconds: a worker that stops flushing drops out of utilisation."""

    def __init__(
        self,
        recorder: JobMetricsRecorder,
        store: MetricsStore,
        *,
        worker_id: str,
        interval: float,
        ttl: float | None = None,
    ) -> None:
        self._recorder = recorder
        self._store = store
        self._worker_id = worker_id
        self._interval = interval
        self._ttl = ttl if ttl is not None else 3 * interval
        self._sequence = 0
        self._unsent: tuple[int, JobMetrics] | None = None
        self._held = JobMetrics()
        """Recorded counts not yet given a number (while an older write waits)."""
        self._failing = False

    async def run(self, stop: asyncio.Event) -> None:
        """Flush now and every interval until `stop` is set, then flush a last time and
        leave the store's list of live workers."""
        while not stop.is_set():
            await self.flush()
            await sleep_unless(stop, self._interval)
        await self.flush()
        await self.leave()

    async def flush(self) -> bool:
        """Publish everything not yet published, with the current load: the write that
        failed last time (if any), then what was recorded since. False when the store
        failed."""
        batch, load = self._recorder.take()
        self._held.add(batch)
        current = WorkerLoad(self._worker_id, load)
        if self._unsent is not None and not await self._send(*self._unsent, current):
            return False
        self._sequence += 1
        self._unsent = (self._sequence, self._held)
        self._held = JobMetrics()
        return await self._send(*self._unsent, current)

    async def _send(self, sequence: int, batch: JobMetrics, load: WorkerLoad) -> bool:
        try:
            await self._store.add(batch, load, self._ttl, sequence=sequence)
        except Exception as exc:  # noqa: BLE001 - resent by the next flush; the worker goes on
            if not self._failing:
                log.warning("could not publish metrics, will retry: %s", exc)
            self._failing = True
            return False
        self._unsent = None
        if self._failing:
            log.info("publishing metrics again")
        self._failing = False
        return True

    async def leave(self) -> None:
        try:
            await self._store.remove_worker(self._worker_id)
        except Exception as exc:  # noqa: BLE001 - its load expires with the TTL anyway
            log.warning("could not remove this worker from the metrics store: %s", exc)
