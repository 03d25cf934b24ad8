"""Redis frozen (SIGSTOP) under load: the worker keeps running due jobs by claiming them
from Postgres, at no less than a quarter of the rate it drains with Redis in the same run,
and goes back to hints once Redis answers. Nothing is lost or run twice at once. The same
for a Redis out of memory under noeviction, which answers pops but takes no new hint.

The tests freeze or fill a private redis-server of their own, never a shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from datetime import datetime
from typing import Any

import asyncpg
import pytest
import redis

from tests.integration.processes.conftest import Process, Stack
from tests.servers import PrivateRedis
from tests.support import redis_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOBS_PER_PHASE = 300
FREEZE_SECONDS = 30.0
DEADLINE = 60.0


async def enqueue_batch(stack: Stack, count: int) -> list[str]:
    body = {
        "jobs": [
            {"jobType": "ledger_sleep", "payload": {"seconds": 0}, "queue": stack.env["QUEUE_NAME"]}
            for _ in range(count)
        ]
    }
    async with stack.client() as client:
        response = await client.post("/jobs/batch", json=body)
    assert response.status_code == 201, response.text
    return [item["id"] for item in response.json()["items"]]


async def finished(dsn: str, ids: list[str]) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, state, started_at, finished_at FROM jobs WHERE id = ANY($1::uuid[])",
            ids,
        )
    finally:
        await conn.close()
    return [dict(row) for row in rows]


async def wait_all_succeeded(dsn: str, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await finished(dsn, ids)
        if len(rows) == len(ids) and all(row["state"] == "SUCCEEDED" for row in rows):
            return rows
        if time.monotonic() > deadline:
            states: dict[str, int] = {}
            for row in rows:
                states[row["state"]] = states.get(row["state"], 0) + 1
            raise AssertionError(f"not every job succeeded in time: {states}")
        await asyncio.sleep(0.1)


def drain_rate(rows: list[dict[str, Any]]) -> float:
    """Jobs per second from the first start to the last finish among `rows`."""
    first: datetime = min(row["started_at"] for row in rows)
    last: datetime = max(row["finished_at"] for row in rows)
    return len(rows) / max((last - first).total_seconds(), 1e-3)


async def overlapping_executions(dsn: str, ids: list[str]) -> int:
    """Pairs of executions of one job whose run times overlap (two workers at once)."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                """
                SELECT count(*) FROM ledger a JOIN ledger b
                  ON a.job_id = b.job_id AND a.id < b.id
                 AND a.started_at < coalesce(b.ended_at, 'infinity')
                 AND b.started_at < coalesce(a.ended_at, 'infinity')
                WHERE a.job_id = ANY($1::uuid[])
                """,
                ids,
            )
        )
    finally:
        await conn.close()


async def start_on(stack: Stack, private_redis: PrivateRedis) -> Process:
    """The API, a worker (returned) and a scheduler, on `private_redis`."""
    stack.env.update(redis_env(private_redis.url))
    await stack.start_api()
    worker = stack.start_worker()
    stack.start_scheduler()
    return worker


async def back_to_hints(worker: Process) -> None:
    """The worker tries the ready queue again on its own backoff, which may come after the
    last jobs already ran from the store: wait for it rather than read the log once."""
    deadline = time.monotonic() + DEADLINE
    while "back to hints" not in worker.log.read_text():
        assert time.monotonic() < deadline, "the worker never went back to hints"
        await asyncio.sleep(0.2)


async def test_jobs_keep_completing_while_redis_is_frozen(
    stack: Stack, private_redis: PrivateRedis
) -> None:
    worker = await start_on(stack, private_redis)

    with_redis = await enqueue_batch(stack, JOBS_PER_PHASE)
    redis_rate = drain_rate(await wait_all_succeeded(stack.dsn, with_redis, DEADLINE))

    assert private_redis.pid is not None
    os.kill(private_redis.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        without_redis = await enqueue_batch(stack, JOBS_PER_PHASE)  # committed; hints hang
        rows = await wait_all_succeeded(stack.dsn, without_redis, FREEZE_SECONDS)
        assert time.monotonic() - frozen_at < FREEZE_SECONDS
        await asyncio.sleep(max(0.0, FREEZE_SECONDS - (time.monotonic() - frozen_at)))
    finally:
        os.kill(private_redis.pid, signal.SIGCONT)
    frozen_rate = drain_rate(rows)

    after = await enqueue_batch(stack, 50)
    await wait_all_succeeded(stack.dsn, after, DEADLINE)

    print(f"drain with Redis {redis_rate:.0f} jobs/s, with Redis frozen {frozen_rate:.0f} jobs/s")
    assert frozen_rate >= redis_rate / 4, (redis_rate, frozen_rate)
    assert await overlapping_executions(stack.dsn, with_redis + without_redis + after) == 0
    assert "claiming due jobs from the store" in worker.log.read_text()
    await back_to_hints(worker)


async def test_jobs_keep_completing_while_redis_is_out_of_memory(
    stack: Stack, private_redis: PrivateRedis
) -> None:
    worker = await start_on(stack, private_redis)
    await wait_all_succeeded(stack.dsn, await enqueue_batch(stack, 20), DEADLINE)

    admin = redis.Redis(port=private_redis.port, socket_timeout=5)
    with contextlib.closing(admin):
        admin.config_set("maxmemory", 1)  # every write that adds is refused with OOM
        try:
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                admin.lpush(f"{stack.env['QUEUE_NAME']}", "no room")
            while_full = await enqueue_batch(stack, 50)  # committed; their hints refused
            await wait_all_succeeded(stack.dsn, while_full, FREEZE_SECONDS)
        finally:
            admin.config_set("maxmemory", 0)

    after = await enqueue_batch(stack, 20)
    await wait_all_succeeded(stack.dsn, after, DEADLINE)
    log = worker.log.read_text()
    assert "OutOfMemoryError" in log and "claiming due jobs from the store" in log
    await back_to_hints(worker)
