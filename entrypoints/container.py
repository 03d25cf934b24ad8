"""The one place where ports meet adapters: dishka providers, one per layer.

`SettingsProvider` turns the process's Settings into each part's settings;
`InfrastructureProvider` gives the system adapters (clock, ids, randomness, telemetry);
a backend provider gives the stores and queues (`MemoryProvider` here, Postgres and Redis
in `backends`); `ApplicationProvider` builds the use cases, the worker and the scheduler
from the ports alone; `PrometheusProvider` (in `prometheus`) the metrics exposition, for
the processes that serve it.

dishka builds a class from its constructor's annotations and ignores defaults: it would give
a `monotonic: Callable[[], float]` the random source (`RandomSource` is that type) and look
for a provider of a tuning value such as `max_catch_up`. The classes that take one (the
worker, the scheduler tick, the in-memory rate limiter and metrics store, the recorder,
FireSchedules) are built by a method here that leaves those parameters at their defaults.

Longer than most modules: every provider but the Postgres and Redis ones, so what each port
is given reads in one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from enum import StrEnum
from typing import Any

from dishka import (
    AnyOf,
    AsyncContainer,
    Provider,
    Scope,
    from_context,
    make_async_container,
    provide,
    provide_all,
)

from taskforge.adapters.cron import CronsimCalendar
from taskforge.adapters.memory.dashboard import InMemoryDeadLetterGroups, InMemoryJobCounts
from taskforge.adapters.memory.dead_letter_store import InMemoryDeadLetterStore
from taskforge.adapters.memory.job_store import InMemoryJobStore
from taskforge.adapters.memory.lease_store import InMemoryLeaseStore
from taskforge.adapters.memory.metrics import InMemoryMetricsStore
from taskforge.adapters.memory.operator_moves import InMemoryOperatorMoves
from taskforge.adapters.memory.queue_pauses import InMemoryQueuePauses
from taskforge.adapters.memory.rate_limiter import InMemoryRateLimiter
from taskforge.adapters.memory.ready_queue import InMemoryReadyQueue
from taskforge.adapters.memory.schedule_store import InMemoryScheduleStore
from taskforge.adapters.memory.state import InMemoryState
from taskforge.adapters.memory.sweeps import InMemorySweeps
from taskforge.adapters.memory.worker_registry import InMemoryWorkerRegistry
from taskforge.adapters.system import SystemClock, Uuid7Source, system_random
from taskforge.adapters.telemetry.tracing import OpenTelemetryTracing
from taskforge.application.dashboard import (
    GetOverview,
    ListDeadLetterGroupMembers,
    ListDeadLetterGroups,
    PurgeDeadLetterGroup,
    ReplayDeadLetterGroup,
    SampleThroughput,
    ThroughputHistory,
)
from taskforge.application.enqueue import EnqueueJob, EnqueueJobs
from taskforge.application.handlers import HandlerRegistry
from taskforge.application.hints import HintDispatcher
from taskforge.application.jobs import (
    CancelJob,
    DeadLetterJob,
    GetDeadLetter,
    GetJob,
    GetStats,
    ListDeadLetters,
    ListJobs,
    ReplayDeadLetter,
    RetryJobNow,
)
from taskforge.application.metrics import JobMetricsRecorder
from taskforge.application.metrics_publisher import MetricsPublisher
from taskforge.application.ports import (
    Clock,
    CronCalendar,
    DeadLetterGroups,
    DeadLetterStore,
    IdSource,
    JobCounts,
    JobNotices,
    JobStore,
    JobTracer,
    LeaseStore,
    MetricsStore,
    OperatorMoves,
    QueuePauses,
    RandomSource,
    RateLimiter,
    ReadyQueue,
    ScheduleStore,
    Sweeps,
    WorkerMetrics,
    WorkerRegistry,
)
from taskforge.application.queues import ListQueues, PauseQueue, ResumeQueue
from taskforge.application.scheduler import SchedulerSettings, SchedulerTick
from taskforge.application.schedules import (
    DeclareSchedules,
    DeleteSchedule,
    FireSchedules,
    GetSchedule,
    ListSchedules,
    PauseSchedule,
    ResumeSchedule,
    SaveSchedule,
)
from taskforge.application.worker import Worker, WorkerSettings
from taskforge.application.workers import ListWorkers
from taskforge.entrypoints.config import Settings


class Backend(StrEnum):
    MEMORY = "memory"
    """Everything in this process: `taskforge dev` and the unit tests."""
    POSTGRES_REDIS = "postgres+redis"
    """Production: Postgres is the source of truth, Redis carries dispatch."""


class SettingsProvider(Provider):
    """What the process was started with, and the settings of each part derived from it."""

    scope = Scope.APP

    settings = from_context(provides=Settings, scope=Scope.APP)
    handlers = from_context(provides=HandlerRegistry, scope=Scope.APP)
    backend = from_context(provides=Backend, scope=Scope.APP)

    @provide
    def scheduler_settings(self, settings: Settings) -> SchedulerSettings:
        return SchedulerSettings(
            batch_size=settings.scheduler_batch_size,
            tick_interval=settings.scheduler_tick,
            republish_after=settings.republish_after,
            retention_period=settings.retention_period,
        )

    @provide
    def worker_settings(self, settings: Settings) -> WorkerSettings:
        return worker_settings_of(settings)


def worker_settings_of(settings: Settings) -> WorkerSettings:
    """The worker's settings in a process started with `settings`, named uniquely."""
    return WorkerSettings(
        queues=settings.queues,
        concurrency=settings.worker_concurrency,
        owner=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
        host=socket.gethostname(),
        pid=os.getpid(),
        rate_limit_per_sec=settings.rate_limit_per_sec,
        queue_rate_limits=settings.queue_rate_limits,
        heartbeat=settings.worker_heartbeat,
        shutdown_grace=settings.worker_shutdown_grace,
        max_result_bytes=settings.max_result_bytes,
        max_snoozes=settings.max_snoozes,
        unknown_type_grace=settings.unknown_type_grace,
    )


