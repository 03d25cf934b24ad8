"""examples/orders end to end on Postgres and Redis: the Litestar app (under uvicorn) stores
an order and enqueues its email in one transaction, a `taskforge worker --handlers jobs`
started in the example's folder serves the queue the task declares and sends the email;
an order refused for want of stock leaves neither an order nor a job."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.integration.processes.conftest import DEADLINE, Process, Stack
from tests.support import free_port, wait_until_healthy

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "orders"


def start_app(stack: Stack, **env: str) -> tuple[Process, str]:
    """The example's web app under uvicorn, stopped (by pid) with the stack's processes."""
    port = free_port()
    log = stack.logs / "orders-app.log"
    popen = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)],
        cwd=EXAMPLE,
        env={**stack.env, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    process = Process("orders-app", popen, log)
    stack.processes.append(process)
    return process, f"http://127.0.0.1:{port}"


async def poll(query: str, *args: Any, dsn: str) -> Any:
    """The first value `query` answers that is not None, within the deadline."""
    deadline = time.monotonic() + DEADLINE
    conn = await asyncpg.connect(dsn)
    try:
        while (value := await conn.fetchval(query, *args)) is None:
            assert time.monotonic() < deadline, f"no answer to {query}"
            await asyncio.sleep(0.05)
        return value
    finally:
        await conn.close()


async def test_an_order_and_its_email_commit_together_and_the_worker_sends_it(
    stack: Stack, queue_name: str
) -> None:
    env = {"ORDERS_QUEUE": queue_name}
    app, url = start_app(stack, **env)
    stack.start_scheduler()
    worker = stack.start_in(EXAMPLE, "worker", "--handlers", "jobs", **env)
    await wait_until_healthy(url, lambda: app.popen.poll() is None, app.tail, DEADLINE)
    sku = f"sku-{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(stack.dsn)
    try:
        await conn.execute("INSERT INTO products (sku, stock) VALUES ($1, 3)", sku)
    finally:
        await conn.close()

    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        created = await client.post("/orders", json={"sku": sku, "quantity": 2, "email": "a@b.c"})
        refused = await client.post("/orders", json={"sku": sku, "quantity": 2, "email": "d@e.f"})
        # What the order table cannot hold is the caller's mistake, answered before any write.
        bad = [
            await client.post("/orders", json={"sku": sku, "quantity": n, "email": "g@h.i"})
            for n in (0, 2**31)
        ] + [await client.post("/orders", json={"sku": sku, "quantity": 1, "email": "g\0h"})]

    assert created.status_code == 201, created.text
    assert refused.status_code == 409, refused.text
    assert [answer.status_code for answer in bad] == [400, 400, 400], [a.text for a in bad]
    order = created.json()
    sent_at = await poll(
        "SELECT email_sent_at FROM orders WHERE id = $1", order["order_id"], dsn=stack.dsn
    )
    assert sent_at is not None
    job = await stack.wait_for(order["email_job_id"], "SUCCEEDED")
    assert (job["queue"], job["job_type"], job["max_attempts"]) == (queue_name, "order_email", 5)
    conn = await asyncpg.connect(stack.dsn)
    try:
        # The refused order's transaction took its order row and its email job with it.
        assert await conn.fetchval("SELECT count(*) FROM orders WHERE sku = $1", sku) == 1
        assert await conn.fetchval("SELECT count(*) FROM jobs WHERE queue = $1", queue_name) == 1
        assert await conn.fetchval("SELECT stock FROM products WHERE sku = $1", sku) == 1
    finally:
        await conn.close()
    assert f"worker serving {queue_name} " in worker.tail(100)
