"""An in-process TaskForge for integration tests: the API, a worker and a scheduler on the
in-memory backend, as `taskforge dev` runs them, in the test's own event loop, with a
`taskforge.Client` that reaches the API without a port.

    async with InMemoryTaskForge() as tf:
        job = await send_email.enqueue(tf.client, Email(to="a@b.com"))
        await tf.drain()
        assert (await tf.client.get(job.id)).state == "SUCCEEDED"

Exposed as `taskforge.testing.InMemoryTaskForge`, loaded on first use: a test that only
calls `taskforge.testing.perform` does not load the web framework.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from types import TracebackType

import httpx
from dishka import AsyncContainer, Provider, Scope, provide

from taskforge.adapters.memory.state import InMemoryState
from taskforge.application.handlers import HandlerRegistry, default_registry
from taskforge.application.ports import Clock
from taskforge.application.worker import Worker, WorkerSettings
from taskforge.client import Client
from taskforge.domain.job import Job
from taskforge.domain.states import JobState
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.container import Backend, make_container, worker_settings_of
from taskforge.entrypoints.http.app import create_app
from taskforge.entrypoints.runtime import schedule, serving_declared_queues, work

__all__ = ["InMemoryTaskForge", "SkippingClock"]

BASE_URL = "http://taskforge.test"
"""The client's base URL: a name only, as no request leaves the process."""
DRAIN_POLL = 0.005
"""Seconds between drain's looks at the jobs."""
STOP_WITHIN = 10.0
"""Seconds the worker and the scheduler get to stop when the harness exits."""
WORKER_POLL = 0.05
"""The worker's longest wait for a hint, which bounds how long it takes to stop."""
NOT_RUNNING = "InMemoryTaskForge is not running: use it as `async with InMemoryTaskForge() as tf`"
UNFINISHED_SHOWN = 10
"""Jobs a drain timeout names; it counts the rest."""

SETTINGS = Settings(
    scheduler_tick=0.01,  # a retry due is PENDING again within 10 ms
    retention_period=0,  # a test reads every job it made, however far the clock skipped
    worker_shutdown_grace=0,  # exiting interrupts running handlers at once
    ui_enabled=False,
)
"""Production's defaults, but for what makes a test slow or forgetful."""


class SkippingClock:
    """The system clock, moved forward by `skip_to`: the harness's store, worker and
    scheduler read it, so that drain can skip a retry's backoff instead of waiting for it."""

    def __init__(self) -> None:
        self._skipped = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._skipped

    @property
    def skipped(self) -> timedelta:
        """How far this clock runs ahead of the system clock."""
        return self._skipped

    def skip_to(self, instant: datetime) -> None:
        """Move forward to `instant`; one already past changes nothing."""
        self._skipped += max(instant - self.now(), timedelta(0))


class _Harness(Provider):
    scope = Scope.APP

    def __init__(self, clock: SkippingClock) -> None:
        super().__init__()
        self._clock = clock

    @provide(override=True)
    def clock(self) -> Clock:
        return self._clock

    @provide(override=True)
    def worker_settings(self, settings: Settings) -> WorkerSettings:
        return dataclasses.replace(worker_settings_of(settings), poll_timeout=WORKER_POLL)