class InfrastructureProvider(Provider):
    """The adapters every backend shares: time, ids, randomness and telemetry."""

    scope = Scope.APP

    clock = provide(SystemClock, provides=Clock)
    ids = provide(Uuid7Source, provides=IdSource)
    calendar = provide(CronsimCalendar, provides=CronCalendar)

    @provide
    def random(self) -> RandomSource:
        return system_random

    @provide(provides=AnyOf[JobMetricsRecorder, WorkerMetrics])
    def recorder(self) -> JobMetricsRecorder:
        return JobMetricsRecorder()

    @provide
    def tracing(self, settings: Settings) -> Iterator[OpenTelemetryTracing | None]:
        """None when tracing is off: nothing traces then, not even a no-op span. Spans
        still buffered are exported when the container closes."""
        if not settings.tracing_enabled:
            yield None
            return
        tracing = OpenTelemetryTracing(
            settings.service_name,
            settings.tracing_exporter,
            export_delay_ms=settings.tracing_export_delay_ms,
            max_queue_size=settings.tracing_max_queue_size,
            max_export_batch_size=settings.tracing_max_export_batch_size,
            export_timeout_ms=settings.tracing_export_timeout_ms,
        )
        try:
            yield tracing
        finally:
            tracing.shutdown()

    @provide
    def tracer(self, tracing: OpenTelemetryTracing | None) -> JobTracer | None:
        return tracing


class MemoryProvider(Provider):
    """The embedded backend: every store role a view of one InMemoryState."""

    scope = Scope.APP

    state = provide(InMemoryState)
    job_store = provide(InMemoryJobStore, provides=JobStore)
    lease_store = provide(InMemoryLeaseStore, provides=LeaseStore)
    sweeps = provide(InMemorySweeps, provides=Sweeps)
    operator_moves = provide(InMemoryOperatorMoves, provides=OperatorMoves)
    queue_pauses = provide(InMemoryQueuePauses, provides=QueuePauses)
    schedules = provide(InMemoryScheduleStore, provides=ScheduleStore)
    worker_registry = provide(InMemoryWorkerRegistry, provides=WorkerRegistry)
    dead_letters = provide(InMemoryDeadLetterStore, provides=DeadLetterStore)
    job_counts = provide(InMemoryJobCounts, provides=JobCounts)
    dead_letter_groups = provide(InMemoryDeadLetterGroups, provides=DeadLetterGroups)
    ready_queue = provide(InMemoryReadyQueue, provides=AnyOf[InMemoryReadyQueue, ReadyQueue])

    @provide
    def rate_limiter(self) -> RateLimiter:
        return InMemoryRateLimiter()

    @provide
    def metrics_store(self) -> MetricsStore:
        return InMemoryMetricsStore()

    @provide
    def job_notices(self) -> JobNotices | None:
        """Only a database connection enqueues outside TaskForge; here nothing can."""
        return None


HINT_DRAIN_SECONDS = 5.0
"""At shutdown, how long the last hints may take to reach Redis; the scheduler publishes
any still unpushed."""


