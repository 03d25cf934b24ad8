"""`taskforge bench`: TaskForge's own benchmark, on the configured Postgres and Redis.

It starts its own stack (a scratch database, a private Redis key prefix and queues, an API
process and worker processes), measures, prints a table, writes JSON, and removes what it
created. Speeds are medians of what one run sees on this machine: compare runs side by
side, never against a fixed number.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from taskforge.adapters.postgres.jobs import PostgresJobRepository, create_pool
from taskforge.adapters.postgres.migrations import apply_migrations
from taskforge.adapters.redis.client import create_redis
from taskforge.adapters.redis.ready_queue import RedisReadyQueue
from taskforge.adapters.system import Uuid7Source
from taskforge.application.jobs import EnqueueJobs
from taskforge.domain.job import NewJob
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.runtime import run_event_loop

DEADLINE = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchSizes:
    sequential: int = 2_000
    in_flight: int = 100
    concurrent: int = 5_000
    batch_total: int = 20_000
    batch_size: int = 1_000
    drain: int = 10_000
    latency_rate: float = 200.0
    latency_seconds: float = 20.0
    scale_drain: int = 100_000
    scale_finished: int = 100_000
    concurrency: int = 10

    @classmethod
    def quick(cls) -> BenchSizes:
        return cls(
            sequential=200,
            concurrent=500,
            batch_total=2_000,
            drain=1_000,
            latency_rate=100.0,
            latency_seconds=3.0,
            scale_drain=0,
            scale_finished=0,
        )


@dataclass(slots=True)
class Result:
    name: str
    jobs: int
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


def free_port() -> int:
    """A local TCP port nothing listened on a moment ago: for a server to start, or as a
    port that refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


def peak_rss_mib(pid: int) -> float:
    """The highest peak resident set (VmHWM) of the process and its children, in MiB: with
    API_WORKERS > 1 the API's requests are served by the children of a supervisor. 0 where
    /proc is not available."""
    return max(_own_peak_rss_mib(each) for each in (pid, *_children(pid)))


def _own_peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children += [int(child) for child in task.read_text().split()]
    return children


