"""Publishing a worker's metrics: batches from its recorder to the cluster-wide store."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from taskforge.application.metrics import JobMetrics, JobMetricsRecorder, WorkerLoad
from taskforge.application.ports import MetricsStore
from taskforge.application.timing import settle_within, sleep_unless

log = logging.getLogger("taskforge.metrics")

STOP_TIMEOUT = 2.0
"""Seconds the publisher's stop (the flush under way, the last flush, leaving the store) may
take in all: a store that does not answer (a frozen Redis, whose client's timeouts and
retries add up to tens of seconds per command) must not hold up the process's exit."""


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
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self._recorder = recorder
        self._store = store
        self._worker_id = worker_id
        self._interval = interval
        self._ttl = ttl if ttl is not None else 3 * interval
        self._stop_timeout = stop_timeout
        self._sequence = 0
        self._unsent: tuple[int, JobMetrics] | None = None
        self._held = JobMetrics()
        """Recorded counts not yet given a number (while an older write waits)."""
        self._failing = False

    async def run(self, stop: asyncio.Event) -> None:
        """Flush now and every interval until `stop` is set, then flush a last time and
        leave the store's list of live workers: once `stop` is set, all of that (with the
        flush under way) within `stop_timeout` seconds. Past it the publisher gives up,
        logging what it skipped: counts not yet published are lost with the process, and
        its load expires from the store after the TTL."""
        periodic = asyncio.create_task(self._flush_until(stop), name="metrics-flushes")
        try:
            await stop.wait()
            stopping = _Stopping()
            [outcome] = await settle_within(self._stop_timeout, [self._finish(periodic, stopping)])
        finally:
            periodic.cancel()
        if isinstance(outcome, TimeoutError):
            self._gave_up(stopping)
        elif isinstance(outcome, BaseException):
            raise outcome

    async def _flush_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.flush()
            await sleep_unless(stop, self._interval)

    async def _finish(self, periodic: asyncio.Task[None], stopping: _Stopping) -> None:
        await periodic  # the flush under way when `stop` came, if any
        if not await self.flush():
            log.warning("the last metrics of this worker were not published: they are lost")
        stopping.published = True
        await self.leave()

    def _gave_up(self, stopping: _Stopping) -> None:
        expires = f"its load expires from the store within {self._ttl:g}s"
        if stopping.published:
            log.warning(
                "gave up removing this worker from the metrics store, which did not answer "
                "within %gs of the stop; %s",
                self._stop_timeout,
                expires,
            )
            return
        log.warning(
            "gave up publishing the last metrics of this worker: the metrics store did not "
            "answer within %gs of the stop; the counts not yet published are lost, and %s",
            self._stop_timeout,
            expires,
        )

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
            log.warning(
                "could not remove this worker from the metrics store (its load expires within "
                "%gs): %s",
                self._ttl,
                exc,
            )


@dataclass(slots=True)
class _Stopping:
    """How far the publisher's stop got."""

    published: bool = False
    """The last flush was written, or failed with an error: only leaving the store is left."""
