"""The transactional enqueue's scenarios: jobs stored by the application's own asyncpg
connection, inside its own transactions, as an application calling `taskforge.enqueue`
would. Their names are fixed (`txn-enqueue`, `txn-enqueue-many`, `txn-latency`) so a
report can set other queues' figures for the same work beside them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from taskforge.bench.scenarios import Result, percentile
from taskforge.bench.stack import Stack, until
from taskforge.sdk.transactional import enqueue, enqueue_many

TXN_ENQUEUE = "txn-enqueue"
TXN_ENQUEUE_MANY = "txn-enqueue-many"
TXN_LATENCY = "txn-latency"
MANY = 1_000
"""Jobs per `enqueue_many` transaction."""


async def bench_txn_enqueue(stack: Stack, count: int) -> Result:
    """One job per transaction, one after the other, on one connection."""
    queue = stack.queue("txn-enqueue")
    conn = await asyncpg.connect(stack.dsn)
    try:
        started = time.perf_counter()
        for _ in range(count):
            async with conn.transaction():
                await enqueue(conn, "noop", {}, queue=queue)
        return Result(TXN_ENQUEUE, count, time.perf_counter() - started)
    finally:
        await conn.close()


async def bench_txn_enqueue_many(stack: Stack, transactions: int) -> Result:
    """`enqueue_many` of MANY jobs in each transaction, one transaction after the other."""
    queue = stack.queue("txn-enqueue-many")
    specs: list[Any] = [{"job_type": "noop", "queue": queue}] * MANY
    conn = await asyncpg.connect(stack.dsn)
    try:
        started = time.perf_counter()
        for _ in range(transactions):
            async with conn.transaction():
                await enqueue_many(conn, specs)
        return Result(TXN_ENQUEUE_MANY, transactions * MANY, time.perf_counter() - started)
    finally:
        await conn.close()


async def bench_txn_latency(stack: Stack, rate: float, seconds: float) -> Result:
    """From each transaction's commit to the start of its job's handler, one job per
    transaction at `rate` a second: the scheduler turns the commit's NOTIFY into the hint."""
    queue = stack.queue("txn-latency")
    worker = stack.spawn("worker", WORKER_QUEUES=queue)
    scheduler = stack.spawn("scheduler")
    conn = await asyncpg.connect(stack.dsn)
    try:
        # One job run through before the clock starts: the worker and the scheduler are up.
        async with conn.transaction():
            first = await enqueue(conn, "noop", {}, queue=queue)
        await until(lambda: _succeeded(stack, [first.id]), "the warm-up job to run")
        committed: dict[Any, float] = {}
        total = int(rate * seconds)
        started = time.perf_counter()
        for index in range(total):
            pause = started + index / rate - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            async with conn.transaction():
                job = await enqueue(conn, "noop", {}, queue=queue)
            committed[job.id] = time.time()
        elapsed = time.perf_counter() - started
        await until(lambda: _succeeded(stack, list(committed)), "the latency jobs to run", 0.1)
        rows = await stack.pool.fetch(
            "SELECT id, extract(epoch FROM started_at) AS started, "
            "extract(epoch FROM finished_at) AS finished FROM jobs WHERE id = ANY($1::uuid[])",
            list(committed),
        )
    finally:
        await conn.close()
        for process in (worker, scheduler):
            await stack.stop(process)
    to_start = sorted((float(r["started"]) - committed[r["id"]]) * 1000 for r in rows)
    to_finish = sorted((float(r["finished"]) - committed[r["id"]]) * 1000 for r in rows)
    extra = {
        "start_p50_ms": percentile(to_start, 50),
        "start_p95_ms": percentile(to_start, 95),
        "start_p99_ms": percentile(to_start, 99),
        "finish_p50_ms": percentile(to_finish, 50),
        "finish_p99_ms": percentile(to_finish, 99),
    }
    return Result(TXN_LATENCY, total, elapsed, extra)


async def _succeeded(stack: Stack, ids: list[Any]) -> bool:
    done = await stack.pool.fetchval(
        "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND state = 'SUCCEEDED'", ids
    )
    return int(done) == len(ids)
