"""The scheduler's tick: fire due schedules, promote due retries, reap expired leases,
re-publish lost hints.

Every step works in bounded batches that skip rows another scheduler holds, so several
schedulers can run at once with no leader and no job handled twice. The steps on the store
alone keep their pace whatever the ready queue does: each call to it is bounded, and while
it does not answer the ticks go on without it.

Longer than most modules: the tick, its logs and spans, and the loop that drives it (its
pauses, the wake-up on new jobs' NOTIFY) stay together, as the worker's do in worker.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from taskforge.application.hints import HintDispatcher
from taskforge.application.ports import JobNotices, JobTracer, ReadyQueue, Sweeps, TraceSpan
from taskforge.application.reachability import QUEUE_DOWN_REMINDER, NotAnswering, Reachability
from taskforge.application.schedules import FireSchedules
from taskforge.application.timing import sleep_unless, wait_any
from taskforge.domain.job import ReadyHint, ReapedDeadLetter

log = logging.getLogger("taskforge.scheduler")

REQUEUE_SPAN = "taskforge.job.requeue"
"""The scheduler putting a job back in its queue: a retry that came due, or an expired
lease. A child of the span that enqueued the job."""

DEAD_LETTER_SPAN = "taskforge.job.dead_letter"
"""The scheduler dead-lettering a job whose lease expired on its last attempt (its worker
died mid-attempt): the end of the job's trace. A child of the span that enqueued the job."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerSettings:
    batch_size: int = 500
    tick_interval: float = 0.5
    republish_after: float = 30.0
    """Seconds a due PENDING job may wait with no fresh hint before it is published again."""
    retention_period: float = 7 * 24 * 3600.0
    """SUCCEEDED and CANCELLED jobs older than this (since they finished) are deleted;
    0 keeps them forever."""
    prune_interval: float = 1.0
    """Seconds between pruning sweeps, unless the last one came back full. Short, so that
    retention deletes what finished a retention period ago a little at a time, beside the
    load, rather than a minute's worth of jobs in one burst of full batches; a sweep with
    nothing to delete is one index probe (jobs_prunable_by_finished_at)."""
    queue_grace: float = 2.0
    """Seconds a call to the ready queue may take before it counts as unreachable (a frozen
    Redis answers nothing at all, and its client's timeouts and retries add up to tens of
    seconds): the tick goes on without it, so that no sweep on the store waits for it."""
    queue_retry_interval: float = 5.0
    """While the ready queue is unreachable, how often a tick tries it again; the ticks in
    between do not call it at all."""


@dataclass(frozen=True, slots=True)
class TickReport:
    promoted: int
    reaped: int
    dead_lettered: int
    republished: int
    resynced: int
    full: bool
    """A batch came back full: there is more to do, so the next tick should follow at once."""
    pruned: int = 0
    fired: int = 0
    """Jobs created by schedules whose ticks came due."""


