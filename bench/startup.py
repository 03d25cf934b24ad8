"""Start-up: how long a process takes from being spawned to doing its first piece of work.

A worker is timed from spawning it to its first job's `started_at` (one job waits, hinted,
before the spawn); `taskforge-cli status <id>` from spawning it to its exit, against the
running API. Both use the database's and this machine's wall clocks, which are one clock
here (the bench runs beside its Postgres).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time

from taskforge.bench.scenarios import Result, preload
from taskforge.bench.stack import Stack, until

WORKER_TARGET_SECONDS = 0.35
CLI_TARGET_SECONDS = 0.2


async def bench_worker_startup(stack: Stack, tries: int) -> Result:
    """Median of `tries` spawns, each a fresh worker on a queue holding one hinted job."""
    seconds = []
    for attempt in range(tries):
        queue = stack.queue(f"startup-{attempt}")
        await preload(stack, queue, 1)
        spawned = time.time()
        worker = stack.spawn("worker", WORKER_QUEUES=queue)

        async def started(queue: str = queue) -> bool:
            count = await stack.pool.fetchval(
                "SELECT count(*) FROM jobs WHERE queue = $1 AND started_at IS NOT NULL", queue
            )
            return bool(count == 1)

        await until(started, "the worker's first job", poll=0.02)
        first = await stack.pool.fetchval(
            "SELECT extract(epoch FROM started_at) FROM jobs WHERE queue = $1", queue
        )
        await stack.stop(worker)
        seconds.append(float(first) - spawned)
    return Result(
        "worker start-up: spawn to first job started",
        1,
        statistics.median(seconds),
        {"target_seconds": WORKER_TARGET_SECONDS, "tries": float(tries)},
    )


def cli_command() -> list[str]:
    """`taskforge-cli` as installed beside this interpreter (a console script), else the
    module run by this interpreter (which adds `-m`'s own few milliseconds)."""
    script = shutil.which("taskforge-cli", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "taskforge.cli"]


async def bench_cli_startup(stack: Stack, tries: int) -> Result:
    """Median of `tries` runs of `taskforge-cli status <id>` of one stored job."""
    queue = stack.queue("startup-cli")
    await preload(stack, queue, 1)
    job_id = await stack.pool.fetchval("SELECT id FROM jobs WHERE queue = $1", queue)
    env = {**stack.env, "TASKFORGE_API_URL": stack.api_url}
    seconds = []
    for _ in range(tries):
        spawned = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *cli_command(),
            "status",
            str(job_id),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, stderr = await process.communicate()
        seconds.append(time.perf_counter() - spawned)
        if process.returncode != 0:
            raise RuntimeError(f"taskforge-cli status failed: {stderr.decode().strip()}")
    return Result(
        "taskforge-cli status: spawn to exit",
        1,
        statistics.median(seconds),
        {"target_seconds": CLI_TARGET_SECONDS, "tries": float(tries)},
    )
