"""`taskforge bench --soak DURATION`: a long run at half the measured drain rate, with
retention set short, sampled every few seconds.

Each sample holds the jobs finished per second since the last one, enqueue->start p50/p99 of
the jobs started since then, the resident memory of every TaskForge process, the size of
each table and its indexes, dead tuples, Redis memory and the errors so far. Targets (for
15 minutes): resident memory grows under 10% after the first minute, table and index sizes
level off once retention prunes, p99 of the last minute within 1.5x of the first, no errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from taskforge.application.scheduler import SchedulerSettings
from taskforge.bench.big_tables import percentile
from taskforge.bench.charts import draw_soak, save_picture
from taskforge.bench.scenarios import RawHttpClient, bench_drain
from taskforge.bench.stack import Stack, rss_mib
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.runtime import run_until_interrupted

RSS_GROWTH_TARGET = 0.10
SIZE_GROWTH_TARGET = 0.10
P99_RATIO_TARGET = 1.5
PRUNE_INTERVAL = SchedulerSettings().prune_interval
"""The scheduler prunes at most this often while it keeps up."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([hms]?)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in "900", "90s", "15m", "1h30m" or "2m30s"; ValueError for anything else."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not compact or "".join(number + unit for number, unit in parts) != compact:
        raise ValueError(f"not a duration: {text!r} (examples: 300, 90s, 15m, 1h30m)")
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f"a duration must be positive: {text!r}")
    return seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class SoakSettings:
    duration: float
    sample_every: float = 5.0
    retention: float = 60.0
    """RETENTION_PERIOD for the run: finished jobs are pruned after this many seconds."""
    probe_jobs: int = 5_000
    """Jobs drained before the soak to measure the drain rate it runs at half of."""
    rate: float | None = None
    """Jobs per second to enqueue; None: half the measured drain rate."""

    def quick(self) -> SoakSettings:
        """Samples every second and a short drain-rate probe, for runs of seconds."""
        return replace(self, sample_every=1.0, probe_jobs=500)


@dataclass(slots=True)
class Sample:
    at: float
    """Seconds since the load started."""
    enqueued_per_second: float
    finished_per_second: float
    start_p50_ms: float
    start_p99_ms: float
    rss_mib: dict[str, float]
    table_bytes: dict[str, int]
    index_bytes: dict[str, int]
    dead_tuples: dict[str, int]
    redis_used_bytes: int
    errors: int


@dataclass(slots=True)
class _Load:
    rate: float
    sent: int = 0
    errors: list[str] = field(default_factory=list)


async def _produce(stack: Stack, queue: str, load: _Load, stop: asyncio.Event) -> None:
    """Enqueue at `load.rate` in small batches every 100 ms (one client keeps up with
    thousands a second this way, and its own CPU stays small on a shared machine)."""
    client = RawHttpClient(stack.api_url)
    started = time.perf_counter()
    try:
        while not stop.is_set():
            due = int(load.rate * (time.perf_counter() - started)) - load.sent
            if due > 0:
                body = json.dumps(
                    {"jobs": [{"jobType": "noop", "queue": queue} for _ in range(due)]}
                ).encode()
                try:
                    status = await client.post("/jobs/batch", body)
                except OSError as exc:
                    load.errors.append(f"POST /jobs/batch: {exc}")
                    await client.close()
                    client = RawHttpClient(stack.api_url)
                else:
                    if status != 201:
                        load.errors.append(f"POST /jobs/batch answered {status}")
                load.sent += due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        await client.close()


VACUUM_EVERY = 15.0
"""Seconds between the bench's own VACUUMs when the server runs without autovacuum."""

VACUUMED_TABLES = ("jobs", "job_counts", "dead_letters")


async def _vacuum(stack: Stack, stop: asyncio.Event) -> None:
    """Stand in for autovacuum on a server that has it off (test servers often do): without
    any vacuum no table of a queue levels off, whatever the queue does. A plain VACUUM, as
    autovacuum runs it (no FULL, no lock that blocks writers)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), VACUUM_EVERY)
        for table in VACUUMED_TABLES:
            await stack.pool.execute(f"VACUUM {table}")


SIZES = """
SELECT relname AS name, pg_table_size(relid) AS table_bytes,
       pg_indexes_size(relid) AS index_bytes, n_dead_tup AS dead_tuples
FROM pg_stat_user_tables WHERE relname IN ('jobs', 'dead_letters', 'job_counts')
"""

# The jobs started in a window. The bound on created_at only narrows the scan (the queue's
# entries of jobs_queue_state_created, checked in the index), so it is wide: a job that
# waited longer than it would not be counted.
STARTED_IN_WINDOW = """
SELECT extract(epoch FROM started_at - created_at) * 1000 AS ms FROM jobs
WHERE queue = $1 AND created_at >= $2::timestamptz - interval '15 minutes'
  AND started_at >= $2 AND started_at < $3