class Stack:
    """The processes and data one bench run owns; `close` removes all of it."""

    def __init__(self, settings: Settings) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.admin_dsn = settings.require_postgres("bench")
        self.dsn = _with_database(self.admin_dsn, f"taskforge_bench_{self.run_id}")
        self.settings = settings
        self.prefix = f"taskforge:bench-{self.run_id}:"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.api_url = ""
        self.env = {
            **os.environ,
            "POSTGRES_DSN": self.dsn,
            "TASKFORGE_REDIS_PREFIX": self.prefix,
            "TASKFORGE_DEMO_HANDLERS": "true",
            "LOG_LEVEL": "warn",
            "QUEUE_NAME": self.queue("default"),
            "WORKER_CONCURRENCY": "10",
        }

    def queue(self, purpose: str) -> str:
        return f"bench-{self.run_id}-{purpose}"

    async def open(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "taskforge_bench_{self.run_id}"')
        finally:
            await conn.close()
        await apply_migrations(self.dsn)
        self.pool = await create_pool(self.dsn, min_size=1, max_size=4)
        self.redis = create_redis(
            host=self.settings.redis_addr.host,
            port=self.settings.redis_addr.port,
            db=self.settings.redis_db,
            password=self.settings.redis_password or None,
        )
        self.ready_queue = RedisReadyQueue(self.redis, self.prefix)

    def spawn(self, role: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "taskforge.entrypoints.cli.service", role, *args],
            env={**self.env, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(process)
        return process

    async def start_api(self) -> subprocess.Popen[bytes]:
        port = free_port()
        process = self.spawn("api", HTTP_ADDR=f"127.0.0.1:{port}")
        self.api_url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:
            await _until(lambda: _healthy(client, self.api_url), "the API to start")
        return process

    async def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()

    async def count(self, queue: str, state: str) -> int:
        value = await self.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE queue = $1 AND state = $2", queue, state
        )
        return int(value)

    async def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        with contextlib.suppress(AttributeError):
            await self.pool.close()
        with contextlib.suppress(AttributeError):
            keys = [key async for key in self.redis.scan_iter(match=f"{self.prefix}*")]
            keys += [key async for key in self.redis.scan_iter(match=f"bench-{self.run_id}-*")]
            if keys:
                await self.redis.delete(*keys)
            await self.redis.aclose()
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(
                f'DROP DATABASE IF EXISTS "taskforge_bench_{self.run_id}" WITH (FORCE)'
            )
        finally:
            await conn.close()


async def _healthy(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(f"{url}/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def _until(check: Callable[[], Awaitable[bool]], what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        await asyncio.sleep(poll)


def _job(queue: str, **body: Any) -> dict[str, Any]:
    return {"jobType": "noop", "queue": queue, **body}


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


async def bench_sequential(stack: Stack, count: int) -> Result:
    body = json.dumps(_job(stack.queue("enqueue"))).encode()
    client = RawHttpClient(stack.api_url)
    try:
        started = time.perf_counter()
        for _ in range(count):
            _expect_created(await client.post("/jobs", body))
        return Result("enqueue, 1 client sequential", count, time.perf_counter() - started)
    finally:
        await client.close()


async def bench_concurrent(stack: Stack, count: int, in_flight: int) -> Result:
    body = json.dumps(_job(stack.queue("enqueue"))).encode()
    clients = [RawHttpClient(stack.api_url) for _ in range(in_flight)]
    remaining = iter(range(count))

    async def client_loop(client: RawHttpClient) -> None:
        for _ in remaining:
            _expect_created(await client.post("/jobs", body))

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
        json.dumps({"jobs": [_job(queue) for _ in range(min(size, total - sent))]}).encode()
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
    jobs = PostgresJobRepository(stack.pool)
    enqueue = EnqueueJobs(jobs, stack.ready_queue)
    ids = Uuid7Source()
    for start in range(0, count, 5_000):
        chunk = [
            NewJob(id=ids.new_id(), queue=queue, job_type="noop")
            for _ in range(min(5_000, count - start))
        ]
        await enqueue(chunk)
    await enqueue.drain()  # every hint pushed before the clock starts


async def bench_drain(
    stack: Stack, label: str, count: int, workers: int, concurrency: int, note: str = ""
) -> Result:
    queue = stack.queue(f"drain-{label}")
    await preload(stack, queue, count)
    began = time.perf_counter()
    processes = [
        stack.spawn("worker", WORKER_QUEUES=queue, WORKER_CONCURRENCY=str(concurrency))
        for _ in range(workers)
    ]

    async def drained() -> bool:
        return await stack.count(queue, "SUCCEEDED") >= count

    await _until(drained, f"{count} jobs to succeed", poll=0.1)
    wall = time.perf_counter() - began
    row = await stack.pool.fetchrow(
        "SELECT extract(epoch FROM max(finished_at) - min(started_at)) AS busy "
        "FROM jobs WHERE queue = $1",
        queue,
    )
    rss = max(peak_rss_mib(process.pid) for process in processes)
    for process in processes:
        await stack.stop(process)
    busy = float(row["busy"]) if row and row["busy"] else wall
    name = f"drain {count:,} jobs, {workers} worker{'s' if workers > 1 else ''}{note}"
    return Result(name, count, busy, {"wall_seconds": wall, "worker_peak_rss_mib": rss})


async def bench_latency(stack: Stack, rate: float, seconds: float) -> Result:
    queue = stack.queue("latency")
    worker = stack.spawn("worker", WORKER_QUEUES=queue)
    scheduler = stack.spawn("scheduler")
    await asyncio.sleep(1.0)  # let the worker start and block in its pop
    total = int(rate * seconds)
    async with httpx.AsyncClient(base_url=stack.api_url) as client:
        started = time.perf_counter()
        for index in range(total):
            pause = started + index / rate - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            (await client.post("/jobs", json=_job(queue))).raise_for_status()
        elapsed = time.perf_counter() - started

    async def done() -> bool:
        return await stack.count(queue, "SUCCEEDED") >= total

    await _until(done, "the latency jobs to finish", poll=0.1)
    rows = await stack.pool.fetch(
        "SELECT extract(epoch FROM started_at - created_at) * 1000 AS to_start, "
        "extract(epoch FROM finished_at - created_at) * 1000 AS to_finish "
        "FROM jobs WHERE queue = $1",
        queue,
    )
    for process in (worker, scheduler):
        await stack.stop(process)
    to_start = sorted(float(r["to_start"]) for r in rows)
    to_finish = sorted(float(r["to_finish"]) for r in rows)
    extra = {
        "start_p50_ms": _percentile(to_start, 50),
        "start_p95_ms": _percentile(to_start, 95),
        "start_p99_ms": _percentile(to_start, 99),
        "finish_p50_ms": _percentile(to_finish, 50),
        "finish_p95_ms": _percentile(to_finish, 95),
        "finish_p99_ms": _percentile(to_finish, 99),
    }
    return Result(f"latency at {rate:g} jobs/s for {seconds:g}s", total, elapsed, extra)


def _percentile(values: list[float], pct: float) -> float:
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


@contextlib.asynccontextmanager
async def _step(progress: Progress, label: str) -> AsyncIterator[None]:
    task = progress.add_task(label, total=None)
    try:
        yield
    finally:
        progress.update(task, completed=1, total=1)


async def run_bench(settings: Settings, sizes: BenchSizes, console: Console) -> dict[str, Any]:
    stack = Stack(settings)
    results: list[Result] = []
    api_rss = 0.0
    try:
        await stack.open()
        api = await stack.start_api()
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            async with _step(progress, "enqueue over HTTP, one client"):
                results.append(await bench_sequential(stack, sizes.sequential))
            async with _step(progress, f"enqueue over HTTP, {sizes.in_flight} in flight"):
                results.append(await bench_concurrent(stack, sizes.concurrent, sizes.in_flight))
            async with _step(progress, "batch enqueue over HTTP"):
                results.append(await bench_batch(stack, sizes.batch_total, sizes.batch_size))
            async with _step(progress, f"drain {sizes.drain:,} no-op jobs, 1 worker"):
                results.append(await bench_drain(stack, "1w", sizes.drain, 1, sizes.concurrency))
            async with _step(progress, f"drain {sizes.drain:,} no-op jobs, 2 workers"):
                results.append(await bench_drain(stack, "2w", sizes.drain, 2, sizes.concurrency))
            async with _step(progress, "latency at a steady rate"):
                results.append(
                    await bench_latency(stack, sizes.latency_rate, sizes.latency_seconds)
                )
            if sizes.scale_drain:
                history = f", {sizes.scale_finished:,} finished in the table"
                async with _step(
                    progress, f"scale: {sizes.scale_finished:,} finished jobs in the table"
                ):
                    await add_finished_jobs(stack, sizes.scale_finished)
                async with _step(progress, f"scale: drain {sizes.drain:,}, 1 worker"):
                    results.append(
                        await bench_drain(stack, "s1", sizes.drain, 1, sizes.concurrency, history)
                    )
                async with _step(progress, f"scale: drain {sizes.scale_drain:,}, 1 worker"):
                    results.append(
                        await bench_drain(
                            stack, "s2", sizes.scale_drain, 1, sizes.concurrency, history
                        )
                    )
        api_rss = peak_rss_mib(api.pid)
    finally:
        await stack.close()
    return {
        "sizes": asdict(sizes),
        "api_peak_rss_mib": api_rss,
        "results": [
            {
                "name": r.name,
                "jobs": r.jobs,
                "seconds": r.seconds,
                "jobs_per_second": r.rate,
                **r.extra,
            }
            for r in results
        ],
    }


def median_report(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One report for several runs of the same scenarios: every figure is the median of the
    runs' (peak RSS the highest of them; a rate is the jobs over the median time, so a row
    adds up with an even number of runs too), and each run's report is kept under "runs"."""
    results = []
    for index, row in enumerate(runs[0]["results"]):
        merged = {
            key: _combined(key, [run["results"][index][key] for run in runs])
            for key in row
            if key != "jobs_per_second"
        }
        merged["jobs_per_second"] = merged["jobs"] / merged["seconds"] if merged["seconds"] else 0.0
        results.append(merged)
    return {
        "sizes": runs[0]["sizes"],
        "api_peak_rss_mib": max(run["api_peak_rss_mib"] for run in runs),
        "results": results,
        "runs": runs,
    }


def _combined(key: str, values: list[Any]) -> Any:
    if key in ("name", "jobs"):  # the same in every run
        return values[0]
    return max(values) if "peak_rss" in key else statistics.median(values)


def render(report: dict[str, Any], console: Console) -> None:
    runs = report.get("runs", [])
    title = f"TaskForge bench: medians of {len(runs)} runs" if runs else "TaskForge bench"
    table = Table(title=title)
    table.add_column("scenario")
    table.add_column("jobs", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("jobs/s", justify="right")
    if runs:
        table.add_column("jobs/s of each run", justify="right")
    table.add_column("notes")
    for index, row in enumerate(report["results"]):
        notes = ", ".join(
            f"{key}={value:.1f}"
            for key, value in row.items()
            if key not in {"name", "jobs", "seconds", "jobs_per_second"}
        )
        each = (
            [", ".join(f"{run['results'][index]['jobs_per_second']:,.0f}" for run in runs)]
            if runs
            else []
        )
        table.add_row(
            row["name"],
            f"{row['jobs']:,}",
            f"{row['seconds']:.2f}",
            f"{row['jobs_per_second']:,.0f}",
            *each,
            notes,
        )
    console.print(table)
    console.print(f"API peak RSS: {report['api_peak_rss_mib']:.1f} MiB")


def main(settings: Settings, quick: bool, out: Path, runs: int = 1) -> int:
    """Run the scenarios `runs` times, each time on a fresh stack; with more than one run,
    report the medians (these figures vary from run to run on a shared machine)."""
    console = Console(width=None if sys.stdout.isatty() else 160)
    sizes = BenchSizes.quick() if quick else BenchSizes()
    reports: list[dict[str, Any]] = []
    for number in range(1, runs + 1):
        if runs > 1:
            console.print(f"run {number} of {runs}")
        reports.append(run_event_loop(run_bench(settings, sizes, console)))
        report = reports[0] if len(reports) == 1 else median_report(reports)
        # Written after every run: a run that fails later does not take the others with it.
        out.write_text(json.dumps(report, indent=2))
    render(report, console)
    console.print(f"written to {out}")
    return 0
