"""The worker: fetch hints, claim with leases, run handlers, heartbeat, settle (fenced).

One Worker per process. It runs up to `concurrency` jobs at once, fetches in batches sized
to its free slots, renews every lease it holds in one batched call, and settles in
batches. A job whose lease is lost (expired and reaped, cancelled, dead-lettered) is
interrupted and its result discarded: the store refuses writes that name a stale lease.

Longer than most modules on purpose: fetching, running, heartbeating, settling and the
graceful drain share one set of slots and leases, and splitting them would spread that
state across modules that each need all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from uuid import UUID

from taskforge.application.failure_hooks import FAILURE_HOOK_TIMEOUT, FailureHooks
from taskforge.application.handlers import (
    HandlerRegistry,
    JobContext,
    Snooze,
    TerminalError,
    invoke,
)
from taskforge.application.hints import HintDispatcher
from taskforge.application.metrics import UNREGISTERED_JOB_TYPE
from taskforge.application.ports import (
    AttributeValue,
    Clock,
    JobTracer,
    LeaseStore,
    RandomSource,
    RateLimiter,
    ReadyQueue,
    WorkerMetrics,
    WorkerRegistry,
)
from taskforge.application.reachability import QUEUE_DOWN_REMINDER, NotAnswering, Reachability
from taskforge.application.threads import HandlerThreads
from taskforge.application.timing import sleep_unless, unanswered, wait_any
from taskforge.domain.errors import Unavailable
from taskforge.domain.job import Job, Lease, ReadyHint
from taskforge.domain.outcome import (
    DEFAULT_MAX_SNOOZES,
    DEFAULT_UNKNOWN_TYPE_GRACE,
    SNOOZE_LIMIT_REASON,
    UNKNOWN_TYPE_REASON,
    WORKER_ERROR_REASON,
    DeadLettered,
    FailureKind,
    HandedBack,
    RetryLater,
    Settlement,
    Snoozed,
    Succeeded,
    bound_traceback,
    decide_failure,
    joined_traceback,
    storable_text,
)
from taskforge.domain.result import (
    DEFAULT_MAX_RESULT_BYTES,
    RESULT_REFUSED_REASON,
    UnstorableResult,
    encode_result,
)
from taskforge.domain.workers import WORKER_REPORT_INTERVAL, WorkerStatus

log = logging.getLogger("taskforge.worker")

MAX_ERROR_LENGTH = 4000

RUN_SPAN = "taskforge.job.run"
"""The span of one attempt, a child of the span that enqueued the job."""

_OUTCOMES: dict[type[Settlement], str] = {
    Succeeded: "succeeded",
    RetryLater: "retry",
    DeadLettered: "dead_lettered",
    Snoozed: "snoozed",
    HandedBack: "handed_back",
}

SETTLE_ATTEMPTS = 8
"""Writes of a settlement batch while the store is unavailable, with backoff up to 2 s."""
SETTLE_STATEMENT_ATTEMPTS = 3
"""Writes of one settlement the store refuses with any other error: such an error rarely
passes, and the job's lease expiring is the way out (the scheduler then re-runs it)."""


class TooManyAbandonedThreads(Exception):
    """Worker.run stopped because more sync-handler threads were abandoned and still run than
    `max_abandoned_threads` allows. Only a new process gets those threads back: the caller
    should exit non-zero so that its supervisor restarts it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSettings:
    queues: tuple[str, ...]
    concurrency: int
    owner: str
    host: str = ""
    pid: int = 0
    """Where the worker runs, as it reports itself to the WorkerRegistry."""
    rate_limit_per_sec: float = 0.0
    """Jobs started per second in each queue not in `queue_rate_limits`, shared by all
    workers through the RateLimiter; 0 disables it."""
    queue_rate_limits: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """The queues with a rate of their own, which replaces `rate_limit_per_sec` for them;
    0: no limit for that queue."""
    heartbeat: bool = True
    """Off: a job may run at most its visibility timeout, then it is interrupted."""
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    """The most a handler's return value may take as JSON; a larger one dead-letters the
    job (MAX_RESULT_BYTES)."""
    max_snoozes: int = DEFAULT_MAX_SNOOZES
    """Snoozes a job may take (MAX_SNOOZES) unless its type declares its own cap; the next
    one dead-letters it."""
    unknown_type_grace: float = DEFAULT_UNKNOWN_TYPE_GRACE
    """Seconds a job whose type no live worker serving its queue has a handler for is handed
    back before it is dead-lettered as unknown (UNKNOWN_TYPE_GRACE); 0: at once."""
    unknown_type_delay: float = 1.0
    """Seconds a job handed back for lack of a handler waits before it is due again, so that
    the workers that have one get it first."""
    report_interval: float = WORKER_REPORT_INTERVAL
    """Seconds between the worker's reports to the WorkerRegistry."""
    poll_timeout: float = 1.0
    """Longest blocking pop; bounds how long shutdown waits for the fetch loop."""
    shutdown_grace: float = 30.0
    interrupt_grace: float = 1.0
    """Seconds the handlers still running after `shutdown_grace` get to end once cancelled;
    the jobs of those that ignore the cancellation are handed back all the same."""
    settle_batch_size: int = 200
    settle_linger: float = 0.002
    """Seconds a settlement may wait for others to share its write."""
    heartbeat_tick: float = 0.25
    queue_grace: float = 2.0
    """Seconds past `poll_timeout` a pop may take before the ready queue counts as
    unreachable (a frozen Redis answers nothing at all)."""
    direct_poll_min: float = 0.05
    direct_poll_max: float = 2.0
    """While the ready queue is unreachable the worker claims due jobs from the store
    itself; when a claim finds nothing it waits between these bounds (doubling, with
    jitter) so that many workers do not hammer the database."""
    queue_retry_interval: float = 2.0
    """While claiming from the store, how often the ready queue is tried again. A try gets
    `queue_grace` to answer; one that outlives it is left to finish (opening a connection
    through Sentinels may take longer) and no other starts meanwhile. While pops come back
    empty, also how often the worker checks that the queue still takes hints (see
    Worker._check_hints_can_arrive)."""
    max_abandoned_threads: int | None = None
    """Sync-handler threads that may stay abandoned (still running after their attempt ended
    without them) before the worker drains and stops with TooManyAbandonedThreads; None
    means `concurrency`. Sync handlers run on `concurrency` + this many threads, so the
    abandoned ones never take a running job's thread."""
    failure_hook_timeout: float = FAILURE_HOOK_TIMEOUT
    """Seconds the worker waits for the failure hooks of one failed attempt."""

    def rate_limit_of(self, queue: str) -> float:
        """Jobs of `queue` started per second, shared by its workers; 0: no limit."""
        return self.queue_rate_limits.get(queue, self.rate_limit_per_sec)

    @property
    def abandoned_thread_limit(self) -> int:
        return (
            self.concurrency if self.max_abandoned_threads is None else self.max_abandoned_threads
        )


