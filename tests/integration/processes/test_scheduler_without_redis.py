"""Redis frozen (SIGSTOP: it accepts connections and answers nothing): the scheduler's
Postgres duties keep their pace. A crashed worker's job is reaped back to PENDING within
about its visibility timeout, and a failed job's retry is promoted when it comes due, while
every Redis call of the scheduler's ticks goes unanswered; once Redis answers again, their
hints are published at the next try, not a republish period later.

The test freezes a private redis-server of its own, never a shared one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from redis.asyncio import Redis
from redis.asyncio import from_url as redis_from_url

from tests.integration.processes.conftest import Stack
from tests.servers import PrivateRedis
from tests.support import redis_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VISIBILITY_TIMEOUT = 3
RETRY_DELAY = 4
BACK_WITHIN = 8.0
"""Seconds from the freeze by which both jobs must be PENDING again: the later of the two is
due 4 s after the freeze at the latest, plus the scheduler's grace for a Redis call that
goes unanswered (2 s), plus margin for a busy machine. Before the scheduler bounded its
Redis calls, neither job came back while Redis stayed frozen (60 s and more): every tick
began with a Redis call that failed after about 15 s, before any sweep ran."""

PUBLISHED_WITHIN = 15.0
"""Seconds from the thaw by which the hints held back are in Redis: the scheduler tries Redis
again every 5 s; the republish sweep would take 30 s."""

DEADLINE = 30.0


async def test_leases_are_reaped_and_retries_promoted_while_redis_is_frozen(
    stack: Stack, private_redis: PrivateRedis
) -> None:
    stack.env.update(redis_env(private_redis.url))
    await stack.start_api()
    worker = stack.start_worker()
    scheduler = stack.start_scheduler()
    running = await stack.enqueue(
        "ledger_sleep",
        payload={"seconds": 600},
        visibilityTimeout=VISIBILITY_TIMEOUT,
        maxAttempts=3,
    )
    failed = await stack.enqueue(
        "ledger_fail", maxAttempts=3, initialDelay=RETRY_DELAY, maxDelay=RETRY_DELAY
    )
    await stack.wait_for(running, "RUNNING")
    await stack.wait_for(failed, "FAILED")
    worker.signal(signal.SIGKILL)  # its job stays RUNNING until the lease expires
    worker.wait(DEADLINE)

    assert private_redis.pid is not None
    os.kill(private_redis.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        reaped = await stack.wait_for(running, "PENDING", "DLQ", timeout=60)
        reaped_after = time.monotonic() - frozen_at
        promoted = await stack.wait_for(failed, "PENDING", timeout=60)
        promoted_after = time.monotonic() - frozen_at
        print(f"reaped after {reaped_after:.1f}s, promoted after {promoted_after:.1f}s")
        await scheduler.logged("not answering")
    finally:
        os.kill(private_redis.pid, signal.SIGCONT)
    thawed_at = time.monotonic()
    hints = await wait_for_hints(private_redis, stack.env["QUEUE_NAME"], 2)
    published_after = time.monotonic() - thawed_at

    assert reaped["state"] == "PENDING"
    assert promoted["retry_count"] == 1
    assert reaped_after < BACK_WITHIN, reaped_after
    assert promoted_after < BACK_WITHIN, promoted_after
    assert hints == {running, failed}
    assert published_after < PUBLISHED_WITHIN, published_after
    log = scheduler.log.read_text(errors="replace")
    assert log.count("not answering") == 1, scheduler.tail()
    assert "answers again" in log


async def wait_for_hints(server: PrivateRedis, queue: str, count: int) -> set[str]:
    """The job ids in `queue`'s list once it holds `count` hints."""
    client: Redis = redis_from_url(server.url)
    try:
        deadline = time.monotonic() + 2 * DEADLINE
        while (held := await client.llen(queue)) < count:
            assert time.monotonic() < deadline, f"{held} hint(s) in {queue}, wanted {count}"
            await asyncio.sleep(0.05)
        held_ids = await client.lrange(queue, 0, -1)
        return {raw.decode() if isinstance(raw, bytes) else raw for raw in held_ids}
    finally:
        await client.aclose()
