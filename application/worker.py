"""The worker: fetch hints, claim with leases, run handlers, heartbeat, settle (fenced).

One Worker per process. It runs up to `concurrency` jobs at once, fetches in batches sized
to its free slots, renews every lease it holds in one batched call, and settles in
batches. A job whose lease is lost (expired and reaped, cancelled, dead-lettered) is
interrupted and its result discarded: the store refuses writes that name a stale lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from uuid import UUID

from taskforge.application.handlers import HandlerRegistry, JobContext, TerminalError, invoke
from taskforge.application.metrics import UNREGISTERED_JOB_TYPE
from taskforge.application.ports import (
    AttributeValue,
    Clock,
    JobRepository,
    JobTracer,
    RandomSource,
    RateLimiter,
    ReadyQueue,
    WorkerMetrics,
)
from taskforge.application.timing import sleep_unless, wait_any
from taskforge.domain.job import Job, Lease, ReadyHint
from taskforge.domain.outcome import (
    DeadLettered,
    FailureKind,
    RetryLater,
    Settlement,
    Succeeded,
    decide_failure,
)

log = logging.getLogger("taskforge.worker")

MAX_ERROR_LENGTH = 4000

RUN_SPAN = "taskforge.job.run"
"""The span of one attempt, a child of the span that enqueued the job."""

_OUTCOMES: dict[type[Settlement], str] = {
    Succeeded: "succeeded",
    RetryLater: "retry",
    DeadLettered: "dead_lettered",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSettings:
    queues: tuple[str, ...]
    concurrency: int
    owner: str
    rate_limit_per_sec: float = 0.0
    """Per queue, shared by all workers through the RateLimiter; 0 disables it."""
    heartbeat: bool = True
    """Off: a job may run at most its visibility timeout, then it is interrupted."""
    poll_timeout: float = 1.0
    """Longest blocking pop; bounds how long shutdown waits for the fetch loop."""
    shutdown_grace: float = 30.0
    settle_batch_size: int = 200
    settle_linger: float = 0.002
    """Seconds a settlement may wait for others to share its write."""
    heartbeat_tick: float = 0.25


@dataclass(slots=True, kw_only=True)
class _Running:
    job: Job
    lease: Lease
    context: JobContext
    task: asyncio.Task[None] | None = None
    renew_at: float = 0.0
    lost: bool = False
    released: bool = False
    settling: bool = False


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    # Postgres text cannot hold NUL; an error message is free-form, so show it escaped.
    return text.replace("\x00", "\\x00")[:MAX_ERROR_LENGTH]


class _Settler:
    """Batches settlements into one store write, flushed by size or after a short linger."""

    def __init__(self, jobs: JobRepository, settings: WorkerSettings) -> None:
        self._jobs = jobs
        self._settings = settings
        self._pending: list[tuple[Settlement, asyncio.Future[bool]]] = []
        self._wakeup = asyncio.Event()
        self._closed = False

    async def submit(self, settlement: Settlement) -> bool:
        """True when the store applied it; False when the lease no longer owned the job."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((settlement, future))
        self._wakeup.set()
        return await future

    async def run(self) -> None:
        while not (self._closed and not self._pending):
            await self._wakeup.wait()
            self._wakeup.clear()
            if len(self._pending) < self._settings.settle_batch_size and not self._closed:
                await asyncio.sleep(self._settings.settle_linger)
            while self._pending:
                batch = self._pending[: self._settings.settle_batch_size]
                del self._pending[: len(batch)]
                await self._flush(batch)

    async def _flush(self, batch: list[tuple[Settlement, asyncio.Future[bool]]]) -> None:
        delay = 0.05
        for attempt in range(8):
            try:
                applied = await self._jobs.settle([settlement for settlement, _ in batch])
                break
            except Exception as exc:  # noqa: BLE001 - store outages are retried, then reaped
                log.warning("settle failed (attempt %d): %s", attempt + 1, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        else:
            # The leases will expire and the scheduler re-runs these jobs: at-least-once.
            applied = set()
        for settlement, future in batch:
            if not future.done():
                future.set_result(settlement.lease.job_id in applied)

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()


class Worker:
    def __init__(
        self,
        *,
        jobs: JobRepository,
        ready_queue: ReadyQueue,
        rate_limiter: RateLimiter,
        handlers: HandlerRegistry,
        metrics: WorkerMetrics,
        clock: Clock,
        random: RandomSource,
        settings: WorkerSettings,
        tracer: JobTracer | None = None,
    ) -> None:
        """`tracer` None: tracing is off and the worker does no tracing work at all."""
        if settings.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self._jobs = jobs
        self._ready_queue = ready_queue
        self._rate_limiter = rate_limiter
        self._handlers = handlers
        self._metrics = metrics
        self._clock = clock
        self._random = random
        self._settings = settings
        self._tracer = tracer
        self._running: dict[UUID, _Running] = {}
        """Jobs whose handler is running: each holds one of the `concurrency` slots."""
        self._settling: dict[UUID, _Running] = {}
        """Jobs whose handler returned and whose settlement waits for its batch write. They
        hold no slot (so fetching overlaps settling) but keep their lease renewed."""
        self._slot_freed = asyncio.Event()
        self._settled = asyncio.Event()
        self._max_settling = max(settings.settle_batch_size, 4 * settings.concurrency)
        self._settler = _Settler(jobs, settings)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def owner(self) -> str:
        """This worker's name in leases (and in the metrics store): host:pid:suffix."""
        return self._settings.owner

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then shut down gracefully: running jobs get the grace
        period to finish; the rest are interrupted and handed back without using an attempt."""
        for queue in self._settings.queues:
            self._report_utilization(queue)  # the queues served, idle, from the start
        settler = asyncio.create_task(self._settler.run(), name="taskforge-settler")
        # Without heartbeats each attempt's lease is its deadline: nothing to renew.
        heartbeat = (
            asyncio.create_task(self._heartbeat_loop(), name="taskforge-heartbeat")
            if self._settings.heartbeat
            else None
        )
        try:
            await self._fetch_loop(stop)
        finally:
            await self._drain()
            if heartbeat is not None:
                heartbeat.cancel()
            self._settler.close()
            await asyncio.gather(
                settler, *([heartbeat] if heartbeat else []), return_exceptions=True
            )

    async def _fetch_loop(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            if len(self._settling) >= self._max_settling:
                # The store is slower than the handlers: stop taking work until it catches up.
                self._settled.clear()
                await wait_any(self._settled, stop)
                continue
            free = self._settings.concurrency - len(self._running)
            if free <= 0:
                for queue in self._settings.queues:
                    self._metrics.concurrency_throttled(queue)
                self._slot_freed.clear()
                await wait_any(self._slot_freed, stop)
                continue
            try:
                await self._fetch(free, stop)
                backoff = 0.1
            except Exception as exc:  # noqa: BLE001 - the loop outlives store and queue outages
                log.warning("fetch failed, retrying in %.1fs: %s", backoff, exc)
                await sleep_unless(stop, backoff)
                backoff = min(backoff * 2, 5.0)

    async def _fetch(self, free: int, stop: asyncio.Event) -> None:
        hints = await self._ready_queue.pop(
            self._settings.queues, free, self._settings.poll_timeout
        )
        if not hints:
            return
        if stop.is_set():
            await self._ready_queue.push_front(hints)
            return
        if self._settings.rate_limit_per_sec > 0:
            hints = await self._apply_rate_limit(hints, stop)
        if not hints:
            return
        claimed = await self._jobs.claim(
            list(dict.fromkeys(h.job_id for h in hints)), self._settings.owner
        )
        for job in claimed:
            self._start(job)

    async def _apply_rate_limit(
        self, hints: list[ReadyHint], stop: asyncio.Event
    ) -> list[ReadyHint]:
        allowed: list[ReadyHint] = []
        deferred: list[ReadyHint] = []
        wait = 0.0
        by_queue: dict[str, list[ReadyHint]] = {}
        for hint in hints:
            by_queue.setdefault(hint.queue, []).append(hint)
        for queue, queue_hints in by_queue.items():
            grant = await self._rate_limiter.acquire(
                queue, self._settings.rate_limit_per_sec, len(queue_hints)
            )
            allowed += queue_hints[: grant.granted]
            rest = queue_hints[grant.granted :]
            if rest:
                deferred += rest
                wait = max(wait, grant.retry_after)
                self._metrics.rate_throttled(queue, len(rest))
        if deferred:
            await self._ready_queue.push_front(deferred)
            if not allowed:
                await sleep_unless(stop, max(wait, 0.001))
        return allowed

    def _start(self, job: Job) -> None:
        assert job.lease_token is not None, "a claimed job carries its lease"
        lease = Lease(job_id=job.id, token=job.lease_token)
        context = JobContext(
            job_id=job.id,
            queue=job.queue,
            job_type=job.job_type,
            attempt=job.attempt_count,
            max_attempts=job.policy.max_attempts,
            payload=job.payload,
            lease_token=lease.token,
            traceparent=job.traceparent,
        )
        running = _Running(
            job=job,
            lease=lease,
            context=context,
            renew_at=time.monotonic() + job.visibility_timeout / 3,
        )
        self._running[job.id] = running
        running.task = asyncio.create_task(self._execute(running), name=f"taskforge-job-{job.id}")
        self._report_utilization(job.queue)

    async def _execute(self, running: _Running) -> None:
        job = running.job
        started = time.monotonic()
        queued_since = job.next_run_at if job.next_run_at > job.created_at else job.created_at
        time_in_queue = max(0.0, (self._clock.now() - queued_since).total_seconds())
        self._metrics.job_started(job.queue, self._job_type_label(job), time_in_queue)
        settlement: Settlement | None = None
        try:
            if self._tracer is None:
                settlement = await self._attempt(running)
            else:
                settlement = await self._traced_attempt(running, self._tracer)
        except asyncio.CancelledError:
            if not (running.lost or running.released):
                raise
        finally:
            runtime = time.monotonic() - started
            del self._running[job.id]
            self._slot_freed.set()
            self._report_utilization(job.queue)
            if settlement is not None:
                await self._settle(running, settlement, runtime)

    async def _settle(self, running: _Running, settlement: Settlement, runtime: float) -> None:
        job = running.job
        running.settling = True
        self._settling[job.id] = running
        try:
            applied = await self._settler.submit(settlement)
        finally:
            del self._settling[job.id]
            self._settled.set()
        if not applied and not running.lost:  # a heartbeat may have counted it already
            self._lease_lost(running, "settle refused: the lease no longer owns the job")
        succeeded = applied and isinstance(settlement, Succeeded)
        self._metrics.job_finished(job.queue, self._job_type_label(job), runtime, succeeded)

    def _job_type_label(self, job: Job) -> str:
        """Metrics name job types that have a handler; any other is one label, so clients
        that invent job types cannot multiply the series."""
        return job.job_type if job.job_type in self._handlers else UNREGISTERED_JOB_TYPE

    async def _traced_attempt(self, running: _Running, tracer: JobTracer) -> Settlement:
        """The attempt in its own span, in the job's trace. The handler sees the span's
        traceparent, so what it calls can continue the trace."""
        job = running.job
        attributes: dict[str, AttributeValue] = {
            "job_type": job.job_type,
            "attempt": job.attempt_count,
        }
        with tracer.start_span(
            RUN_SPAN, job_id=job.id, queue=job.queue, parent=job.traceparent, attributes=attributes
        ) as span:
            running.context.traceparent = span.traceparent
            settlement = await self._attempt(running)
            span.set_attribute("outcome", _OUTCOMES[type(settlement)])
            if not isinstance(settlement, Succeeded):
                span.fail(settlement.error)
            return settlement

    async def _attempt(self, running: _Running) -> Settlement:
        job, lease = running.job, running.lease
        # Without heartbeats the lease is the attempt's deadline. Only this deadline's
        # expiry is reported as such: a TimeoutError the handler raises itself (its HTTP
        # client's, say) is an ordinary failure with its own message.
        deadline = None if self._settings.heartbeat else asyncio.timeout(job.visibility_timeout)
        try:
            handler = self._handlers.get(job.job_type)
            if deadline is None:
                await invoke(handler, running.context)
            else:
                async with deadline:
                    await invoke(handler, running.context)
            return Succeeded(lease=lease)
        except TerminalError as exc:
            return decide_failure(job, lease, _describe(exc), FailureKind.TERMINAL, self._random)
        except TimeoutError as exc:
            if deadline is None or not deadline.expired():
                return self._retryable(job, lease, exc)
            error = f"timed out after {job.visibility_timeout:g}s (visibility timeout)"
            return decide_failure(job, lease, error, FailureKind.RETRYABLE, self._random)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any handler error is a retryable failure
            return self._retryable(job, lease, exc)

    def _retryable(self, job: Job, lease: Lease, exc: Exception) -> Settlement:
        outcome = decide_failure(job, lease, _describe(exc), FailureKind.RETRYABLE, self._random)
        if isinstance(outcome, RetryLater):
            log.info(
                "job %s attempt %d failed, retry in %s", job.id, job.attempt_count, outcome.delay
            )
        return outcome

    def _lease_lost(self, running: _Running, why: str) -> None:
        self._metrics.lease_lost(running.job.queue)
        log.info("job %s: %s", running.job.id, why)

    def _interrupt(self, running: _Running) -> None:
        running.context.cancelled.set()
        if running.settling:
            return  # the attempt is over; the store's fencing decides what its result does
        if running.task is not None and not running.task.done():
            running.task.cancel()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_tick)
            current = [*self._running.values(), *self._settling.values()]
            if not current:
                continue
            now = time.monotonic()
            if all(r.renew_at > now for r in current):
                continue
            try:
                held = await self._jobs.heartbeat([r.lease for r in current])
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried next tick
                log.warning("heartbeat failed: %s", exc)
                continue
            renewed_at = time.monotonic()
            for running in current:
                if running.job.id in held:
                    running.renew_at = renewed_at + running.job.visibility_timeout / 3
                elif not running.lost and (
                    running.job.id in self._running or running.job.id in self._settling
                ):
                    running.lost = True
                    self._lease_lost(running, "lease lost (cancelled, dead-lettered or expired)")
                    self._interrupt(running)

    async def _drain(self) -> None:
        tasks = [
            r.task
            for r in (*self._running.values(), *self._settling.values())
            if r.task is not None
        ]
        if tasks:
            log.info(
                "stopping: waiting up to %.0fs for %d job(s)",
                self._settings.shutdown_grace,
                len(tasks),
            )
            await asyncio.wait(tasks, timeout=self._settings.shutdown_grace)
        leftovers = list(self._running.values())
        if not leftovers:
            return
        for running in leftovers:
            running.released = True
            self._interrupt(running)
        await asyncio.gather(*(r.task for r in leftovers if r.task), return_exceptions=True)
        leases = [r.lease for r in leftovers]
        try:
            released = await self._jobs.release(leases)
            await self._ready_queue.push(
                [ReadyHint(r.job.queue, r.job.id) for r in leftovers if r.job.id in released]
            )
            log.info("handed back %d job(s) after the grace period", len(released))
        except Exception as exc:  # noqa: BLE001 - the leases expire and the scheduler recovers them
            log.warning("could not hand back %d job(s), leases will expire: %s", len(leases), exc)

    def _report_utilization(self, queue: str) -> None:
        busy = sum(1 for r in self._running.values() if r.job.queue == queue)
        self._metrics.utilization(queue, busy, self._settings.concurrency)