class SchedulerTick:
    def __init__(
        self,
        sweeps: Sweeps,
        ready_queue: ReadyQueue,
        hints: HintDispatcher,
        settings: SchedulerSettings,
        tracer: JobTracer | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        fire_schedules: FireSchedules | None = None,
    ) -> None:
        """Hints leave through `hints`, each at its job's priority; `ready_queue` is only
        asked whether it lost its contents and how many hints it holds.
        `tracer` None: tracing is off and the tick does no tracing work at all.
        `monotonic` paces the retention sweeps (one per prune_interval while they keep up).
        `fire_schedules` None: no periodic jobs."""
        self._sweeps = sweeps
        self._fire_schedules = fire_schedules
        self._ready_queue = ready_queue
        self._hints = hints
        self._settings = settings
        self._tracer = tracer
        self._monotonic = monotonic
        self._next_prune = monotonic()
        self._queue = Reachability(
            settings,
            monotonic,
            down=_queue_down,
            up=_queue_up,
            still_down=_queue_still_down,
            remind_every=QUEUE_DOWN_REMINDER,
        )
        """Every call to the ready queue goes through it: bounded by queue_grace, and while
        the queue does not answer, tried again every queue_retry_interval only."""
        self._lost_late = False
        """A check that outlived its grace found the queue's contents lost (_late_check)."""

    async def __call__(self) -> TickReport:
        limit = self._settings.batch_size
        resynced = await self._resync_if_lost()
        # First: the jobs of due ticks are stored unpublished, so this tick's
        # never-published sweep sends their hints.
        schedules, fired, behind = await self._fire(limit)
        # Each sweep marks the jobs it returns published: should the tick fail before their
        # hints reach the queue, they are unmarked again, so that the next tick publishes
        # them instead of the stale-hint sweep republish_after later.
        marked: list[ReadyHint] = []
        try:
            promoted = await self._sweeps.promote_due(limit)
            marked += promoted
            reaped, dead_lettered = await self._sweeps.reap_expired(limit)
            marked += reaped
            never: list[ReadyHint] = []
            stale: list[ReadyHint] = []
            if self._queue.answers:
                # Jobs never published (delayed ones come due, jobs committed in an
                # application's own transaction) certainly have no hint: pushed without asking
                # the queue how many it holds. While the queue does not answer they stay
                # unpublished (workers claim due jobs from the store meanwhile) and are
                # published once it answers.
                never = await self._sweeps.find_never_published(limit)
                marked += never
                room = limit - len(never)  # one batch of republishing per tick, both kinds
                if room > 0:
                    stale = await self._missing_hints(room, promoted + reaped + never)
                    marked += stale
            pushed = await self._push_with_spans(promoted, reaped, marked)
        except BaseException:
            if marked:
                with contextlib.suppress(Exception):
                    await self._sweeps.mark_unpublished([hint.job_id for hint in marked])
            raise
        if not pushed:
            # The queue does not answer: unmarked, the first tick that finds it answering
            # again publishes them.
            await self._sweeps.mark_unpublished([hint.job_id for hint in marked])
        # Once the hints are settled: the store never returns these jobs again, so nothing
        # here may undo the tick's work.
        self._report_dead_lettered(dead_lettered)
        pruned = await self._prune(limit)
        await self._sweeps.fold_job_counts()
        republished = len(never) + len(stale)
        full = max(
            len(promoted),
            len(reaped) + len(dead_lettered),
            len(never) + len(stale),
            pruned,
            schedules,
        )
        return TickReport(
            len(promoted),
            len(reaped),
            len(dead_lettered),
            republished,
            resynced,
            full >= limit or behind,
            pruned,
            fired,
        )

    async def _resync_if_lost(self) -> int:
        """After the ready queue lost its contents, mark every pending job unpublished so
        that the sweeps publish them all again; how many. 0 when nothing was lost, or when
        the queue does not answer (a loss it hides meanwhile is found by the first check
        once it answers; should the check's write have reached it unseen, the stale-hint
        sweep still re-publishes the jobs whose hints are missing)."""
        if not self._queue.answers and not self._queue.retry_due():
            return 0
        try:
            intact = await self._queue.ask(self._ready_queue.check_intact, late=self._late_check)
        except NotAnswering:
            return 0
        if intact and not self._lost_late:
            return 0
        self._lost_late = False
        try:
            resynced = await self._sweeps.mark_unpublished()
        except BaseException:
            # Else no later tick would re-publish: the loss is known only once.
            with contextlib.suppress(Exception):
                await self._queue.ask(self._ready_queue.forget_intact)
            raise
        if resynced:
            log.warning("ready queue lost its contents; re-publishing %d pending job(s)", resynced)
        else:
            # A first start on an empty Redis looks the same, and needs nothing.
            log.info("ready queue is new or was emptied; no pending job to re-publish")
        return resynced

    def _late_check(self, intact: bool) -> None:
        """The answer of a check that outlived its grace: a loss it found (its write has
        marked the queue intact since) is resynced by the next tick that reaches the queue."""
        if not intact:
            self._lost_late = True

    async def _push_with_spans(
        self, promoted: list[ReadyHint], reaped: list[ReadyHint], hints: list[ReadyHint]
    ) -> bool:
        """Push `hints` (see _push), with a span for each job `promoted` or `reaped` when
        tracing is on; True when there are none."""
        if not hints:
            return True
        spans = [] if self._tracer is None else _requeue_spans(self._tracer, promoted, reaped)
        try:
            return await self._push(hints)
        finally:
            for span in spans:
                span.end()

    def _report_dead_lettered(self, dead_lettered: list[ReapedDeadLetter]) -> None:
        """A warning per job the store dead-lettered, in the worker's words, and with
        tracing on a span in the job's trace (when it has one)."""
        for job in dead_lettered:
            fields = {
                "job_id": str(job.job_id),
                "queue": job.queue,
                "job_type": job.job_type,
                "reason": job.reason,
            }
            if self._tracer is not None and job.traceparent is not None:
                span = _dead_letter_span(self._tracer, job)
                # A traceparent is version-traceid-spanid-flags.
                fields["trace_id"] = span.traceparent.split("-")[1]
            log.warning(
                "job %s (%s on %s) dead-lettered: %s; last error: %s",
                job.job_id,
                job.job_type,
                job.queue,
                job.reason,
                job.last_error,
                extra=fields,
            )

    async def _push(self, hints: list[ReadyHint]) -> bool:
        """Push `hints` if the ready queue answers; whether it took them."""
        if not self._queue.answers:
            return False
        try:
            await self._queue.ask(lambda: self._hints.push(hints))
        except NotAnswering:
            return False
        return True

    async def _fire(self, limit: int) -> tuple[int, int, bool]:
        """Fire due schedules: (schedules handled, jobs created, whether a catching-up one
        is still due). A failure is logged and leaves the sweeps that follow to run (retries
        and expired leases must not wait for periodic jobs)."""
        if self._fire_schedules is None:
            return 0, 0, False
        try:
            handled, created = await self._fire_schedules(limit)
        except Exception as exc:  # noqa: BLE001 - the next tick tries again
            log.warning("firing schedules failed, again next tick: %s", exc)
            return 0, 0, False
        return handled, created, self._fire_schedules.behind

    async def _missing_hints(self, room: int, pushing: list[ReadyHint]) -> list[ReadyHint]:
        """Hints for due jobs whose hint went missing (a worker died between pop and claim,
        a push that failed), at most `room`: per queue, as many as its due PENDING jobs
        outnumber the hints it holds and the ones this tick pushes anyway, taken from the
        jobs with no fresh hint. A hint that still waits in its list is not pushed again,
        so the lists of a queue nobody serves hold one hint per due job instead of growing
        every sweep, and its waiting jobs are not touched at all. Queues whose pending jobs,
        due or not, are all covered are ruled out from the maintained counts, without
        asking the store for anything else."""
        pending = await self._sweeps.count_pending()
        if not pending:
            return []
        queues = sorted(pending)
        try:
            held = await self._queue.ask(lambda: self._ready_queue.depth(queues))
        except NotAnswering:
            return []
        already = Counter(hint.queue for hint in pushing)
        covered = {queue: held.get(queue, 0) + already[queue] for queue in queues}
        short = {queue: hints for queue, hints in covered.items() if pending[queue] > hints}
        if not short:
            return []
        return await self._sweeps.find_unpublished(short, room, self._settings.republish_after)

    async def _prune(self, limit: int) -> int:
        if self._settings.retention_period <= 0 or self._monotonic() < self._next_prune:
            return 0
        pruned = await self._sweeps.prune_finished(self._settings.retention_period, limit)
        if pruned < limit:
            self._next_prune = self._monotonic() + self._settings.prune_interval
        return pruned


