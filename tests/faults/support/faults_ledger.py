"""The fault suite's job handler: it behaves as its payload says and records each execution.

Loaded by worker processes with `--handlers faults_ledger`. Every execution writes one
`fault_ledger` row when it starts (job id, attempt, the lease token of this attempt, worker
pid, start time) and completes it when it ends (end time and outcome:
`returned`, `raised`, `terminal` or `interrupted`). A worker killed with SIGKILL leaves its
row open. LEDGER_DSN names the database; it bypasses the fault proxy, so the record survives
the faults the suite injects on TaskForge's own connections (writes are retried while
Postgres itself restarts).

The payload decides the behaviour, so a run is reproducible from the harness's seed:
`sleep` (seconds per attempt), `first_sleep` (seconds on attempt 1 instead), `fail` (attempt
numbers that raise a retryable error), `terminal` (from this attempt on, raise TerminalError).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

import taskforge

T = TypeVar("T")

JOB_TYPE = "faults.work"
WRITE_DEADLINE = 60.0
"""Seconds a ledger write keeps retrying while Postgres is unreachable."""

RECORD_START = """
INSERT INTO fault_ledger (job_id, attempt, pid, started_at, lease_token, lease_owner)
SELECT $1, $2, $3, $4, $5, jobs.lease_owner
FROM (SELECT 1) AS one
LEFT JOIN jobs ON jobs.id = $1 AND jobs.lease_token = $5
RETURNING id
"""
RECORD_END = "UPDATE fault_ledger SET ended_at = $2, outcome = $3 WHERE id = $1"

RETRYABLE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)

_pool: asyncpg.Pool | None = None
_lock = asyncio.Lock()
_writes: set[asyncio.Task[Any]] = set()


def _now() -> datetime:
    return datetime.fromtimestamp(time.time(), UTC)


async def _pool_ready() -> asyncpg.Pool:
    global _pool
    async with _lock:
        if _pool is None:
            _pool = await asyncpg.create_pool(os.environ["LEDGER_DSN"], min_size=1, max_size=4)
        return _pool


async def _retrying(write: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    deadline = time.monotonic() + WRITE_DEADLINE
    delay = 0.05
    while True:
        try:
            return await write(await _pool_ready())
        except RETRYABLE:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


async def _start(ctx: taskforge.JobContext, started: datetime) -> int:
    async def write(pool: asyncpg.Pool) -> int:
        row_id: int = await pool.fetchval(
            RECORD_START, ctx.job_id, ctx.attempt, os.getpid(), started, ctx.lease_token
        )
        return row_id

    return await _retrying(write)


async def _end(row_id: int, outcome: str) -> None:
    ended = _now()

    async def write(pool: asyncpg.Pool) -> None:
        await pool.execute(RECORD_END, row_id, ended, outcome)

    await _retrying(write)


def _spawn(write: Awaitable[T]) -> asyncio.Task[T]:
    """Run a ledger write as its own task, kept referenced until done: a handler interrupted
    while it writes (lease lost, cancel, shutdown) must not leave its record half-written."""
    task = asyncio.ensure_future(write)
    _writes.add(task)
    task.add_done_callback(_writes.discard)
    return task


async def _end_after(start: asyncio.Task[int], outcome: str) -> None:
    await _end(await start, outcome)


async def _behave(ctx: taskforge.JobContext) -> None:
    payload: dict[str, Any] = ctx.payload
    seconds = float(payload.get("sleep", 0))
    if ctx.attempt == 1 and "first_sleep" in payload:
        seconds = float(payload["first_sleep"])
    if seconds > 0:
        await asyncio.sleep(seconds)
    terminal = payload.get("terminal")
    if isinstance(terminal, int) and ctx.attempt >= terminal:
        raise taskforge.TerminalError(f"planned terminal failure on attempt {ctx.attempt}")
    if ctx.attempt in payload.get("fail", ()):
        raise RuntimeError(f"planned failure on attempt {ctx.attempt}")


@taskforge.handler(JOB_TYPE)
async def work(ctx: taskforge.JobContext) -> None:
    start = _spawn(_start(ctx, _now()))
    outcome = "interrupted"
    try:
        await asyncio.shield(start)
        await _behave(ctx)
        outcome = "returned"
    except taskforge.TerminalError:
        outcome = "terminal"
        raise
    except Exception:
        outcome = "raised"
        raise
    finally:
        # Shielded: an interruption arriving now must not cut the record short.
        await asyncio.shield(_spawn(_end_after(start, outcome)))
