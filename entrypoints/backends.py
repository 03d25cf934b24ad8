"""Production providers: Postgres (source of truth) and Redis (dispatch, rate limits, the
cluster's job metrics)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import asyncpg
from dishka import Provider, Scope, provide
from redis.asyncio import Redis

from taskforge.adapters.postgres import (
    PostgresDeadLetterStore,
    PostgresJobStore,
    PostgresLeaseStore,
    PostgresOperatorMoves,
    PostgresQueuePauses,
    PostgresScheduleStore,
    PostgresSweeps,
    PostgresWorkerRegistry,
    create_pool,
)
from taskforge.adapters.postgres.dashboard import PostgresDeadLetterGroups, PostgresJobCounts
from taskforge.adapters.postgres.job_notices import PostgresJobNotices
from taskforge.adapters.postgres.migrations import SchemaCheck
from taskforge.adapters.redis.client import create_redis
from taskforge.adapters.redis.metrics import RedisMetricsStore
from taskforge.adapters.redis.rate_limiter import RedisRateLimiter
from taskforge.adapters.redis.ready_queue import RedisReadyQueue
from taskforge.application.ports import (
    DeadLetterGroups,
    DeadLetterStore,
    JobCounts,
    JobNotices,
    JobStore,
    LeaseStore,
    MetricsStore,
    OperatorMoves,
    QueuePauses,
    RateLimiter,
    ReadyQueue,
    ScheduleStore,
    Sweeps,
    WorkerRegistry,
)
from taskforge.entrypoints.config import Settings

log = logging.getLogger("taskforge.runtime")

POOL_SIZE = 10
"""Connections per process. Workers batch claims, heartbeats and settles, so a handful of
connections serve any WORKER_CONCURRENCY; the API needs about one per in-flight request."""


class PostgresProvider(Provider):
    scope = Scope.APP

    @provide
    async def pool(self, settings: Settings) -> AsyncIterator[asyncpg.Pool]:
        # min_size=0: the process starts (and /healthz answers) while Postgres is down;
        # connections are opened on demand and failures surface as `Unavailable`.
        # Every connection passes the schema check: no route or loop runs a statement on a
        # database that misses a migration (they answer "run `taskforge migrate`" instead).
        pool = await create_pool(
            settings.require_postgres("api"),
            min_size=0,
            max_size=POOL_SIZE,
            check=SchemaCheck(),
            transaction_pooler=settings.postgres_pooler == "pgbouncer",
        )
        try:
            yield pool
        finally:
            await pool.close()

    job_store = provide(PostgresJobStore, provides=JobStore)
    lease_store = provide(PostgresLeaseStore, provides=LeaseStore)
    sweeps = provide(PostgresSweeps, provides=Sweeps)
    operator_moves = provide(PostgresOperatorMoves, provides=OperatorMoves)
    queue_pauses = provide(PostgresQueuePauses, provides=QueuePauses)
    schedules = provide(PostgresScheduleStore, provides=ScheduleStore)
    worker_registry = provide(PostgresWorkerRegistry, provides=WorkerRegistry)
    dead_letters = provide(PostgresDeadLetterStore, provides=DeadLetterStore)
    job_counts = provide(PostgresJobCounts, provides=JobCounts)
    dead_letter_groups = provide(PostgresDeadLetterGroups, provides=DeadLetterGroups)

    @provide
    def job_notices(self, settings: Settings) -> JobNotices | None:
        """A session connection of its own: LISTEN does not survive a transaction pooler.
        Behind one with no POSTGRES_DIRECT_DSN there is none, and the scheduler's every-tick
        sweep of never-published jobs publishes the jobs applications enqueue in their own
        transactions."""
        if settings.postgres_pooler == "pgbouncer" and settings.postgres_direct_dsn is None:
            log.warning(
                "POSTGRES_POOLER=pgbouncer without POSTGRES_DIRECT_DSN: the scheduler cannot "
                "LISTEN through the pooler, so jobs enqueued in applications' transactions wait "
                "for its next sweep (within SCHEDULER_TICK); set POSTGRES_DIRECT_DSN to start "
                "them at commit"
            )
            return None
        return PostgresJobNotices(settings.require_direct_postgres("scheduler"))


def redis_client(settings: Settings) -> Redis:
    """The Redis client the settings name (address or Sentinels, database, password, TLS):
    every role's, and the benchmark's own. The caller closes it (`aclose`)."""
    return create_redis(
        host=settings.redis_addr.host,
        port=settings.redis_addr.port,
        db=settings.redis_db,
        password=settings.redis_password or None,
        sentinels=[(sentinel.host, sentinel.port) for sentinel in settings.redis_sentinels],
        sentinel_master=settings.redis_sentinel_master,
        sentinel_password=settings.redis_sentinel_password or None,
        tls=settings.redis_tls,
        tls_ca_file=settings.redis_tls_ca_file,
    )


class RedisProvider(Provider):
    scope = Scope.APP

    @provide
    async def client(self, settings: Settings) -> AsyncIterator[Redis]:
        client = redis_client(settings)
        try:
            yield client
        finally:
            await client.aclose()

    @provide
    def ready_queue(self, client: Redis, settings: Settings) -> ReadyQueue:
        return RedisReadyQueue(client, settings.redis_key_prefix)

    @provide
    def rate_limiter(self, client: Redis, settings: Settings) -> RateLimiter:
        return RedisRateLimiter(client, settings.redis_key_prefix)

    @provide
    def metrics_store(self, client: Redis, settings: Settings) -> MetricsStore:
        return RedisMetricsStore(client, settings.redis_key_prefix)