def _queue_down(reason: str) -> None:
    log.warning(
        "ready queue not answering (%s); sweeping on without it, hints wait until it answers",
        reason,
    )


def _queue_still_down(seconds: float, reason: str) -> None:
    log.warning(
        "ready queue still not answering after %.0fs (%s); hints wait until it answers",
        seconds,
        reason,
    )


def _queue_up() -> None:
    log.info("ready queue answers again; publishing the hints held back")


def _requeue_spans(
    tracer: JobTracer, promoted: list[ReadyHint], reaped: list[ReadyHint]
) -> list[TraceSpan]:
    """A span per re-queued job that belongs to a trace (it has a traceparent); each
    ends once the hints are pushed."""
    spans = []
    for reason, hints in (("retry due", promoted), ("lease expired", reaped)):
        for hint in hints:
            if hint.traceparent is not None:
                span = tracer.start_span(
                    REQUEUE_SPAN,
                    job_id=hint.job_id,
                    queue=hint.queue,
                    parent=hint.traceparent,
                    attributes={"reason": reason},
                )
                spans.append(span)
    return spans


def _dead_letter_span(tracer: JobTracer, job: ReapedDeadLetter) -> TraceSpan:
    """The ended span of `job`'s dead-lettering, failed with its last error."""
    span = tracer.start_span(
        DEAD_LETTER_SPAN,
        job_id=job.job_id,
        queue=job.queue,
        parent=job.traceparent,
        attributes={"reason": job.reason},
    )
    span.fail(job.last_error)
    span.end()
    return span


