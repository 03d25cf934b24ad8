"""Use cases on jobs and dead letters: one class each, built from ports, one public call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from uuid import UUID

from taskforge.application.ports import (
    DeadLetterStore,
    JobRepository,
    JobTracer,
    ListFilter,
    ReadyQueue,
)
from taskforge.domain.errors import DeadLetterNotFound, JobNotFound, Unavailable
from taskforge.domain.job import DeadLetter, Job, NewJob, QueueStats, ReadyHint
from taskforge.domain.states import JobState
from taskforge.domain.validation import Page

log = logging.getLogger("taskforge.jobs")

ENQUEUE_SPAN = "taskforge.job.enqueue"
"""Storing a job: its traceparent (stored with the job) names this span, so every later
span of the job (re-queues, attempts) is its child."""


async def publish(ready_queue: ReadyQueue, jobs: Sequence[Job]) -> bool:
    """Push hints for jobs that are due now. A failed push is only logged (and False): the
    job is already committed, and the scheduler re-publishes jobs whose hint went missing."""
    hints = [ReadyHint(job.queue, job.id) for job in jobs if job.state is JobState.PENDING]
    if not hints:
        return True
    try:
        await ready_queue.push(hints)
    except Exception as exc:  # noqa: BLE001 - any dispatch failure is recovered by the scheduler
        log.warning("could not publish %d hint(s); the scheduler will: %s", len(hints), exc)
        return False
    return True


def _is_due_at_creation(job: Job) -> bool:
    """The store's own rule for "publish a hint now": due when it was stored (a runAt in the
    past counts). Later ones are published by the scheduler when they come due."""
    return job.next_run_at <= job.created_at


class HintPublisher:
    """Pushes the hints of stored jobs in the background, in order; hints sent while a push
    is in flight go together in the next one. Callers never wait for Redis: their jobs are
    committed, and a hint that cannot be pushed only delays its job until the scheduler
    re-publishes it. At most MAX_PENDING hints wait; beyond that new ones are dropped (the
    scheduler publishes those jobs too), so a Redis outage cannot grow memory without end."""

    MAX_PENDING = 100_000
    PUSH_SIZE = 5_000
    """Hints per push: a huge backlog goes out in several round trips, not one giant one."""

    def __init__(self, ready_queue: ReadyQueue) -> None:
        self._ready_queue = ready_queue
        self._pending: list[Job] = []
        self._pusher: asyncio.Task[None] | None = None
        self._overflowing = False

    def send(self, jobs: Sequence[Job]) -> None:
        """Queue the hints of `jobs` for pushing; returns at once."""
        room = self.MAX_PENDING - len(self._pending)
        if len(jobs) > room:
            if not self._overflowing:  # once per backlog, not once per batch
                log.warning(
                    "%d hint(s) wait for Redis already; leaving new ones to the scheduler",
                    len(self._pending),
                )
            self._overflowing = True
            jobs = jobs[: max(room, 0)]
        if not jobs:
            return
        self._pending.extend(jobs)
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.create_task(self._push_pending(), name="taskforge-hints")

    async def _push_pending(self) -> None:
        try:
            await self._push_all()
        finally:
            self._overflowing = False

    async def _push_all(self) -> None:
        while self._pending:
            jobs = self._pending[: self.PUSH_SIZE]
            del self._pending[: len(jobs)]
            try:
                pushed = await publish(self._ready_queue, jobs)
            except asyncio.CancelledError:
                log.warning(
                    "stopped with %d hint(s) unpushed; the scheduler will publish them",
                    len(jobs) + len(self._pending),
                )
                raise
            if not pushed and self._pending:
                # Redis is failing: the next push would most likely wait out the same
                # timeouts. The scheduler publishes these jobs too.
                log.warning("leaving %d more hint(s) to the scheduler", len(self._pending))
                self._pending.clear()

    async def drain(self) -> None:
        """Wait until every hint sent so far is pushed or given up on (at most one failing
        push). Cancelling the wait leaves the pushes going."""
        while (pusher := self._pusher) is not None and not pusher.done():
            await asyncio.wait({pusher})


@dataclass(frozen=True, slots=True)
class Enqueued:
    job: Job
    created: bool
    """False when an existing job with the same idempotency key was returned."""


async def traced(
    tracer: JobTracer | None,
    new_jobs: Sequence[NewJob],
    store: Callable[[Sequence[NewJob]], Awaitable[list[Enqueued]]],
) -> list[Enqueued]:
    """Store the jobs, each in an enqueue span (a child of the caller's current span) whose
    traceparent the job keeps. A job that already existed (same idempotency key) keeps its
    own. Without a tracer, just store them."""
    if tracer is None:
        return await store(new_jobs)
    spans = [
        tracer.start_span(
            ENQUEUE_SPAN, job_id=job.id, queue=job.queue, attributes={"job_type": job.job_type}
        )
        for job in new_jobs
    ]
    try:
        results = await store(
            [
                replace(job, traceparent=span.traceparent)
                for job, span in zip(new_jobs, spans, strict=True)
            ]
        )
        for span, result in zip(spans, results, strict=True):
            if not result.created:
                span.set_attribute("job_id", str(result.job.id))
                span.set_attribute("existing", True)
        return results
    except Exception as exc:
        for span in spans:
            span.fail(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        for span in spans:
            span.end()


class EnqueueJobs:
    """Batch enqueue: one write for all jobs, one push for all hints. The caller has its
    answer once the jobs are committed; the push follows (a lost hint only delays a job
    until the scheduler re-publishes it)."""

    def __init__(
        self, jobs: JobRepository, ready_queue: ReadyQueue, tracer: JobTracer | None = None
    ) -> None:
        """`tracer` None: tracing is off and enqueueing does no tracing work at all."""
        self._jobs = jobs
        self._hints = HintPublisher(ready_queue)
        self._tracer = tracer

    async def __call__(self, new_jobs: Sequence[NewJob]) -> list[Enqueued]:
        return await traced(self._tracer, new_jobs, self._store)

    async def _store(self, new_jobs: Sequence[NewJob]) -> list[Enqueued]:
        results = await self._jobs.add_many(new_jobs)
        answers = [Enqueued(job, created) for job, created in results]
        _send_hints(self._hints, results)
        return answers

    async def drain(self) -> None:
        """Wait for the last hints to be pushed (at shutdown)."""
        await self._hints.drain()


Waiter = tuple[NewJob, asyncio.Future[Enqueued]]
"""A caller of EnqueueJob: its job, and the future its answer is set on."""


class EnqueueJob:
    """Enqueue one job. Calls that overlap share writes: while one batch is being stored,
    the calls that arrive queue up and are stored together by the next batch (one insert,
    one push), so concurrent callers cost far fewer round trips and a lone caller waits
    for nothing. Each caller gets its own result or its own error: one job's failure never
    changes another's answer, and every caller is answered whatever goes wrong."""

    MAX_BATCH = 500

    def __init__(
        self,
        jobs: JobRepository,
        ready_queue: ReadyQueue,
        tracer: JobTracer | None = None,
        max_waiting: int = 5_000,
    ) -> None:
        """`tracer` None: tracing is off and enqueueing does no tracing work at all.
        `max_waiting`: calls that may wait for the store at once; one more is refused with
        Unavailable at once, so a stalled store cannot pile up callers without end."""
        self._jobs = jobs
        self._hints = HintPublisher(ready_queue)
        self._tracer = tracer
        self._max_waiting = max_waiting
        self._waiting: list[Waiter] = []
        self._writer: asyncio.Task[None] | None = None

    async def __call__(self, new_job: NewJob) -> Enqueued:
        if self._tracer is None:
            return await self._store(new_job)
        # The span starts here, in the caller's context, so it is a child of the caller's.
        [result] = await traced(self._tracer, [new_job], self._store_each)
        return result

    async def _store_each(self, new_jobs: Sequence[NewJob]) -> list[Enqueued]:
        return [await self._store(new_job) for new_job in new_jobs]

    async def _store(self, new_job: NewJob) -> Enqueued:
        if len(self._waiting) >= self._max_waiting:
            raise Unavailable(
                "job store",
                f"{len(self._waiting)} enqueues already wait for it (MAX_WAITING_ENQUEUES)",
            )
        future: asyncio.Future[Enqueued] = asyncio.get_running_loop().create_future()
        self._waiting.append((new_job, future))
        if self._writer is None or self._writer.done():
            # A task of its own, so a caller that gives up cannot abandon the others' jobs.
            self._writer = asyncio.create_task(self._write_batches(), name="taskforge-enqueue")
        return await asyncio.shield(future)

    async def _write_batches(self) -> None:
        """Store the waiting calls, a batch at a time, until none wait. A batch whose write
        fails in an unforeseen way fails its callers that have no answer yet, and the writer
        goes on with the next batch. Cancelled (at shutdown), it fails every caller still
        waiting (503: retry later; their jobs may or may not be stored) and stops."""
        while self._waiting:
            batch = self._waiting[: self.MAX_BATCH]
            del self._waiting[: len(batch)]
            try:
                await self._write(batch)
            except Exception as exc:
                log.exception("enqueue write failed; its callers get the error")
                _fail_all(batch, exc)
            except BaseException:
                waiting, self._waiting = [*batch, *self._waiting], []
                _fail_all(waiting, Unavailable("job store", "enqueueing stopped (shutdown)"))
                raise

    async def _write(self, batch: list[Waiter]) -> None:
        """Store `batch` and answer each of its callers. When the store refuses the batch
        for another reason than an outage, each job is stored alone, so only the job that
        caused it fails (a refused batch stored nothing)."""
        try:
            stored = await self._jobs.add_many([new_job for new_job, _ in batch])
        except Unavailable as exc:
            _fail_all(batch, exc)
            return
        except Exception as exc:  # noqa: BLE001 - isolate the job that caused it
            if len(batch) == 1:
                _fail_all(batch, exc)
                return
            for waiter in batch:
                try:
                    await self._write([waiter])
                except Exception as exc:
                    log.exception("enqueue write failed; its caller gets the error")
                    _fail_all([waiter], exc)
            return
        if len(stored) != len(batch):
            raise RuntimeError(f"the store answered {len(stored)} results for {len(batch)} jobs")
        # Callers have their answer once the jobs are committed; the hints follow in the
        # background (a lost hint only delays a job until the scheduler re-publishes it).
        for (_, future), (job, created) in zip(batch, stored, strict=True):
            if not future.done():
                future.set_result(Enqueued(job, created))
        _send_hints(self._hints, stored)

    async def drain(self) -> None:
        """Wait until every call made so far is stored and its hints pushed (at shutdown).
        Cancelling the wait leaves the writes going."""
        while (writer := self._writer) is not None and not writer.done():
            await asyncio.wait({writer})
        await self._hints.drain()


def _fail_all(batch: Sequence[Waiter], exc: BaseException) -> None:
    """Fail the callers of `batch` that have no answer yet."""
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


def _send_hints(hints: HintPublisher, stored: Sequence[tuple[Job, bool]]) -> None:
    """Queue the hints of the created jobs that are due now. Never raises: the jobs are
    committed and their callers answered; a job whose hint is not sent waits for the
    scheduler to publish it."""
    due = []
    for job, created in stored:
        try:
            if created and _is_due_at_creation(job):
                due.append(job)
        except Exception:
            log.exception("cannot tell if job %s is due; the scheduler will publish it", job.id)
    hints.send(due)


class GetJob:
    def __init__(self, jobs: JobRepository) -> None:
        self._jobs = jobs

    async def __call__(self, job_id: UUID) -> Job:
        job = await self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job


class ListJobs:
    def __init__(self, jobs: JobRepository) -> None:
        self._jobs = jobs

    async def __call__(self, where: ListFilter, page: Page) -> tuple[list[Job], int]:
        return await self._jobs.find(where, page)


class CancelJob:
    def __init__(self, jobs: JobRepository) -> None:
        self._jobs = jobs

    async def __call__(self, job_id: UUID, reason: str | None) -> Job:
        return await self._jobs.cancel(job_id, reason)


class MoveJobToDeadLetter:
    def __init__(self, jobs: JobRepository) -> None:
        self._jobs = jobs

    async def __call__(self, job_id: UUID, reason: str | None) -> Job:
        return await self._jobs.dead_letter(job_id, reason)


class RetryJob:
    def __init__(self, jobs: JobRepository, ready_queue: ReadyQueue) -> None:
        self._jobs = jobs
        self._ready_queue = ready_queue

    async def __call__(self, job_id: UUID) -> Job:
        job = await self._jobs.retry(job_id)
        await publish(self._ready_queue, [job])
        return job


class ReplayDeadLetter:
    def __init__(self, jobs: JobRepository, ready_queue: ReadyQueue) -> None:
        self._jobs = jobs
        self._ready_queue = ready_queue

    async def __call__(self, job_id: UUID) -> Job:
        job = await self._jobs.replay(job_id)
        await publish(self._ready_queue, [job])
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
        jobs: JobRepository,
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