"""
FINISHED_IN_WINDOW = """
SELECT count(*) FROM jobs
WHERE queue = $1 AND created_at >= $2::timestamptz - interval '15 minutes'
  AND finished_at >= $2 AND finished_at < $3
"""
FAILED_JOBS = """
SELECT coalesce(sum(jobs), 0) FROM job_counts WHERE queue = $1 AND state IN ('FAILED', 'DLQ')
"""


async def run_soak(
    stack: Stack, api: subprocess.Popen[bytes], soak: SoakSettings, console: Console
) -> dict[str, Any]:
    """Measure the drain rate, then run the load on `stack` (opened, API started) for
    `soak.duration` seconds with a worker and a scheduler, sampling as it goes."""
    rate = soak.rate
    if rate is None:
        console.print(f"[soak] measuring the drain rate with {soak.probe_jobs:,} jobs")
        probe = await bench_drain(stack, "probe", soak.probe_jobs, 1, 10)
        rate = probe.rate / 2
    queue = stack.queue("soak")
    retention = str(soak.retention)
    processes = {
        "worker": stack.spawn("worker", WORKER_QUEUES=queue, RETENTION_PERIOD=retention),
        "scheduler": stack.spawn("scheduler", RETENTION_PERIOD=retention),
    }
    # The load starts once a first job ran: a worker's start-up is not part of the soak.
    client = RawHttpClient(stack.api_url)
    try:
        warm_up = {"jobType": "noop", "queue": queue, "idempotencyKey": f"{queue}-warm-up"}
        status = await client.post("/jobs", json.dumps(warm_up).encode())
    finally:
        await client.close()
    if status != 201:
        raise RuntimeError(f"POST /jobs answered {status}")

    await stack.until_succeeded(queue, 1, "the worker to run a first job")
    console.print(f"[soak] {rate:,.0f} jobs/s for {soak.duration:g} s, retention {retention} s")
    load = _Load(rate)
    stop = asyncio.Event()
    producer = asyncio.create_task(_produce(stack, queue, load, stop))
    autovacuum = await stack.pool.fetchval("SHOW autovacuum")
    vacuum = None
    if autovacuum != "on":
        console.print(f"[soak] autovacuum is off: the bench runs VACUUM every {VACUUM_EVERY:g} s")
        vacuum = asyncio.create_task(_vacuum(stack, stop))
    samples: list[Sample] = []
    latencies: list[float] = []
    began = time.perf_counter()
    window_start = await stack.pool.fetchval("SELECT now()")
    sent_before = 0
    try:
        while (elapsed := time.perf_counter() - began) < soak.duration:
            await asyncio.sleep(min(soak.sample_every, soak.duration - elapsed))
            window_end = await stack.pool.fetchval("SELECT now()")
            seconds = (window_end - window_start).total_seconds()
            started = [
                float(row["ms"])
                for row in await stack.pool.fetch(
                    STARTED_IN_WINDOW, queue, window_start, window_end
                )
            ]
            finished = await stack.pool.fetchval(
                FINISHED_IN_WINDOW, queue, window_start, window_end
            )
            latencies += started
            sizes = await stack.pool.fetch(SIZES)
            info = await stack.redis.info("memory")
            failed = int(await stack.pool.fetchval(FAILED_JOBS, queue))
            exited = [name for name, process in processes.items() if process.poll() is not None]
            samples.append(
                Sample(
                    at=time.perf_counter() - began,
                    enqueued_per_second=(load.sent - sent_before) / seconds,
                    finished_per_second=finished / seconds,
                    start_p50_ms=percentile(started, 50),
                    start_p99_ms=percentile(started, 99),
                    rss_mib={
                        name: rss_mib(process.pid)
                        for name, process in {"api": api, **processes}.items()
                    },
                    table_bytes={row["name"]: row["table_bytes"] for row in sizes},
                    index_bytes={row["name"]: row["index_bytes"] for row in sizes},
                    dead_tuples={row["name"]: row["dead_tuples"] for row in sizes},
                    redis_used_bytes=int(info["used_memory"]),
                    errors=len(load.errors) + failed + len(exited),
                )
            )
            sent_before, window_start = load.sent, window_end
            last = samples[-1]
            jobs_mib = (last.table_bytes.get("jobs", 0) + last.index_bytes.get("jobs", 0)) / 2**20
            console.print(
                f"[soak] {last.at:6.0f} s  {last.finished_per_second:7,.0f} jobs/s  "
                f"start p50 {last.start_p50_ms:6.1f} ms p99 {last.start_p99_ms:6.1f} ms  "
                f"jobs table {jobs_mib:6.1f} MiB  "
                f"errors {last.errors}"
            )
    finally:
        stop.set()
        await producer
        if vacuum is not None:
            await vacuum
        for process in processes.values():
            await stack.stop(process)
    report: dict[str, Any] = {
        "settings": {**asdict(soak), "rate": rate},
        "autovacuum": autovacuum if vacuum is None else f"off: VACUUM every {VACUUM_EVERY:g} s",
        "enqueued": load.sent,
        "producer_errors": load.errors[:20],
        "samples": [asdict(sample) for sample in samples],
        "start_latency_ms": _histogram(latencies),
    }
    report["verdicts"] = soak_verdicts(samples, soak)
    return report


def _histogram(values: list[float], bins: int = 60) -> dict[str, Any]:
    """Counts over logarithmic bins from 0.1 ms to the largest value, plus percentiles: the
    report keeps the shape of the distribution without every sample."""
    if not values:
        return {"edges_ms": [], "counts": [], "p50_ms": 0.0, "p99_ms": 0.0, "jobs": 0}
    low, high = 0.1, max(max(values), 1.0)
    edges = [low * (high / low) ** (index / bins) for index in range(bins + 1)]
    counts = [0] * bins
    for value in values:
        index = 0
        while index < bins - 1 and value >= edges[index + 1]:
            index += 1
        counts[index] += 1
    return {
        "edges_ms": edges,
        "counts": counts,
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "jobs": len(values),
    }


def soak_verdicts(samples: list[Sample], soak: SoakSettings) -> dict[str, Any]:
    """The targets, judged on the samples. The "first minute" is the first quarter of a run
    shorter than four minutes, so a short run is judged the same way on its own scale."""
    if not samples:
        return {}
    window = min(60.0, soak.duration / 4)
    settled = next((s for s in samples if s.at >= window), samples[-1])
    last = samples[-1]
    rss_growth = {
        name: (last.rss_mib[name] / settled.rss_mib[name] - 1) if settled.rss_mib[name] else 0.0
        for name in last.rss_mib
    }
    first = [s.start_p99_ms for s in samples if s.at <= window] or [samples[0].start_p99_ms]
    final = [s.start_p99_ms for s in samples if s.at >= last.at - window] or [last.start_p99_ms]
    p99_ratio = max(final) / max(max(first), 1e-9)

    def jobs_bytes(sample: Sample) -> int:
        return sample.table_bytes.get("jobs", 0) + sample.index_bytes.get("jobs", 0)

    # Pruning starts once the first jobs outlive retention and the next prune comes round.
    pruning = soak.retention + PRUNE_INTERVAL + soak.sample_every
    middle = [jobs_bytes(s) for s in samples if pruning <= s.at < last.at * 0.75]
    end = [jobs_bytes(s) for s in samples if s.at >= last.at * 0.75]
    size_growth = (max(end) / max(middle) - 1) if middle and end else None
    return {
        "rss_growth_after_first_minute": rss_growth,
        "rss_under_10_percent": all(g < RSS_GROWTH_TARGET for g in rss_growth.values()),
        "p99_last_over_first": p99_ratio,
        "p99_within_1_5x": p99_ratio <= P99_RATIO_TARGET,
        "jobs_size_growth_while_pruning": size_growth,
        "sizes_level_off": None if size_growth is None else size_growth <= SIZE_GROWTH_TARGET,
        "errors": last.errors,
        "zero_errors": last.errors == 0,
    }


async def _soak_on_fresh_stack(
    settings: Settings, soak: SoakSettings, console: Console
) -> dict[str, Any]:
    stack = Stack(settings)
    try:
        await stack.open()
        api = await stack.start_api()
        return await run_soak(stack, api, soak, console)
    finally:
        await stack.close()


def main(settings: Settings, soak: SoakSettings, out: Path) -> int:
    """Run the soak; write the JSON report to `out` and its picture next to it (.png).
    Exits 0 whether or not the targets were met: the verdicts are in the report."""
    console = Console(width=None if sys.stdout.isatty() else 160)
    report = run_until_interrupted(_soak_on_fresh_stack(settings, soak, console))
    out.write_text(json.dumps(report, indent=2))
    for name, verdict in report["verdicts"].items():
        console.print(f"{name}: {verdict}")
    console.print(f"written to {out}")
    console.print(save_picture(draw_soak, report, out.with_suffix(".png")))
    return 0