class InMemoryTaskForge:
    """The API (create_app), a worker and a scheduler on one in-memory store, as asyncio
    tasks of the running loop; `async with` starts them and stops them all, also when the
    block raises. Nothing listens on a port, and no Postgres or Redis is needed.

    The worker runs `registry`'s handlers (default: `taskforge.default_registry`, which
    `@taskforge.handler` and `@taskforge.task` fill), async ones on the loop, plain ones on
    threads, and serves the queues they declare, as `taskforge worker --handlers` does.
    Schedules declared in code are declared and fire as in production, on the harness's
    clock. Retention is off: every job stays readable."""

    def __init__(self, registry: HandlerRegistry | None = None) -> None:
        self.registry = default_registry if registry is None else registry
        self.clock = SkippingClock()
        self.settings = serving_declared_queues(SETTINGS, self.registry)
        self._stop = asyncio.Event()
        self._roles: list[asyncio.Task[None]] = []
        self._container: AsyncContainer | None = None
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        """A `taskforge.Client` whose requests the API answers in this process."""
        if self._client is None:
            raise RuntimeError(NOT_RUNNING)
        return self._client

    async def __aenter__(self) -> InMemoryTaskForge:
        if self._container is not None:
            raise RuntimeError("an InMemoryTaskForge runs once")
        self._container = make_container(
            self.settings, Backend.MEMORY, self.registry, [_Harness(self.clock)]
        )
        try:
            self._state = await self._container.get(InMemoryState)
            self._worker = await self._container.get(Worker)
            app = create_app(self._container, self.settings)
            # Litestar's ASGI signature is narrower than the generic one httpx declares.
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            self._client = Client(BASE_URL, transport=transport)
            self._roles = [
                asyncio.create_task(
                    work(self._container, self.settings, self._stop), name="worker"
                ),
                asyncio.create_task(schedule(self._container, self._stop), name="scheduler"),
            ]
        except BaseException:
            await self._close()  # the error that stopped the start is the one to see
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        failure = await self._close()
        if failure is not None and exc is None:
            raise failure

    async def _close(self) -> BaseException | None:
        """Stop the worker (its running handlers are interrupted and their jobs handed back)
        and the scheduler, then close the client and the container; the error a role
        stopped with, if one did."""
        self._stop.set()
        failure: BaseException | None = None
        if self._roles:
            done, running = await asyncio.wait(self._roles, timeout=STOP_WITHIN)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            failure = next(
                (t.exception() for t in done if not t.cancelled() and t.exception()), None
            )
        if self._client is not None:
            await self._client.aclose()
        if self._container is not None:
            await self._container.close()
        return failure

    async def drain(self, timeout: float = 10.0, *, with_scheduled: bool = False) -> None:
        """Run jobs until none is due or running, then return: every job is SUCCEEDED, DLQ or
        CANCELLED, or PENDING and due later (enqueued with a delay, snoozed, handed back),
        and no failure hook is still being called. Jobs that jobs enqueue run too.

        A retry is not waited for: when nothing else is due or running, the clock skips to
        the next retry's time, so a failing job runs its attempts at once and ends in DLQ.
        `with_scheduled` skips to jobs due later the same way, and runs them too.

        TimeoutError, naming the unfinished jobs, when that takes longer than `timeout`
        seconds (a handler that does not return, a queue the worker does not serve ...)."""
        if self._client is None:
            raise RuntimeError(NOT_RUNNING)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._raise_if_a_role_failed()
            now = self.clock.now()
            jobs = list(self._state.jobs.values())
            if not any(_runs_now(job, now) for job in jobs):
                waiting = [job.next_run_at for job in jobs if _waits(job, with_scheduled)]
                if not waiting and not self._worker.failure_hooks_in_flight:
                    return
                if waiting:
                    self.clock.skip_to(min(waiting))
            if loop.time() >= deadline:
                raise TimeoutError(self._unfinished(timeout, with_scheduled))
            await asyncio.sleep(DRAIN_POLL)

    def _raise_if_a_role_failed(self) -> None:
        for task in self._roles:
            if task.done() and not task.cancelled() and (error := task.exception()):
                raise RuntimeError(f"the harness's {task.get_name()} stopped") from error

    def _unfinished(self, timeout: float, with_scheduled: bool) -> str:
        now = self.clock.now()
        jobs = [
            job
            for job in self._state.jobs.values()
            if _runs_now(job, now) or _waits(job, with_scheduled)
        ]
        lead = f"drain did not finish within {timeout:g}s"
        if not jobs:
            hooks = self._worker.failure_hooks_in_flight
            return f"{lead}: the failure hooks of {hooks} failed attempt(s) are still running"
        shown = "; ".join(self._described(job, now) for job in jobs[:UNFINISHED_SHOWN])
        if len(jobs) > UNFINISHED_SHOWN:
            shown += f"; and {len(jobs) - UNFINISHED_SHOWN} more"
        return f"{lead}: {len(jobs)} job(s) unfinished: {shown}"

    def _described(self, job: Job, now: datetime) -> str:
        text = (
            f"{job.id} ({job.job_type} on {job.queue}) {job.state}, "
            f"attempt {job.attempt_count} of {job.policy.max_attempts}"
        )
        if job.state is JobState.PENDING and job.next_run_at <= now:
            if job.queue in self._state.paused_queues:
                text += ": its queue is paused"
            elif job.queue not in self.settings.queues:
                served = ", ".join(self.settings.queues)
                text += f": the worker does not serve its queue (it serves {served})"
            elif job.job_type not in self.registry:
                text += ": no handler is registered for its jobType"
        if job.last_error:
            text += f"; last error: {job.last_error}"
        return text


def _runs_now(job: Job, now: datetime) -> bool:
    """Running, or due to be claimed."""
    return job.state is JobState.RUNNING or (
        job.state is JobState.PENDING and job.next_run_at <= now
    )


def _waits(job: Job, with_scheduled: bool) -> bool:
    """Due later, and drained all the same: a retry, and with `with_scheduled` any job."""
    return job.state is JobState.FAILED or (with_scheduled and job.state is JobState.PENDING)
