"""Test handlers that record every execution in a `ledger` table (one row per attempt).

Loaded by worker processes with `--handlers taskforge_ledger`; LEDGER_DSN names the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import UTC, datetime
from typing import Any

import asyncpg

import taskforge

_pool: asyncpg.Pool | None = None
_lock = asyncio.Lock()


async def _ledger() -> asyncpg.Pool:
    global _pool
    async with _lock:
        if _pool is None:
            _pool = await asyncpg.create_pool(os.environ["LEDGER_DSN"], min_size=1, max_size=4)
        return _pool


async def _start(ctx: taskforge.JobContext) -> Any:
    # Stamped as the handler starts: a process's first job waits for the pool to connect.
    started_at = datetime.now(UTC)
    pool = await _ledger()
    return await pool.fetchval(
        "INSERT INTO ledger (job_id, pid, attempt, started_at) "
        "VALUES ($1, $2, $3, $4) RETURNING id",
        ctx.job_id,
        os.getpid(),
        ctx.attempt,
        started_at,
    )


async def _end(row: Any, outcome: str) -> None:
    pool = await _ledger()
    await pool.execute(
        "UPDATE ledger SET ended_at = clock_timestamp(), outcome = $2 WHERE id = $1",
        row,
        outcome,
    )


@taskforge.handler("ledger_sleep")
async def ledger_sleep(ctx: taskforge.JobContext) -> None:
    row = await _start(ctx)
    try:
        await asyncio.sleep(float(ctx.payload.get("seconds", 1)))
    except asyncio.CancelledError:
        await asyncio.shield(_end(row, "interrupted"))
        raise
    await _end(row, "returned")


@taskforge.handler("ledger_fail")
async def ledger_fail(ctx: taskforge.JobContext) -> None:
    row = await _start(ctx)
    await _end(row, "raised")
    raise RuntimeError(f"ledger_fail attempt {ctx.attempt}")


@taskforge.handler("ledger_stubborn")
async def ledger_stubborn(ctx: taskforge.JobContext) -> None:
    """Ignores every cancellation: it runs until its process ends."""
    await _start(ctx)
    while True:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.1)
