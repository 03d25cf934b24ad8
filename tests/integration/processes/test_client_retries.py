"""`taskforge.Client` riding out a restart of a real API on Postgres and Redis."""

from __future__ import annotations

import asyncio
import signal
import time

import asyncpg
import httpx
import pytest

from taskforge.client import Client, RetryPolicy
from tests.integration.processes.conftest import DEADLINE, Stack
from tests.support import wait_until_healthy

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_an_enqueue_retries_through_an_api_restart_and_stores_one_job(stack: Stack) -> None:
    api = await stack.start_api()
    assert stack.api_url is not None
    url = stack.api_url
    api.signal(signal.SIGTERM)
    api.wait(DEADLINE)
    tries: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        tries.append(request)

    policy = RetryPolicy(attempts=100, initial_delay=0.05, max_delay=0.2)
    queue = stack.env["QUEUE_NAME"]
    async with Client(url, retry_policy=policy) as tf:
        tf._http.event_hooks["request"].append(count)
        enqueue = asyncio.create_task(tf.enqueue("noop", {"n": 1}, queue=queue))
        deadline = time.monotonic() + DEADLINE
        while len(tries) < 2:  # refused at least twice: the API is really down
            assert time.monotonic() < deadline and not enqueue.done()
            await asyncio.sleep(0.01)
        again = stack.start("api", HTTP_ADDR=url.removeprefix("http://"))
        await wait_until_healthy(url, lambda: again.popen.poll() is None, again.tail, DEADLINE)
        job = await asyncio.wait_for(enqueue, DEADLINE)
        assert job.queue == queue
        assert job.idempotency_key is not None
        keys = {request.content for request in tries}
        assert len(keys) == 1  # every try sent the same body, and so the same key
        retried = await tf.enqueue("noop", queue=queue, idempotency_key=job.idempotency_key)
        assert retried.id == job.id
    conn = await asyncpg.connect(stack.dsn)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM jobs WHERE queue = $1", queue)
    finally:
        await conn.close()
    assert stored == 1