UNKNOWN_TYPES_REMEMBERED = 1000
"""Job types (with their queue) a worker remembers having warned of a first hand-back for
want of a handler."""


@dataclass(slots=True, kw_only=True)
class _Running:
    job: Job
    lease: Lease
    context: JobContext
    task: asyncio.Task[None] | None = None
    renew_every: float = 0.0
    renew_at: float = math.inf
    """When the heartbeat renews this lease next; set once the attempt starts."""
    lease_held_until: float = math.inf
    """Until when the lease surely holds: when its claim or its last renewal was sent, plus
    the visibility timeout (the store counts from later). Past it without a renewal the
    scheduler may have handed the job to another worker already."""
    lost: bool = False
    released: bool = False
    settling: bool = False
    counted: bool = False
    """Whether the metrics count this run as an attempt started (see Worker._count_attempt)."""
    time_in_queue: float = 0.0
    """Seconds the job waited, due, before this run started."""
    abandoned_stack: str | None = None
    """Where the attempt's sync handler was when its thread was abandoned."""
    failure: BaseException | None = None
    """What the handler raised (or returned that cannot be stored) when its attempt failed:
    the failure hooks get it once the failure is settled."""


def _describe(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - an exception's own __str__ may fail too
        message = "<str() failed>"
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return storable_text(text)[:MAX_ERROR_LENGTH]


def _traceback_of(exc: BaseException) -> str:
    return joined_traceback(traceback.format_exception(exc))


def _timed_out(error: str, exc: TimeoutError) -> TimeoutError:
    """The exception the failure hooks get for an attempt past its time limit: `error` as
    its message, raised where the deadline's was, caused by what the handler was doing (an
    async handler's CancelledError)."""
    timed_out = TimeoutError(error).with_traceback(exc.__traceback__)
    timed_out.__cause__ = exc.__cause__
    return timed_out


class _Settler:
    """Batches settlements into one store write, flushed by size or after a short linger."""

    def __init__(self, leases: LeaseStore, settings: WorkerSettings) -> None:
        self._leases = leases
        self._settings = settings
        self._pending: list[tuple[Settlement, asyncio.Future[bool | None]]] = []
        self._wakeup = asyncio.Event()
        self._closed = False

    async def submit(self, settlement: Settlement) -> bool | None:
        """True when the store applied it; False when the lease no longer owned the job;
        None when it could not be written (the lease then expires and the scheduler
        recovers the job), or comes after `close` (a handler that ended only after the
        worker had stopped and handed its job back)."""
        if self._closed:
            return None
        future: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
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
                await self._flush(self._take_batch())

    def _take_batch(self) -> list[tuple[Settlement, asyncio.Future[bool | None]]]:
        """The oldest pending settlements, at most one per job: the store answers by job id,
        and two attempts of one job (an earlier one fenced off, see Worker._supersede) in
        one write could not be told apart."""
        batch: list[tuple[Settlement, asyncio.Future[bool | None]]] = []
        later: list[tuple[Settlement, asyncio.Future[bool | None]]] = []
        jobs: set[UUID] = set()
        for pending in self._pending:
            job_id = pending[0].lease.job_id
            if len(batch) < self._settings.settle_batch_size and job_id not in jobs:
                batch.append(pending)
                jobs.add(job_id)
            else:
                later.append(pending)
        self._pending = later
        return batch

    async def _flush(self, batch: list[tuple[Settlement, asyncio.Future[bool | None]]]) -> None:
        try:
            applied, unwritten = await self._write([settlement for settlement, _ in batch])
        except Exception:  # every waiter gets an answer whatever happened
            log.exception("settling %d job(s) failed", len(batch))
            applied, unwritten = set(), {settlement.lease.job_id for settlement, _ in batch}
        for settlement, future in batch:
            if not future.done():
                job_id = settlement.lease.job_id
                future.set_result(None if job_id in unwritten else job_id in applied)

    async def _write(self, settlements: list[Settlement]) -> tuple[set[UUID], set[UUID]]:
        """Apply settlements: (ids applied, ids that could not be written). An unavailable
        store is retried with backoff. Any other error splits a batch, so that a settlement
        the store refuses cannot take the rest of its batch with it."""
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._leases.settle(settlements), set()
            except Exception as exc:  # noqa: BLE001 - store outages are retried, then reaped
                unavailable = isinstance(exc, Unavailable)
                if not unavailable and len(settlements) > 1:
                    log.warning(
                        "settling %d jobs failed, one by one now: %s", len(settlements), exc
                    )
                    applied: set[UUID] = set()
                    unwritten: set[UUID] = set()
                    for settlement in settlements:
                        one_applied, one_unwritten = await self._write([settlement])
                        applied |= one_applied
                        unwritten |= one_unwritten
                    return applied, unwritten
                if attempt >= (SETTLE_ATTEMPTS if unavailable else SETTLE_STATEMENT_ATTEMPTS):
                    ids = [str(settlement.lease.job_id) for settlement in settlements]
                    log.error(
                        "could not settle %d job(s), their leases will expire and the scheduler "
                        "re-runs them: %s (%s)",
                        len(ids),
                        exc,
                        ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else ""),
                    )
                    return set(), {settlement.lease.job_id for settlement in settlements}
                log.warning("settle failed (attempt %d): %s", attempt, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()


@dataclass(slots=True)
class _DirectClaims:
    """The pacing of dispatch without hints: how long to wait after a claim that found
    nothing (doubling between the settings' bounds, with jitter), and a token bucket per
    queue with a rate limit. The rate is shared by all workers through Redis; without
    Redis each worker holds it by itself."""

    settings: WorkerSettings
    rate_limits: Mapping[str, float]
    """The rate of each queue that has one (see Worker._rate_limits)."""
    random: RandomSource
    wait: float = 0.0
    unlimited: tuple[str, ...] = ()
    """The queues served without a rate limit."""
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per queue: its permits, and when (by the worker's `monotonic`) they were last refilled."""

    def __post_init__(self) -> None:
        self.wait = self.settings.direct_poll_min
        self.unlimited = tuple(q for q in self.settings.queues if q not in self.rate_limits)

    def permits(self, queue: str, now: float) -> int:
        """How many jobs of `queue`, a queue with a rate limit, the next claim may take within
        its rate."""
        rate = self.rate_limits[queue]
        tokens, refilled_at = self.buckets.get(queue, (rate * self.settings.direct_poll_min, now))
        tokens = min(tokens + rate * (now - refilled_at), max(rate, 1.0))
        self.buckets[queue] = (tokens, now)
        return int(tokens)

    def spend(self, queue: str, count: int) -> None:
        tokens, refilled_at = self.buckets[queue]
        self.buckets[queue] = (tokens - count, refilled_at)

    def claimed(self, count: int) -> None:
        self.wait = (
            self.settings.direct_poll_min
            if count
            else min(self.wait * 2, self.settings.direct_poll_max)
        )

    def next_wait(self) -> float:
        return self.wait * (0.5 + self.random() / 2)


class Worker:
    def __init__(
        self,
        *,
        leases: LeaseStore,
        ready_queue: ReadyQueue,
        hints: HintDispatcher,
        rate_limiter: RateLimiter,
        handlers: HandlerRegistry,
        metrics: WorkerMetrics,
        clock: Clock,
        random: RandomSource,
        settings: WorkerSettings,
        tracer: JobTracer | None = None,
        workers: WorkerRegistry | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Hints are popped from `ready_queue`; those the worker puts back (popped but not
        started) or sends for the jobs it hands back leave through `hints`.
        `tracer` None: tracing is off and the worker does no tracing work at all.
        `workers`: where the worker reports itself and looks for workers that can run a job
        it has no handler for; None: it reports nowhere and knows of no other worker.
        `clock` dates what the worker compares with the store's times (time in queue);
        `monotonic` measures durations (runtimes, when leases are due for renewal, rate-limit
        pacing, when the ready queue is tried again)."""
        if settings.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if settings.abandoned_thread_limit < 0:
            raise ValueError("max_abandoned_threads must be >= 0")
        self._leases = leases
        self._monotonic = monotonic
        self._ready_queue = ready_queue
        self._hints = hints
        self._rate_limiter = rate_limiter
        self._handlers = handlers
        self._metrics = metrics
        self._clock = clock
        self._random = random
        self._settings = settings
        self._tracer = tracer
        self._workers = workers
        self._started_at: datetime | None = None
        self._running: dict[UUID, _Running] = {}
        """Attempts whose handler is running, by lease token: each holds one of the
        `concurrency` slots. By token, not by job id: a job cancelled and retried while its
        handler still runs here may be claimed again by this worker (see _start)."""
        self._settling: dict[UUID, _Running] = {}
        """Attempts whose handler returned and whose settlement waits for its batch write, by
        lease token. They hold no slot (so fetching overlaps settling) but keep their lease
        renewed."""
        self._slot_freed = asyncio.Event()
        self._settled = asyncio.Event()
        self._max_settling = max(settings.settle_batch_size, 4 * settings.concurrency)
        self._settler = _Settler(leases, settings)
        self._threads = HandlerThreads(settings.concurrency + settings.abandoned_thread_limit)
        self._failure_hooks = FailureHooks(
            handlers.failure_hooks, settings.concurrency, settings.failure_hook_timeout
        )
        self._stopping = asyncio.Event()
        """Set when `run`'s stop is, or when the worker gives up by itself."""
        self._gave_up: str | None = None
        self._direct: _DirectClaims | None = None
        """Set while the ready queue is unreachable: jobs are claimed from the store."""
        self._queue = Reachability(
            settings,
            monotonic,
            down=_claiming_from_store,
            up=_back_to_hints,
            still_down=_still_claiming_from_store,
            remind_every=QUEUE_DOWN_REMINDER,
        )
        """Whether the ready queue answers; while it does not, it is probed through this
        every queue_retry_interval (pops and sends are bounded on their own: see _fetch)."""
        self._next_idle_check = 0.0
        """When (by `monotonic`) an empty pop next checks that the queue takes hints."""
        self._unknown_types: set[tuple[str, str]] = set()
        """Queues and job types handed back for want of a handler (see _first_unknown)."""
        self._rate_limits = {
            queue: rate for queue in settings.queues if (rate := settings.rate_limit_of(queue)) > 0
        }
        """The rate of each queue served that has one; the others never ask the RateLimiter
        (and with none, no hint does)."""
        self._throttled: dict[str, float] = {}
        """Queues whose rate-limit permits are spent, each with when (by `monotonic`) it has one
        again: until then their hints are not popped, so that a backlog waiting for permits
        does not hold up the hints of the other queues the worker serves."""

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def owner(self) -> str:
        """This worker's name in leases (and in the metrics store): host:pid:suffix."""
        return self._settings.owner

    @property
    def failure_hooks_in_flight(self) -> int:
        """Failed attempts, settled already, whose failure hooks are still being called."""
        return self._failure_hooks.in_flight

    @property
    def abandoned_threads(self) -> int:
        """Sync-handler threads abandoned by this worker that are still running."""
        return self._threads.abandoned

    @property
    def abandoned_threads_total(self) -> int:
        """Sync-handler threads abandoned by this worker since it started."""
        return self._threads.abandoned_total

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then shut down gracefully: running jobs get the grace
        period to finish; the rest are interrupted and handed back without using an attempt.
        Raises TooManyAbandonedThreads, after the same graceful shutdown, when the worker
        stopped by itself because too many abandoned threads still run."""
        for queue in self._settings.queues:
            self._report_utilization(queue)  # the queues served, idle, from the start
        settler = asyncio.create_task(self._settler.run(), name="taskforge-settler")
        # Without heartbeats each attempt's lease is its deadline: nothing to renew.
        heartbeat = (
            asyncio.create_task(self._heartbeat_loop(), name="taskforge-heartbeat")
            if self._settings.heartbeat
            else None
        )
        relay = asyncio.create_task(self._relay_stop(stop), name="taskforge-stop")
        reports = (
            asyncio.create_task(self._report_loop(self._workers), name="taskforge-reports")
            if self._workers is not None
            else None
        )
        try:
            await self._fetch_loop(self._stopping)
        finally:
            await self._drain()
            relay.cancel()
            if heartbeat is not None:
                heartbeat.cancel()
            if reports is not None:
                reports.cancel()
            self._settler.close()
            await asyncio.gather(
                settler,
                relay,
                *([heartbeat] if heartbeat else []),
                *([reports] if reports else []),
                return_exceptions=True,
            )
            await self._unregister()
            await self._failure_hooks.close()
            self._threads.shutdown()
        if self._gave_up is not None:
            raise TooManyAbandonedThreads(self._gave_up)

    def status(self) -> WorkerStatus:
        """This worker as it reports itself to the WorkerRegistry, as of now."""
        now = self._clock.now()
        if self._started_at is None:
            self._started_at = now
        settings = self._settings
        return WorkerStatus(
            worker_id=settings.owner,
            host=settings.host,
            pid=settings.pid,
            queues=settings.queues,
            job_types=tuple(self._handlers),
            concurrency=settings.concurrency,
            busy_slots=len(self._running),
            started_at=self._started_at,
            heartbeat_at=now,
        )

    async def _report_loop(self, workers: WorkerRegistry) -> None:
        """Report at once (a new worker's job types count from its start), then every
        report_interval; a failed report is tried again at the next one."""
        while True:
            try:
                await workers.report(self.status())
            except Exception as exc:  # noqa: BLE001 - the row goes stale; the next one renews it
                log.warning("could not report to the worker registry: %s", exc)
            await asyncio.sleep(self._settings.report_interval)

    async def _unregister(self) -> None:
        if self._workers is None:
            return
        try:
            await self._workers.remove(self._settings.owner)
        except Exception as exc:  # noqa: BLE001 - the row goes stale and is pruned
            log.warning("could not remove this worker from the registry: %s", exc)

    async def _relay_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping.set()

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
        if self._direct is not None:
            await self._fetch_direct(self._direct, free, stop)
            return
        queues, timeout = self._poppable()
        if not queues:  # every queue waits for a rate-limit permit
            await sleep_unless(stop, timeout)
            return
        waited = timeout + self._settings.queue_grace
        try:
            async with asyncio.timeout(waited):
                hints = await self._ready_queue.pop(queues, free, timeout)
        except (Unavailable, TimeoutError) as exc:
            # A hint popped by the cancelled call is lost; the scheduler republishes it.
            self._claim_from_store(unanswered(exc, waited))
            return
        if not hints:
            if not stop.is_set():
                await self._check_hints_can_arrive()
            return
        if stop.is_set():
            await self._put_back(hints)
            return
        if self._rate_limits:
            # The limiter shares the ready queue's server, and is bounded like a pop: a
            # server that froze after the pop holds the worker no longer than that.
            grace = self._settings.queue_grace
            try:
                async with asyncio.timeout(grace):
                    allowed = await self._apply_rate_limit(hints)
            except (Unavailable, TimeoutError) as exc:
                await self._put_back(hints)
                self._claim_from_store(unanswered(exc, grace))
                return
            except Exception:
                await self._put_back(hints)
                raise
            hints = allowed
            if not hints:
                return
        try:
            claim_sent_at = self._monotonic()
            claimed = await self._leases.claim(
                list(dict.fromkeys(h.job_id for h in hints)), self._settings.owner
            )
        except Exception:
            # The hints go back, or their jobs would wait for the scheduler's republish
            # sweep. Had the claim reached the store before failing, its jobs are RUNNING
            # under a lease this worker never learned of: their hints claim nothing when
            # popped again, and the scheduler reaps the jobs once the lease runs out.
            await self._put_back(hints)
            raise
        for job in claimed:
            self._start(job, claim_sent_at)

    def _claim_from_store(self, reason: str) -> None:
        """The ready queue is unreachable: Postgres holds every job, so keep running them
        without hints until it answers again."""
        self._queue.not_answering(reason)
        self._start_direct_claims()

    def _start_direct_claims(self) -> None:
        self._direct = _DirectClaims(self._settings, self._rate_limits, self._random)

    async def _check_hints_can_arrive(self) -> None:
        """After an empty pop, at most every queue_retry_interval: probe the ready queue with
        the write a ping is. A Redis out of memory under noeviction still serves pops but
        refuses every push, so the jobs enqueued meanwhile get no hints and empty pops alone
        would wait for them forever: while the queue refuses the probe, jobs are claimed from
        the store (and it is probed again as when it does not answer at all). Only an empty
        pop checks: hints still waiting are popped first, and popping them is what frees the
        memory when they are what fills it."""
        now = self._monotonic()
        if now < self._next_idle_check:
            return
        self._next_idle_check = now + self._settings.queue_retry_interval
        try:
            await self._queue.ask(self._ready_queue.ping)
        except NotAnswering:
            self._start_direct_claims()

    async def _put_back(self, hints: list[ReadyHint]) -> None:
        """Put back hints popped but not started (see _send_within_grace)."""
        await self._send_within_grace(self._hints.put_back, hints, "could not put back %d hint(s)")

    async def _send_within_grace(
        self,
        send: Callable[[Sequence[ReadyHint]], Awaitable[None]],
        hints: list[ReadyHint],
        failure: str,
    ) -> None:
        """`send(hints)` to the ready queue, bounded as a pop is: one that does not take them
        within the queue's grace loses them (logged as `failure`, given their count), and the
        scheduler republishes their jobs, which are in the store."""
        grace = self._settings.queue_grace
        try:
            async with asyncio.timeout(grace):
                await send(hints)
        except Exception as exc:  # noqa: BLE001 - lost hints are republished
            log.warning(f"{failure}: %s", len(hints), unanswered(exc, grace))

    def _poppable(self) -> tuple[tuple[str, ...], float]:
        """The queues to pop hints from, and how long the pop may wait: every queue the
        worker serves but those whose rate-limit permits are spent, and no longer than until
        the first of those has a permit again."""
        if not self._throttled:
            return self._settings.queues, self._settings.poll_timeout
        now = self._monotonic()
        self._throttled = {queue: at for queue, at in self._throttled.items() if at > now}
        queues = tuple(queue for queue in self._settings.queues if queue not in self._throttled)
        timeout = min((self._settings.poll_timeout, *(at - now for at in self._throttled.values())))
        return queues, timeout

    async def _fetch_direct(self, direct: _DirectClaims, free: int, stop: asyncio.Event) -> None:
        """One step of dispatch without the ready queue: try the queue again when it is
        time, else claim due jobs straight from the store (highest priority, then oldest
        due first; of a queue with a rate limit, within its own permits)."""
        if self._queue.retry_due():
            with contextlib.suppress(NotAnswering):
                await self._queue.ask(self._ready_queue.ping)
                self._direct = None
                return
        # Each queue with a rate limit within its own permits, so that one waiting for
        # permits does not hold up the others (a claim takes the oldest due jobs of every
        # queue given); the queues without one share a claim for the slots left.
        wanted = claimed = 0
        for queue in direct.rate_limits:
            allowed = min(free - claimed, direct.permits(queue, self._monotonic()))
            if allowed > 0:
                wanted += allowed
                got = await self._claim_due((queue,), allowed)
                direct.spend(queue, got)
                claimed += got
        if direct.unlimited and claimed < free:
            wanted += free - claimed
            claimed += await self._claim_due(direct.unlimited, free - claimed)
        direct.claimed(claimed)
        if claimed < wanted or wanted == 0:
            await sleep_unless(stop, direct.next_wait())

    async def _claim_due(self, queues: tuple[str, ...], limit: int) -> int:
        """Claim and start up to `limit` due jobs of `queues` from the store; how many."""
        claim_sent_at = self._monotonic()
        claimed = await self._leases.claim_due(queues, limit, self._settings.owner)
        for job in claimed:
            self._start(job, claim_sent_at)
        return len(claimed)

    async def _apply_rate_limit(self, hints: list[ReadyHint]) -> list[ReadyHint]:
        """The hints whose jobs may start within their queue's rate limit (all of those of a
        queue without one). The others are put back, and their queues are not popped again
        until they have a permit (see _poppable)."""
        allowed: list[ReadyHint] = []
        deferred: list[ReadyHint] = []
        by_queue: dict[str, list[ReadyHint]] = {}
        for hint in hints:
            by_queue.setdefault(hint.queue, []).append(hint)
        for queue, queue_hints in by_queue.items():
            rate = self._rate_limits.get(queue)
            if rate is None:
                allowed += queue_hints
                continue
            grant = await self._rate_limiter.acquire(queue, rate, len(queue_hints))
            allowed += queue_hints[: grant.granted]
            rest = queue_hints[grant.granted :]
            if rest:
                deferred += rest
                retry_at = self._monotonic() + max(grant.retry_after, 0.001)
                self._throttled[queue] = retry_at
                self._metrics.rate_throttled(queue, len(rest))
        if deferred:
            await self._hints.put_back(deferred)
        return allowed

    def _start(self, job: Job, claim_sent_at: float) -> None:
        """Take a slot and run the job's attempt in a task of its own (`claim_sent_at`: when
        the claim that leased it was sent, by `monotonic`). Only the job's plain
        fields are copied here: whatever the job holds, it is the task that reads it, inside
        the guard that always frees the slot and settles the attempt (see _execute)."""
        if job.lease_token is None:
            log.error("job %s was claimed without a lease; its claim will expire", job.id)
            return
        if self._monotonic() >= claim_sent_at + job.visibility_timeout:
            # The claim's answer came back late (a network partition that healed): the
            # lease may have run out and the job gone to another worker meanwhile.
            self._metrics.lease_lost(job.queue)
            log.info("job %s: claimed too late to run, its lease may have run out", job.id)
            return
        lease = Lease(job_id=job.id, token=job.lease_token)
        self._supersede(job.id)
        context = JobContext(
            job_id=job.id,
            queue=job.queue,
            job_type=job.job_type,
            attempt=job.attempt_count,
            max_attempts=job.policy.max_attempts,
            payload=job.payload,
            lease_token=lease.token,
            traceparent=job.traceparent,
            snoozes=job.snoozes,
            created_at=job.created_at,
        )
        running = _Running(
            job=job,
            lease=lease,
            context=context,
            lease_held_until=claim_sent_at + job.visibility_timeout,
        )
        self._running[lease.token] = running
        running.task = asyncio.create_task(self._execute(running), name=f"taskforge-job-{job.id}")

    def _supersede(self, job_id: UUID) -> None:
        """The store just leased `job_id` to this worker again: any earlier attempt of it
        still running or settling here lost its lease (the job was cancelled, dead-lettered
        or reaped, then retried), so it is stopped now, not at its next heartbeat, and never
        renewed again: the renewal answers by job id, which the new lease now holds."""
        for running in (*self._running.values(), *self._settling.values()):
            if running.job.id == job_id and not running.lost:
                running.lost = True
                self._lease_lost(running, "lease lost: the job was claimed again meanwhile")
                self._interrupt(running)

    async def _execute(self, running: _Running) -> None:
        """One attempt, from its start to its settlement. Whatever is raised on the way, by
        the handler or by the worker's own work on this job (its timestamps, metrics,
        tracing), the slot is freed, the lease is no longer renewed, and the attempt is
        settled: failed with the error, unless the lease was lost or handed back. A
        settlement the store cannot write leaves the job to its lease's expiry."""
        started = self._monotonic()
        settlement: Settlement | None = None
        try:
            settlement = await self._begin_attempt(running)
        except asyncio.CancelledError:
            if not (running.lost or running.released):
                raise
        except Exception as exc:  # noqa: BLE001 - the worker's own failure on this job
            settlement = self._worker_failure(running, exc)
        finally:
            self._free_slot(running)
        if settlement is not None:
            await self._settle(running, settlement, self._monotonic() - started)
        elif running.counted:  # stopped at shutdown, or on its lost lease
            self._metrics.job_interrupted(running.job.queue)

    async def _begin_attempt(self, running: _Running) -> Settlement:
        job = running.job
        running.renew_every = job.visibility_timeout / 3
        running.renew_at = self._monotonic() + running.renew_every
        self._report_utilization(job.queue)
        running.time_in_queue = self._time_in_queue(job)
        if job.job_type in self._handlers:
            self._count_attempt(running)
        if self._tracer is None:
            return await self._attempt(running)
        return await self._traced_attempt(running, self._tracer)

    def _count_attempt(self, running: _Running) -> None:
        """Count the run as an attempt in the metrics: every handler run, snoozed ones too.
        A job without a handler here counts only when it is dead-lettered: no handler ran,
        and the hand-backs before (about one a second during UNKNOWN_TYPE_GRACE) are none."""
        running.counted = True
        job = running.job
        self._metrics.job_started(job.queue, self._job_type_label(job), running.time_in_queue)

    def _time_in_queue(self, job: Job) -> float:
        """Seconds since the job became due (created, or due after a delay or a retry).
        A timestamp without a timezone is no instant (Postgres' -infinity and infinity come
        back so) and is left out."""
        instants = [at for at in (job.next_run_at, job.created_at) if at.tzinfo is not None]
        if not instants:
            return 0.0
        return max(0.0, (self._clock.now() - max(instants)).total_seconds())

    def _worker_failure(self, running: _Running, exc: Exception) -> Settlement:
        """The worker failed on this job itself: the attempt fails with that error, as if
        the handler had raised it; if even deciding that fails, the job is dead-lettered."""
        job, lease = running.job, running.lease
        log.error(
            "job %s: the worker failed while running its attempt: %s", job.id, exc, exc_info=exc
        )
        running.failure = None  # the worker's failure, not the handler's
        error, trace = _describe(exc), _traceback_of(exc)
        try:
            return decide_failure(job, lease, error, FailureKind.RETRYABLE, self._random, trace)
        except Exception:  # noqa: BLE001 - the job's own data breaks the decision too
            return DeadLettered(
                lease=lease, error=error, reason=WORKER_ERROR_REASON, traceback=trace
            )

    def _free_slot(self, running: _Running) -> None:
        """Give the slot back; from now on only a settlement in flight renews the lease."""
        self._running.pop(running.lease.token, None)
        self._slot_freed.set()
        try:
            self._report_utilization(running.job.queue)
        except Exception:  # metrics must not stop the worker
            log.exception("could not report utilisation")

    async def _settle(self, running: _Running, settlement: Settlement, runtime: float) -> None:
        job = running.job
        running.settling = True
        self._settling[running.lease.token] = running
        try:
            applied = await self._settler.submit(settlement)
        finally:
            del self._settling[running.lease.token]
            self._settled.set()
        try:
            self._report_settled(running, settlement, applied, runtime)
        except Exception:  # the job is settled; its report must not leak
            log.exception("job %s: could not report its settlement", job.id)
        if applied and running.failure is not None:
            dead_lettered = isinstance(settlement, DeadLettered)
            self._failure_hooks.report(running.context, running.failure, dead_lettered)

    def _report_settled(
        self, running: _Running, settlement: Settlement, applied: bool | None, runtime: float
    ) -> None:
        job = running.job
        if applied is False:
            why = "settle refused: the lease no longer owns the job"
            if running.lost:  # counted when the heartbeat found the lease gone
                log.info("job %s: %s", job.id, why)
            else:
                self._lease_lost(running, why)
        if applied and isinstance(settlement, DeadLettered):
            fields = {
                "job_id": str(job.id),
                "queue": job.queue,
                "job_type": job.job_type,
                "reason": settlement.reason,
            }
            # Written once the settlement is applied, after the attempt's span ended: the
            # line names that span's trace (a traceparent is version-traceid-spanid-flags).
            traced = (running.context.traceparent or "").split("-")
            if self._tracer is not None and len(traced) == 4:
                fields["trace_id"] = traced[1]
            log.warning(
                "job %s (%s on %s) dead-lettered: %s; last error: %s",
                job.id,
                job.job_type,
                job.queue,
                settlement.reason,
                settlement.error,
                extra=fields,
            )
        if isinstance(settlement, HandedBack):
            return  # no handler ran: no attempt to count
        if not running.counted:  # no handler here, or the worker failed before counting it
            self._count_attempt(running)
        if running.released and not applied:
            # Handed back at shutdown while its handler ran on; what it returned late is
            # discarded: interrupted, as the attempts that did stop.
            self._metrics.job_interrupted(job.queue)
            return
        label = self._job_type_label(job)
        if applied and isinstance(settlement, Snoozed):
            self._metrics.job_snoozed(job.queue, label, runtime)
            return
        succeeded = bool(applied) and isinstance(settlement, Succeeded)
        self._metrics.job_finished(job.queue, label, runtime, succeeded)

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
            if isinstance(settlement, RetryLater | DeadLettered):
                span.fail(settlement.error)
            return settlement

    def _time_limit(self, running: _Running) -> tuple[float | None, float, str]:
        """The attempt's deadline: seconds from now (None: no deadline), the limit as set,
        and what set it: the job's `timeout`, or without heartbeats its lease, whichever ends
        sooner. The lease runs from when its claim was sent, so a claim answered late leaves
        less than the visibility timeout: the handler stops when the lease ends, before the
        scheduler can reap the job and another worker start it."""
        job = running.job
        limits: list[tuple[float, float, str]] = []
        if not self._settings.heartbeat:
            left = max(0.0, running.lease_held_until - self._monotonic())
            limits.append((left, job.visibility_timeout, "visibility timeout"))
        if job.timeout > 0:
            limits.append((job.timeout, job.timeout, "job timeout"))
        return min(limits, default=(None, 0.0, ""))

    async def _attempt(self, running: _Running) -> Settlement:
        job, lease, context = running.job, running.lease, running.context
        seconds, limit, cause = self._time_limit(running)
        # Only this deadline's expiry is reported as a timeout: a TimeoutError the handler
        # raises itself (its HTTP client's, say) is an ordinary failure with its own message.
        if job.job_type not in self._handlers:
            return await self._unknown_type(job, lease)
        deadline = asyncio.timeout(seconds)
        try:
            handler = self._handlers.get(job.job_type)
            async with deadline:
                value = await invoke(
                    handler, context, self._threads, functools.partial(self._abandoned, running)
                )
        except Snooze as exc:
            return self._snoozed(job, lease, exc)
        except UnstorableResult as exc:  # a typed task's result it could not convert
            return self._refused(running, exc)
        except TerminalError as exc:
            running.failure = exc
            return decide_failure(
                job, lease, _describe(exc), FailureKind.TERMINAL, self._random, _traceback_of(exc)
            )
        except TimeoutError as exc:
            if not deadline.expired():
                return self._retryable(running, exc)
            context.cancelled.set()  # a sync handler that polls it can stop
            error = f"timed out after {limit:g}s ({cause})"
            running.failure = _timed_out(error, exc)
            log.info("job %s attempt %d %s", job.id, job.attempt_count, error)
            # Where the handler was: its thread's stack, or the cancelled coroutine's.
            trace = running.abandoned_stack or _traceback_of(exc)
            return decide_failure(
                job, lease, error, FailureKind.RETRYABLE, self._random, bound_traceback(trace)
            )
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the worker interrupted the attempt (lease lost, shutdown)
            return self._retryable(running, exc)  # the handler raised it of its own
        except GeneratorExit:
            raise  # this coroutine is being closed: it must not go on
        except BaseException as exc:  # noqa: BLE001 - any handler error is a retryable failure
            # KeyboardInterrupt and SystemExit too: a worker takes SIGINT and SIGTERM as
            # its stop signals, so these come from the handler's own code (a script's
            # sys.exit) and must not end the process with its other jobs still leased.
            return self._retryable(running, exc)
        return self._succeeded(running, value)

    def _snoozed(self, job: Job, lease: Lease, snooze: Snooze) -> Settlement:
        """Back to waiting for `snooze.seconds` without using the attempt; past the cap
        (the job type's own `max_snoozes`, else MAX_SNOOZES), dead-lettered."""
        limit = self._handlers.declared_max_snoozes(job.job_type)
        cap = f"the {job.job_type!r} task's max_snoozes"
        if limit is None:
            limit, cap = self._settings.max_snoozes, "MAX_SNOOZES"
        if job.snoozes >= limit:
            error = f"snoozed {job.snoozes} times, the most {cap} allows ({limit})"
            log.info("job %s: %s", job.id, error)
            return DeadLettered(lease=lease, error=error, reason=SNOOZE_LIMIT_REASON)
        log.info("job %s snoozed for %gs", job.id, snooze.seconds)
        return Snoozed(lease=lease, delay=timedelta(seconds=snooze.seconds))

    async def _unknown_type(self, job: Job, lease: Lease) -> Settlement:
        """No handler here for the job's type. While a live worker serving its queue has one,
        or for UNKNOWN_TYPE_GRACE seconds after none has, the job is handed back without
        using the attempt, due again after a short delay; after that, it is dead-lettered.
        Rolling deploys rely on this: a worker of the previous version hands back the new
        types it does not know, and the new workers run them."""
        now = self._clock.now()
        delay = timedelta(seconds=self._settings.unknown_type_delay)
        try:
            live = [] if self._workers is None else await self._workers.list_live(now=now)
        except Exception as exc:  # noqa: BLE001 - without the registry, never dead-letter
            log.warning("job %s: no handler here, and the worker registry failed: %s", job.id, exc)
            return HandedBack(lease=lease, delay=delay, unknown_type_since=job.unknown_type_since)
        if any(worker.runs(job.queue, job.job_type) for worker in live):
            return HandedBack(lease=lease, delay=delay, unknown_type_since=None)
        since = job.unknown_type_since or now
        waited = (now - since).total_seconds()
        grace = self._settings.unknown_type_grace
        if waited >= grace:
            error = (
                f"no handler for jobType {job.job_type!r}: no live worker serving queue "
                f"{job.queue!r} has had one for {waited:.0f}s (UNKNOWN_TYPE_GRACE {grace:g}s)"
            )
            return DeadLettered(lease=lease, error=error, reason=UNKNOWN_TYPE_REASON)
        if job.unknown_type_since is None and self._first_unknown(job):
            # The first time: a job type misspelt where it was enqueued looks like this, so
            # it is a warning, once per type; the hand-backs that follow are not.
            log.warning(
                "job %s: no live worker serving %s has a handler for %r; it is handed back "
                "until one does, and dead-lettered after UNKNOWN_TYPE_GRACE (%gs) without one",
                job.id,
                job.queue,
                job.job_type,
                grace,
            )
        else:
            log.info(
                "job %s: no live worker serving %s has a handler for %r; handed back "
                "(%.0fs of %gs)",
                job.id,
                job.queue,
                job.job_type,
                waited,
                grace,
            )
        return HandedBack(lease=lease, delay=delay, unknown_type_since=since)

    def _first_unknown(self, job: Job) -> bool:
        """Whether no job of this queue and type was handed back yet for want of a handler
        (forgotten past UNKNOWN_TYPES_REMEMBERED, so that made-up types cannot grow it)."""
        key = (job.queue, job.job_type)
        if key in self._unknown_types:
            return False
        if len(self._unknown_types) >= UNKNOWN_TYPES_REMEMBERED:
            self._unknown_types.clear()
        self._unknown_types.add(key)
        return True

    def _succeeded(self, running: _Running, value: object) -> Settlement:
        """The handler returned `value`: success with it as the job's result, unless it is
        not storable JSON (too large, a set, NaN ...). Retrying would return the same kind
        of value, so that attempt is a terminal failure and nothing of it is stored."""
        try:
            result = encode_result(value, self._settings.max_result_bytes)
        except UnstorableResult as exc:
            return self._refused(running, exc)
        return Succeeded(lease=running.lease, result=result)

    def _refused(self, running: _Running, exc: UnstorableResult) -> Settlement:
        job, lease = running.job, running.lease
        running.failure = exc
        error = storable_text(f"result refused: {exc}")[:MAX_ERROR_LENGTH]
        log.info("job %s attempt %d: %s", job.id, job.attempt_count, error)
        return DeadLettered(lease=lease, error=error, reason=RESULT_REFUSED_REASON)

    def _retryable(self, running: _Running, exc: BaseException) -> Settlement:
        job, lease = running.job, running.lease
        running.failure = exc
        outcome = decide_failure(
            job, lease, _describe(exc), FailureKind.RETRYABLE, self._random, _traceback_of(exc)
        )
        if isinstance(outcome, RetryLater):
            log.info(
                "job %s attempt %d failed, retry in %s", job.id, job.attempt_count, outcome.delay
            )
        return outcome

    def _abandoned(self, running: _Running, stack: str) -> None:
        """A sync handler's thread outlived its attempt (timed out, lease lost, shutdown)."""
        running.abandoned_stack = stack
        still_running, limit = self._threads.abandoned, self._settings.abandoned_thread_limit
        log.warning(
            "job %s: its sync handler was still running when the attempt ended; its thread "
            "is left to finish on its own (%d abandoned thread(s) still running, limit %d)",
            running.job.id,
            still_running,
            limit,
        )
        if still_running > limit and not self._stopping.is_set():
            self._gave_up = (
                f"{still_running} abandoned handler threads are still running (limit {limit})"
            )
            log.error("stopping the worker: %s; restart it to get them back", self._gave_up)
            self._stopping.set()

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
        """Every tick: stop the jobs whose lease ran out unrenewed, and renew the leases that
        are due. The renewal runs in a task of its own, one at a time, so that a call the
        store does not answer (a network partition: even cancelling a statement then waits
        for the network) never holds up the check: a worker cut off from the store stops
        each job at the latest one tick after its lease ran out."""
        renewal: asyncio.Task[None] | None = None
        try:
            while True:
                await asyncio.sleep(self._until_next_beat())
                try:
                    now = self._monotonic()
                    self._drop_unrenewed_leases(now)
                    if renewal is not None and not renewal.done():
                        continue
                    current = [
                        r for r in (*self._running.values(), *self._settling.values()) if not r.lost
                    ]
                    if any(r.renew_at <= now for r in current):
                        renewal = asyncio.create_task(self._renew(current, now))
                except Exception:  # one bad beat must not stop every renewal
                    log.exception("heartbeat failed")
        finally:
            if renewal is not None:
                renewal.cancel()
                await asyncio.gather(renewal, return_exceptions=True)

    def _until_next_beat(self) -> float:
        """A tick, or less when a lease runs out sooner: its job is stopped right then."""
        leases = (
            r.lease_held_until
            for r in (*self._running.values(), *self._settling.values())
            if not r.lost
        )
        first_out = min(leases, default=math.inf) - self._monotonic()
        return max(0.0, min(self._settings.heartbeat_tick, first_out))

    async def _renew(self, current: list[_Running], sent_at: float) -> None:
        """Renew the leases of `current` in one call sent at `sent_at`; interrupt the jobs
        whose lease the store no longer holds."""
        try:
            held = await self._leases.heartbeat([r.lease for r in current])
        except Exception as exc:  # noqa: BLE001 - a missed beat is retried next tick
            log.warning("heartbeat failed: %s", str(exc) or type(exc).__name__)
            return
        renewed_at = self._monotonic()
        for running in current:
            if running.lost:
                continue
            if running.job.id in held:
                running.renew_at = renewed_at + running.renew_every
                running.lease_held_until = sent_at + running.job.visibility_timeout
            elif running.lease.token in self._running or running.lease.token in self._settling:
                running.lost = True
                self._lease_lost(running, "lease lost (cancelled, dead-lettered or expired)")
                self._interrupt(running)

    def _drop_unrenewed_leases(self, now: float) -> None:
        """Interrupt every job whose lease ran out without a renewal (its result, if it has
        one already, is still offered to the store, whose fencing refuses it if the job has
        moved on)."""
        for running in (*self._running.values(), *self._settling.values()):
            if not running.lost and now >= running.lease_held_until:
                running.lost = True
                self._lease_lost(running, "lease ran out: the store did not answer its renewals")
                self._interrupt(running)

    async def _drain(self) -> None:
        tasks = [
            r.task
            for r in (*self._running.values(), *self._settling.values())
            if r.task is not None
        ]
        if tasks:
            log.info(
                "stopping: waiting up to %gs for %d job(s)",
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
        interrupted = [r.task for r in leftovers if r.task]
        if interrupted:
            _, stuck = await asyncio.wait(interrupted, timeout=self._settings.interrupt_grace)
            for running in leftovers:
                if running.task in stuck:
                    log.warning(
                        "job %s: its handler did not stop when cancelled; handing it back "
                        "all the same",
                        running.job.id,
                    )
        leases = [r.lease for r in leftovers]
        try:
            released = await self._leases.release(leases)
        except Exception as exc:  # noqa: BLE001 - the leases expire and the scheduler recovers them
            log.warning("could not hand back %d job(s), leases will expire: %s", len(leases), exc)
            return
        log.info("handed back %d job(s) after the grace period", len(released))
        # A frozen ready queue does not hold the process's exit: the jobs are PENDING, and
        # the scheduler republishes a job whose hint is missing.
        hints = [ReadyHint.of(r.job) for r in leftovers if r.job.id in released]
        if self._direct is not None and hints:
            # It did not answer the worker's last try: another would most likely wait out
            # the whole grace for nothing.
            log.warning(
                "ready queue unreachable: not sending the hints of %d job(s) handed back, "
                "the scheduler will",
                len(hints),
            )
            return
        handed_back = "could not send the hints of %d job(s) handed back, the scheduler will"
        await self._send_within_grace(self._hints.push, hints, handed_back)

    def _report_utilization(self, queue: str) -> None:
        busy = sum(1 for r in self._running.values() if r.job.queue == queue)
        self._metrics.utilization(queue, busy, self._settings.concurrency)


def _claiming_from_store(reason: str) -> None:
    log.warning("ready queue unreachable (%s); claiming due jobs from the store", reason)


def _still_claiming_from_store(seconds: float, reason: str) -> None:
    log.warning(
        "ready queue still unreachable after %.0fs (%s); claiming due jobs from the store",
        seconds,
        reason,
    )


def _back_to_hints() -> None:
    log.info("ready queue answers again; back to hints")
