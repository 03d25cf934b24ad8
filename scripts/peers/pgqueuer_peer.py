"""pgqueuer's side of `just bench-peers`, run by .venv-peers' interpreter.

    python pgqueuer_peer.py drain|enqueue|enqueue-many DSN JOBS [CONCURRENCY] [BATCH_SIZE]

`DSN` names an empty database (the caller creates and drops it). Prints one JSON object:
`seconds` (drain: from spawning the worker to the last job durably done, read from
pgqueuer's own log table), and for a drain `first_job_seconds` (spawn to the first job
picked) and `busy_seconds` (first job picked to the last done).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import uvloop
from _process import stop  # beside this file, on sys.path when run as a script
from pgqueuer import AsyncpgDriver, Queries

HERE = Path(__file__).resolve().parent
CHUNK = 1_000
DEADLINE = 600.0


async def enqueue_many(queries: Queries, jobs: int) -> None:
    for start in range(0, jobs, CHUNK):
        size = min(CHUNK, jobs - start)
        await queries.enqueue(["noop"] * size, [None] * size, [0] * size)


async def drain(
    conn: asyncpg.Connection,
    queries: Queries,
    dsn: str,
    jobs: int,
    concurrency: int,
    batch_size: int,
) -> dict[str, float]:
    await enqueue_many(queries, jobs)
    env = {
        **os.environ,
        "PEER_DSN": dsn,
        "PEER_CONCURRENCY": str(concurrency),
        "PYTHONPATH": str(HERE),
    }
    spawned = time.time()
    worker = subprocess.Popen(  # noqa: S603, ASYNC220 - this interpreter; returns at once
        [sys.executable, str(HERE / "pgqueuer_app.py"), str(batch_size)],
        env=env,
        cwd=HERE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + DEADLINE
        while (
            await conn.fetchval("SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'")
            < jobs
        ):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("pgqueuer did not drain its jobs")
            await asyncio.sleep(0.05)  # the end is read from the log, not the poll
        row = await conn.fetchrow(
            "SELECT extract(epoch FROM max(created) FILTER (WHERE status = 'successful')) AS last,"
            " extract(epoch FROM min(created) FILTER (WHERE status = 'picked')) AS first"
            " FROM pgqueuer_log"
        )
    finally:
        stop(worker, 10)
    last, first = float(row["last"]), float(row["first"] or row["last"])
    return {
        "seconds": last - spawned,
        "first_job_seconds": first - spawned,
        "busy_seconds": last - first,
    }


async def main(scenario: str, dsn: str, jobs: int, concurrency: int, batch_size: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        if scenario == "drain":
            result = await drain(conn, queries, dsn, jobs, concurrency, batch_size)
        elif scenario == "enqueue":
            started = time.perf_counter()
            for _ in range(jobs):
                await queries.enqueue("noop", None)
            result = {"seconds": time.perf_counter() - started}
        elif scenario == "enqueue-many":
            started = time.perf_counter()
            await enqueue_many(queries, jobs)
            result = {"seconds": time.perf_counter() - started}
        else:
            raise SystemExit(f"unknown scenario {scenario!r}")
    finally:
        await conn.close()
    print(json.dumps(result))


if __name__ == "__main__":
    scenario, dsn, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    batch_size = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    uvloop.run(main(scenario, dsn, jobs, concurrency, batch_size))  # as `pgq run` runs
