"""A worker whose Redis became unreachable still stops within seconds of SIGTERM: the steps
of its stop that only Redis serves (the last metrics flush, leaving the metrics store, the
hints of the jobs it hands back) give up instead of waiting out the client's timeouts and
retries, which against a frozen Redis added up to more than a minute.

Each test stops or freezes a private redis-server of its own, never a shared one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from redis.asyncio import Redis

from taskforge.adapters.redis.keys import RedisKeys
from tests.integration.processes.conftest import Process, Stack
from tests.servers import PrivateRedis
from tests.support import redis_env, redis_from_url

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

DEADLINE = 30.0
STOP_BOUND = 15.0
"""Seconds from SIGTERM to exit. Without running jobs the stop takes at most a pop's wait
(3 s) and the metrics' stop timeout (2 s) against a frozen Redis; it took about 100 s
before those steps were bounded. The rest is margin for a busy machine."""


def make_unreachable(server: PrivateRedis, outage: str) -> None:
    assert server.popen is not None
    if outage == "frozen":
        os.kill(server.popen.pid, signal.SIGSTOP)  # accepts connections, answers nothing
    else:
        server.popen.kill()  # refuses connections
        server.popen.wait(DEADLINE)


async def wait_until_published(server: PrivateRedis, prefix: str) -> None:
    """Until the worker has published its metrics once: the publisher uses Redis."""
    client: Redis = redis_from_url(server.url)
    try:
        deadline = time.monotonic() + DEADLINE
        while not await client.scard(RedisKeys(prefix).metric_workers):
            assert time.monotonic() < deadline, "the worker never published its metrics"
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def stop_time(worker: Process) -> tuple[int, float]:
    """SIGTERM `worker`: its exit code, and the seconds it took to exit."""
    began = time.monotonic()
    worker.signal(signal.SIGTERM)
    code = await asyncio.to_thread(worker.wait, 120)
    return code, time.monotonic() - began


@pytest.mark.parametrize("outage", ["frozen", "stopped"])
async def test_an_idle_worker_stops_within_seconds_when_its_redis_is_unreachable(
    stack: Stack, private_redis: PrivateRedis, outage: str
) -> None:
    stack.env.update(redis_env(private_redis.url))
    worker = stack.start_worker()
    await wait_until_published(private_redis, stack.env["TASKFORGE_REDIS_PREFIX"])

    make_unreachable(private_redis, outage)
    code, took = await stop_time(worker)

    print(f"Redis {outage}: the worker exited {took:.1f}s after SIGTERM")
    assert code == 0
    assert took < STOP_BOUND, worker.tail()
    if outage == "frozen":
        assert "gave up publishing the last metrics" in worker.log.read_text()


async def test_a_worker_hands_back_its_job_and_stops_within_seconds_when_redis_froze(
    stack: Stack, private_redis: PrivateRedis
) -> None:
    stack.env.update(redis_env(private_redis.url))
    await stack.start_api()
    worker = stack.start_worker("--concurrency", "2", WORKER_SHUTDOWN_GRACE="0.5")
    job_id = await stack.enqueue("ledger_sleep", payload={"seconds": 60})
    await stack.wait_for_ledger(job_id, 1)

    make_unreachable(private_redis, "frozen")
    await worker.logged("claiming due jobs from the store")
    code, took = await stop_time(worker)

    print(f"Redis frozen, one job handed back: the worker exited {took:.1f}s after SIGTERM")
    assert code == 0
    assert took < STOP_BOUND, worker.tail()
    job = await stack.job(job_id)
    assert (job["state"], job["attempt_count"]) == ("PENDING", 0)
    log = worker.log.read_text()
    assert "not sending the hints of 1 job(s) handed back" in log
    assert "gave up publishing the last metrics" in log