async def run_scheduler(
    tick: SchedulerTick,
    settings: SchedulerSettings,
    stop: asyncio.Event,
    woken: asyncio.Event | None = None,
) -> None:
    """Tick until `stop` is set. Outages are logged and retried with a growing pause.
    Setting `woken` ends the pause between ticks (new jobs are waiting for their hints)."""
    backoff = settings.tick_interval
    while not stop.is_set():
        if woken is not None:
            woken.clear()  # what wakes it from here on needs a tick of its own
        try:
            report = await tick()
            backoff = settings.tick_interval
        except Exception as exc:  # noqa: BLE001 - the scheduler outlives store and queue outages
            log.warning("scheduler tick failed, retrying in %.1fs: %s", backoff, exc)
            await sleep_unless(stop, backoff)
            backoff = min(backoff * 2, 5.0)
            continue
        if report.reaped or report.dead_lettered or report.resynced or report.pruned:
            log.info(
                "tick: promoted=%d reaped=%d dead_lettered=%d republished=%d resynced=%d "
                "pruned=%d fired=%d",
                report.promoted,
                report.reaped,
                report.dead_lettered,
                report.republished,
                report.resynced,
                report.pruned,
                report.fired,
            )
        if not report.full:
            await _pause(stop, woken, settings.tick_interval)


async def _pause(stop: asyncio.Event, woken: asyncio.Event | None, seconds: float) -> None:
    if woken is None:
        await sleep_unless(stop, seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wait_any(stop, woken), seconds)


LISTEN_RETRY = (0.1, 5.0)
"""The pause after the listener lost its connection: from the first, doubling up to the
second, seconds. Meanwhile the scheduler's sweeps still publish every job."""


async def listen_for_new_jobs(
    notices: JobNotices, woken: asyncio.Event, stop: asyncio.Event
) -> None:
    """Set `woken` whenever notices arrive, until `stop`; listen again after a loss."""
    first, most = LISTEN_RETRY
    backoff = first
    try:
        while not stop.is_set():
            try:
                await notices.listen()
                backoff = first
                while await _until_stop(notices.wait(), stop):
                    woken.set()
            except Exception as exc:  # noqa: BLE001 - the listener outlives store outages
                log.warning("listening for new jobs failed, again in %.1fs: %s", backoff, exc)
                await notices.close()
                await sleep_unless(stop, backoff)
                backoff = min(backoff * 2, most)
    finally:
        await notices.close()


async def _until_stop(call: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run `call` until it returns (True) or `stop` is set (False: it is cancelled)."""
    task = asyncio.ensure_future(call)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return False
    task.result()
    return True
