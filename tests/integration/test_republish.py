"""The scheduler's republish sweep on Postgres and Redis: a backlog that waits with its
hints intact is left as it is, however long it waits, and only hints that went missing are
replaced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from taskforge.adapters.postgres import create_pool
from taskforge.adapters.redis.ready_queue import RedisReadyQueue
from taskforge.adapters.system import Uuid7Source
from taskforge.application.enqueue import EnqueueJobs
from taskforge.application.hints import HintDispatcher
from taskforge.application.scheduler import SchedulerSettings, SchedulerTick
from taskforge.domain.new_job import NewJob
from tests.job_stores import PostgresJobs

pytestmark = pytest.mark.integration

SETTINGS = SchedulerSettings(batch_size=100, republish_after=0.2, retention_period=0)

_ids = Uuid7Source()


@pytest.fixture
def dsn(migrated_dsn: str) -> str:
    """Resolved outside the event loop: the migrations run a loop of their own."""
    return migrated_dsn


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(dsn, min_size=1, max_size=4)
    try:
        async with pool.acquire() as conn:  # no other test's pending jobs in the counts
            await conn.execute("TRUNCATE jobs, dead_letters, queues")
        yield pool
    finally:
        await pool.close()


async def test_a_waiting_backlog_is_left_alone_and_only_lost_hints_are_replaced(
    pool: asyncpg.Pool, redis_ready_queue: RedisReadyQueue, queue_name: str
) -> None:
    jobs = PostgresJobs(pool)
    hints = HintDispatcher(redis_ready_queue)
    await redis_ready_queue.check_intact()  # this Redis has lost nothing since
    backlog = [NewJob(id=_ids.new_id(), queue=queue_name, job_type="email") for _ in range(20)]
    # A delayed job makes the queue's pending jobs outnumber its hints, so each tick asks
    # the store for stale ones: the store must find the due ones covered.
    later = NewJob(id=_ids.new_id(), queue=queue_name, job_type="email", delay=3600.0)
    await EnqueueJobs(jobs, hints)([*backlog, later])
    await hints.drain()
    published = "SELECT array_agg(published_at ORDER BY id) FROM jobs"
    before = await pool.fetchval(published)
    tick = SchedulerTick(jobs, redis_ready_queue, hints, SETTINGS)
    await asyncio.sleep(0.3)  # every hint is older than republish_after now

    waiting = [await tick() for _ in range(3)]
    after = await pool.fetchval(published)
    await redis_ready_queue.pop([queue_name], 3, 0)  # taken by a worker that then died
    replacing = await tick()
    await hints.drain()
    held = await redis_ready_queue.pop([queue_name], 100, 0)

    assert [report.republished for report in waiting] == [0, 0, 0]
    assert after == before  # no row rewritten
    assert replacing.republished == 3
    assert sorted(hint.job_id for hint in held) == sorted(job.id for job in backlog)
