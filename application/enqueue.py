"""Enqueueing: storing new jobs (one at a time or in batches) and sending their hints."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from taskforge.application.hints import HintDispatcher
from taskforge.application.ports import Added, JobStore, JobTracer
from taskforge.domain.errors import Unavailable
from taskforge.domain.new_job import NewJob

log = logging.getLogger("taskforge.jobs")

ENQUEUE_SPAN = "taskforge.job.enqueue"
"""Storing a job: its traceparent (stored with the job) names this span, so every later
span of the job (re-queues, attempts) is its child."""


Enqueued = Added
"""An enqueue's answer for one job is the store's own: the job, whether this call created it
(False: an existing job holding its idempotency or unique key was returned), and whether it
needed its hint now. Passed on as it is, with no second object per job."""


async def store_in_spans(
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
                job.with_traceparent(span.traceparent)
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
        self, jobs: JobStore, hints: HintDispatcher, tracer: JobTracer | None = None
    ) -> None:
        """`tracer` None: tracing is off and enqueueing does no tracing work at all."""
        self._jobs = jobs
        self._hints = hints
        self._tracer = tracer

    async def __call__(self, new_jobs: Sequence[NewJob]) -> list[Enqueued]:
        return await store_in_spans(self._tracer, new_jobs, self._store)

    async def _store(self, new_jobs: Sequence[NewJob]) -> list[Enqueued]:
        stored = await self._jobs.add_many(new_jobs)
        _send_hints(self._hints, stored)
        return stored

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
        jobs: JobStore,
        hints: HintDispatcher,
        tracer: JobTracer | None = None,
        max_waiting: int = 5_000,
    ) -> None:
        """`tracer` None: tracing is off and enqueueing does no tracing work at all.
        `max_waiting`: calls that may wait for the store at once; one more is refused with
        Unavailable at once, so a stalled store cannot pile up callers without end."""
        self._jobs = jobs
        self._hints = hints
        self._tracer = tracer
        self._max_waiting = max_waiting
        self._waiting: list[Waiter] = []
        self._writer: asyncio.Task[None] | None = None

    async def __call__(self, new_job: NewJob) -> Enqueued:
        if self._tracer is None:
            return await self._store(new_job)
        # The span starts here, in the caller's context, so it is a child of the caller's.
        [result] = await store_in_spans(self._tracer, [new_job], self._store_each)
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
        for (_, future), answer in zip(batch, stored, strict=True):
            if not future.done():
                future.set_result(answer)
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


def _send_hints(hints: HintDispatcher, stored: Sequence[Added]) -> None:
    """Queue the hints the store asked for: those of the jobs it created due and stored as
    published. Enqueueing applies no rule of its own, so the jobs it hints are exactly the
    ones the scheduler's never-published sweep leaves alone."""
    hints.send([added.job for added in stored if added.needs_hint])
