"""What the bench measures: enqueue over HTTP, drains, latency, and drains over a full table."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from taskforge.adapters.postgres import PostgresJobStore
from taskforge.adapters.system import Uuid7Source
from taskforge.application.enqueue import EnqueueJobs
from taskforge.application.hints import HintDispatcher
from taskforge.bench.cpu import (
    CpuSampler,
    local_postgres_server,
    machine_busy_seconds,
    machine_cores,
    postgres_cpu_seconds,
    process_cpu_seconds,
)
from taskforge.bench.stack import Stack, peak_rss_mib
from taskforge.domain.new_job import NewJob
from taskforge.domain.validation import PRIORITIES


@dataclass(slots=True)
class Result:
    name: str
    jobs: int
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


def _job(queue: str, index: int, **body: Any) -> dict[str, Any]:
    """The `index`-th job a scenario enqueues. Jobs carry every priority in turn, so the
    figures include a hint list per priority in Redis."""
    return {"jobType": "noop", "queue": queue, "priority": _priority(index), **body}


def _priority(index: int) -> int:
    return PRIORITIES[index % len(PRIORITIES)]


class RawHttpClient:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the status.

    General-purpose clients spend more CPU per request than the API does, and they would
    share this machine's two cores with it: the benchmark would measure its own client.
    This one does the minimum (no redirects, cookies or chunked bodies)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + body)
        status_line = await self._reader.readline()
        length = 0
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self._reader.readexactly(length)
        return int(status_line.split()[1])

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()


def _expect_created(status: int) -> None:
    if status != 201:
        raise RuntimeError(f"POST /jobs answered {status}")


def _bodies(queue: str) -> list[bytes]:
    """One encoded POST /jobs body per priority, made before the clock starts."""
    return [json.dumps(_job(queue, index)).encode() for index in range(len(PRIORITIES))]


async def bench_sequential(stack: Stack, count: int) -> Result:
    bodies = _bodies(stack.queue("enqueue"))
    client = RawHttpClient(stack.api_url)
    try:
        started = time.perf_counter()
        for index in range(count):
            _expect_created(await client.post("/jobs", bodies[index % len(bodies)]))
        return Result("enqueue, 1 client sequential", count, time.perf_counter() - started)
    finally:
        await client.close()


async def bench_concurrent(stack: Stack, count: int, in_flight: int) -> Result:
    bodies = _bodies(stack.queue("enqueue"))
    clients = [RawHttpClient(stack.api_url) for _ in range(in_flight)]
    remaining = iter(range(count))

    async def client_loop(client: RawHttpClient) -> None:
        for index in remaining:
            _expect_created(await client.post("/jobs", bodies[index % len(bodies)]))

    try:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for client in clients))
        return Result(f"enqueue, {in_flight} in flight", count, time.perf_counter() - started)
    finally:
        await asyncio.gather(*(client.close() for client in clients))


async def bench_batch(stack: Stack, total: int, size: int) -> Result:
    queue = stack.queue("enqueue")
    # Encoded before the clock starts, as the other enqueue scenarios' bodies are: the
    # client's JSON encoding is not the API's time.
    bodies = [
        json.dumps(
            {"jobs": [_job(queue, sent + n) for n in range(min(size, total - sent))]}
        ).encode()
        for sent in range(0, total, size)
    ]
    client = RawHttpClient(stack.api_url)
    try:
        started = time.perf_counter()
        for body in bodies:
            status = await client.post("/jobs/batch", body)
            if status != 201:
                raise RuntimeError(f"POST /jobs/batch answered {status}")
        return Result(f"batch enqueue ({size}/request)", total, time.perf_counter() - started)
    finally:
        await client.close()


async def preload(stack: Stack, queue: str, count: int) -> None:
    """Enqueue `count` no-op jobs with hints, as fast as the store takes them."""
    hints = HintDispatcher(stack.ready_queue)
    enqueue = EnqueueJobs(PostgresJobStore(stack.pool), hints)
    ids = Uuid7Source()
    for start in range(0, count, 5_000):
        chunk = [
            NewJob(id=ids.new_id(), queue=queue, job_type="noop", priority=_priority(n))
            for n in range(start, start + min(5_000, count - start))
        ]
        await enqueue(chunk)
    await enqueue.drain()  # every hint pushed before the clock starts


async def bench_drain(
    stack: Stack, label: str, count: int, workers: int, concurrency: int, note: str = ""
) -> Result:
    """Drain `count` preloaded no-op jobs with `workers` worker processes. Besides the rate,
    the share of the machine's CPU that Postgres, the workers and everything together used
    while jobs ran (`postgres_cpu_pct` (only when Postgres runs on this machine),
    `workers_cpu_pct`, `machine_cpu_pct`)."""
    queue = stack.queue(f"drain-{label}")
    await preload(stack, queue, count)
    server = await local_postgres_server(stack.pool)
    processes: list[subprocess.Popen[bytes]] = []
    groups = {
        "machine": machine_busy_seconds,
        "workers": lambda: sum(process_cpu_seconds(p.pid) for p in processes),
    }
    if server is not None:
        groups["postgres"] = lambda: postgres_cpu_seconds(server)
    sampler = CpuSampler(groups)
    sampling_done = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(sampling_done))
    began = time.perf_counter()
    processes += [
        stack.spawn("worker", WORKER_QUEUES=queue, WORKER_CONCURRENCY=str(concurrency))
        for _ in range(workers)
    ]

    try:
        await stack.until_succeeded(queue, count, f"{count} jobs to succeed", poll=0.1)
    finally:
        sampling_done.set()
        await sampling
    wall = time.perf_counter() - began
    row = await stack.pool.fetchrow(
        "SELECT extract(epoch FROM min(started_at)) AS first, "
        "extract(epoch FROM max(finished_at)) AS last FROM jobs WHERE queue = $1",
        queue,
    )
    rss = max(peak_rss_mib(process.pid) for process in processes)
    for process in processes:
        await stack.stop(process)
    assert row is not None  # an aggregate answers one row
    first, last = float(row["first"]), float(row["last"])
    busy = last - first if last > first else wall
    capacity = busy * machine_cores() / 100  # CPU seconds in 1 % of the machine
    extra = {"workers": float(workers), "wall_seconds": wall, "worker_peak_rss_mib": rss}
    extra |= {
        f"{group}_cpu_pct": seconds / capacity
        for group, seconds in sorted(sampler.between(first, last).items())
    }
    name = f"drain {count:,} jobs, {workers} worker{'s' if workers > 1 else ''}{note}"
    return Result(name, count, busy, extra)


async def bench_latency(
    stack: Stack, rate: float, seconds: float, label: str = "latency"
) -> Result:
    queue = stack.queue(label)
    worker = stack.spawn("worker", WORKER_QUEUES=queue)
    scheduler = stack.spawn("scheduler")
    total = int(rate * seconds)
    async with httpx.AsyncClient(base_url=stack.api_url) as client:
        # The clock starts once a first job ran: on a busy machine a worker may need seconds
        # to start, which is start-up, not latency. That job (it has the only idempotency
        # key of the queue) is left out of the figures.
        warm_up = _job(queue, 0, idempotencyKey=f"{queue}-warm-up")
        (await client.post("/jobs", json=warm_up)).raise_for_status()

        await stack.until_succeeded(queue, 1, "the worker to run a first job")
        started = time.perf_counter()
        for index in range(total):
            pause = started + index / rate - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            (await client.post("/jobs", json=_job(queue, index))).raise_for_status()
        elapsed = time.perf_counter() - started

    await stack.until_succeeded(queue, total + 1, "the latency jobs to finish", poll=0.1)
    rows = await stack.pool.fetch(
        "SELECT extract(epoch FROM started_at - created_at) * 1000 AS to_start, "
        "extract(epoch FROM finished_at - created_at) * 1000 AS to_finish "
        "FROM jobs WHERE queue = $1 AND idempotency_key IS NULL",
        queue,
    )
    for process in (worker, scheduler):
        await stack.stop(process)
    to_start = sorted(float(r["to_start"]) for r in rows)
    to_finish = sorted(float(r["to_finish"]) for r in rows)
    extra = {
        "start_p50_ms": percentile(to_start, 50),
        "start_p95_ms": percentile(to_start, 95),
        "start_p99_ms": percentile(to_start, 99),
        "finish_p50_ms": percentile(to_finish, 50),
        "finish_p95_ms": percentile(to_finish, 95),
        "finish_p99_ms": percentile(to_finish, 99),
    }
    return Result(f"latency at {rate:g} jobs/s for {seconds:g}s", total, elapsed, extra)


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


async def add_finished_jobs(stack: Stack, count: int) -> None:
    """History: `count` SUCCEEDED rows in another queue, as a busy table would have."""
    await stack.pool.execute(
        """
        INSERT INTO jobs (id, queue, job_type, payload, state, max_attempts, initial_delay,
                          backoff, max_delay, jitter, visibility_timeout, attempt_count,
                          next_run_at, created_at, updated_at, started_at, finished_at)
        SELECT gen_random_uuid(), $1, 'noop', '{}', 'SUCCEEDED', 3, 1, 2, 300, false, 30, 1,
               now(), now(), now(), now(), now()
        FROM generate_series(1, $2)
        """,
        stack.queue("history"),
        count,
    )
    await stack.pool.execute("ANALYZE jobs")
