"""The one place where ports meet adapters: dishka providers per backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from enum import StrEnum

from dishka import (
    AnyOf,
    AsyncContainer,
    Provider,
    Scope,
    from_context,
    make_async_container,
    provide,
)

from taskforge.adapters.memory.jobs import (
    InMemoryDeadLetterStore,
    InMemoryJobRepository,
    InMemoryState,
)
from taskforge.adapters.memory.metrics import InMemoryMetricsStore
from taskforge.adapters.memory.rate_limiter import InMemoryRateLimiter
from taskforge.adapters.memory.ready_queue import InMemoryReadyQueue
from taskforge.adapters.system import SystemClock, Uuid7Source, system_random
from taskforge.adapters.telemetry.metrics import HttpMetrics, PrometheusMetrics
from taskforge.adapters.telemetry.tracing import OpenTelemetryTracing
from taskforge.application.handlers import HandlerRegistry
from taskforge.application.jobs import (
    CancelJob,
    EnqueueJob,
    EnqueueJobs,
    GetDeadLetter,
    GetJob,
    GetStats,
    ListDeadLetters,
    ListJobs,
    MoveJobToDeadLetter,
    ReplayDeadLetter,
    RetryJob,
)
from taskforge.application.metrics import JobMetricsRecorder
from taskforge.application.ports import (
    Clock,
    DeadLetterStore,
    IdSource,
    JobRepository,
    JobTracer,
    MetricsStore,
    RandomSource,
    RateLimiter,
    ReadyQueue,
    WorkerMetrics,
)
from taskforge.application.scheduler import SchedulerSettings, SchedulerTick
from taskforge.entrypoints.config import Settings


class Backend(StrEnum):
    MEMORY = "memory"
    """Everything in this process: `taskforge dev` and the unit tests."""
    POSTGRES_REDIS = "postgres+redis"
    """Production: Postgres is the source of truth, Redis carries dispatch."""


class CoreProvider(Provider):
    scope = Scope.APP

    settings = from_context(provides=Settings, scope=Scope.APP)
    handlers = from_context(provides=HandlerRegistry, scope=Scope.APP)
    backend = from_context(provides=Backend, scope=Scope.APP)
    clock = provide(SystemClock, provides=Clock)
    ids = provide(Uuid7Source, provides=IdSource)

    @provide(provides=AnyOf[JobMetricsRecorder, WorkerMetrics])
    def recorder(self) -> JobMetricsRecorder:
        return JobMetricsRecorder()

    http_metrics = provide(HttpMetrics)

    @provide
    def process_metrics(self, recorder: JobMetricsRecorder) -> PrometheusMetrics:
        return PrometheusMetrics(recorder)

    @provide
    def tracing(self, settings: Settings) -> Iterator[OpenTelemetryTracing | None]:
        """None when tracing is off: nothing traces then, not even a no-op span. Spans
        still buffered are exported when the container closes."""
        if not settings.tracing_enabled:
            yield None
            return
        tracing = OpenTelemetryTracing(settings.service_name, settings.tracing_exporter)
        try:
            yield tracing
        finally:
            tracing.shutdown()

    @provide
    def tracer(self, tracing: OpenTelemetryTracing | None) -> JobTracer | None:
        return tracing

    @provide
    def random(self) -> RandomSource:
        return system_random

    @provide
    async def enqueue_job(
        self,
        jobs: JobRepository,
        ready_queue: ReadyQueue,
        tracer: JobTracer | None,
        settings: Settings,
    ) -> AsyncIterator[EnqueueJob]:
        """Pushes its last hints before the ready queue's client closes."""
        enqueue = EnqueueJob(jobs, ready_queue, tracer, settings.max_waiting_enqueues)
        yield enqueue
        await _drained(enqueue)

    @provide
    async def enqueue_jobs(
        self, jobs: JobRepository, ready_queue: ReadyQueue, tracer: JobTracer | None
    ) -> AsyncIterator[EnqueueJobs]:
        enqueue = EnqueueJobs(jobs, ready_queue, tracer)
        yield enqueue
        await _drained(enqueue)

    get_job = provide(GetJob)
    list_jobs = provide(ListJobs)
    cancel_job = provide(CancelJob)
    retry_job = provide(RetryJob)
    move_to_dlq = provide(MoveJobToDeadLetter)
    replay = provide(ReplayDeadLetter)
    list_dead_letters = provide(ListDeadLetters)
    get_dead_letter = provide(GetDeadLetter)

    @provide
    def stats(
        self,
        jobs: JobRepository,
        dead_letters: DeadLetterStore,
        ready_queue: ReadyQueue,
        settings: Settings,
    ) -> GetStats:
        return GetStats(jobs, dead_letters, ready_queue, settings.queue_name)

    @provide
    def scheduler_settings(self, settings: Settings) -> SchedulerSettings:
        return SchedulerSettings(
            batch_size=settings.scheduler_batch_size,
            tick_interval=settings.scheduler_tick,
            republish_after=settings.republish_after,
            retention_period=settings.retention_period,
        )

    @provide
    def scheduler_tick(
        self,
        jobs: JobRepository,
        ready_queue: ReadyQueue,
        settings: SchedulerSettings,
        tracer: JobTracer | None,
    ) -> SchedulerTick:
        return SchedulerTick(jobs, ready_queue, settings, tracer)


HINT_DRAIN_SECONDS = 5.0
"""At shutdown, how long the last hints may take to reach Redis; the scheduler publishes
any still unpushed."""


async def _drained(enqueue: EnqueueJob | EnqueueJobs) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(enqueue.drain(), HINT_DRAIN_SECONDS)


class MemoryProvider(Provider):
    scope = Scope.APP

    state = provide(InMemoryState)
    ready_queue = provide(InMemoryReadyQueue, provides=AnyOf[InMemoryReadyQueue, ReadyQueue])

    @provide
    def rate_limiter(self) -> RateLimiter:
        return InMemoryRateLimiter()

    dead_letters = provide(InMemoryDeadLetterStore, provides=DeadLetterStore)

    @provide
    def metrics_store(self) -> MetricsStore:
        return InMemoryMetricsStore()

    @provide
    def jobs(self, state: InMemoryState, clock: Clock, ids: IdSource) -> JobRepository:
        return InMemoryJobRepository(state, clock, ids)


def production_providers() -> list[Provider]:
    from taskforge.entrypoints.backends import PostgresProvider, RedisProvider

    return [PostgresProvider(), RedisProvider()]


def make_container(
    settings: Settings,
    backend: Backend,
    handlers: HandlerRegistry,
    overrides: Sequence[Provider] = (),
) -> AsyncContainer:
    """The container for `backend`; `overrides` come last, so providers they mark
    `override=True` replace the backend's (tests inject failing adapters this way)."""
    providers: list[Provider] = [CoreProvider()]
    if backend is Backend.MEMORY:
        providers.append(MemoryProvider())
    else:
        providers += production_providers()
    providers += overrides
    return make_async_container(
        *providers, context={Settings: settings, HandlerRegistry: handlers, Backend: backend}
    )