class ApplicationProvider(Provider):
    """Use cases, the worker and the scheduler, each built from the ports it uses."""

    scope = Scope.APP

    @provide
    async def hints(self, ready_queue: ReadyQueue) -> AsyncIterator[HintDispatcher]:
        """Pushes its last hints before the ready queue's client closes."""
        hints = HintDispatcher(ready_queue)
        yield hints
        await _within_drain_time(hints.drain())

    @provide
    async def enqueue_job(
        self,
        jobs: JobStore,
        hints: HintDispatcher,
        tracer: JobTracer | None,
        settings: Settings,
    ) -> AsyncIterator[EnqueueJob]:
        """Stores its waiting jobs before the dispatcher takes its last hints."""
        enqueue = EnqueueJob(jobs, hints, tracer, settings.max_waiting_enqueues)
        yield enqueue
        await _within_drain_time(enqueue.drain())

    use_cases = provide_all(
        EnqueueJobs,
        GetJob,
        ListJobs,
        CancelJob,
        RetryJobNow,
        DeadLetterJob,
        ReplayDeadLetter,
        ListDeadLetters,
        GetDeadLetter,
        PauseQueue,
        ListWorkers,
        ResumeQueue,
        SaveSchedule,
        DeclareSchedules,
        GetSchedule,
        ListSchedules,
        DeleteSchedule,
        PauseSchedule,
        ResumeSchedule,
        ThroughputHistory,
        SampleThroughput,
        GetOverview,
        ListDeadLetterGroups,
        ListDeadLetterGroupMembers,
        ReplayDeadLetterGroup,
        PurgeDeadLetterGroup,
    )

    @provide
    def fire_schedules(
        self, schedules: ScheduleStore, calendar: CronCalendar, ids: IdSource
    ) -> FireSchedules:
        return FireSchedules(schedules, calendar, ids)

    @provide
    def list_queues(self, jobs: JobStore, pauses: QueuePauses, settings: Settings) -> ListQueues:
        return ListQueues(jobs, pauses, settings.queue_name)

    @provide
    def stats(
        self,
        jobs: JobStore,
        dead_letters: DeadLetterStore,
        ready_queue: ReadyQueue,
        settings: Settings,
    ) -> GetStats:
        return GetStats(jobs, dead_letters, ready_queue, settings.queue_name)

    @provide
    def scheduler_tick(
        self,
        sweeps: Sweeps,
        ready_queue: ReadyQueue,
        hints: HintDispatcher,
        settings: SchedulerSettings,
        tracer: JobTracer | None,
        fire_schedules: FireSchedules,
    ) -> SchedulerTick:
        return SchedulerTick(
            sweeps, ready_queue, hints, settings, tracer, fire_schedules=fire_schedules
        )

    @provide
    def worker(
        self,
        leases: LeaseStore,
        ready_queue: ReadyQueue,
        hints: HintDispatcher,
        rate_limiter: RateLimiter,
        handlers: HandlerRegistry,
        metrics: WorkerMetrics,
        clock: Clock,
        random: RandomSource,
        tracer: JobTracer | None,
        settings: WorkerSettings,
        workers: WorkerRegistry,
    ) -> Worker:
        return Worker(
            leases=leases,
            ready_queue=ready_queue,
            hints=hints,
            rate_limiter=rate_limiter,
            handlers=handlers,
            metrics=metrics,
            clock=clock,
            random=random,
            tracer=tracer,
            settings=settings,
            workers=workers,
        )

    @provide
    def metrics_publisher(
        self,
        recorder: JobMetricsRecorder,
        store: MetricsStore,
        worker: WorkerSettings,
        settings: Settings,
    ) -> MetricsPublisher:
        """Publishes the worker's counts to the cluster-wide store, under its lease owner."""
        return MetricsPublisher(
            recorder, store, worker_id=worker.owner, interval=settings.metrics_flush_interval
        )


async def _within_drain_time(drained: Coroutine[Any, Any, None]) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(drained, HINT_DRAIN_SECONDS)


def production_providers() -> list[Provider]:
    from taskforge.entrypoints.backends import PostgresProvider, RedisProvider

    return [PostgresProvider(), RedisProvider()]


def serves_metrics(settings: Settings, roles: set[str]) -> bool:
    """Whether a process running `roles` serves Prometheus metrics: the API always (GET
    /metrics), a worker or scheduler only on METRICS_ADDR."""
    return "api" in roles or settings.metrics_addr is not None


def make_container(
    settings: Settings,
    backend: Backend,
    handlers: HandlerRegistry,
    overrides: Sequence[Provider] = (),
    *,
    prometheus: bool = True,
) -> AsyncContainer:
    """The container for `backend`; `overrides` come last, so providers they mark
    `override=True` replace the backend's (tests inject failing adapters this way).
    `prometheus` False leaves out the exposition's providers, and prometheus_client with
    them (see serves_metrics)."""
    providers: list[Provider] = [SettingsProvider(), InfrastructureProvider()]
    if prometheus:
        from taskforge.entrypoints.prometheus import PrometheusProvider

        providers.append(PrometheusProvider())
    if backend is Backend.MEMORY:
        providers.append(MemoryProvider())
    else:
        providers += production_providers()
    providers.append(ApplicationProvider())
    providers += overrides
    return make_async_container(
        *providers, context={Settings: settings, HandlerRegistry: handlers, Backend: backend}
    )
