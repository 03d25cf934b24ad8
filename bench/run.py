"""`taskforge bench`: one or more runs on fresh stacks, a table, and the JSON report."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from taskforge.bench.charts import draw_runs, save_picture
from taskforge.bench.cpu import machine_cores
from taskforge.bench.report import median_report, render
from taskforge.bench.scenarios import (
    Result,
    add_finished_jobs,
    bench_batch,
    bench_concurrent,
    bench_drain,
    bench_latency,
    bench_sequential,
)
from taskforge.bench.stack import Stack, peak_rss_mib, serving_processes
from taskforge.bench.startup import bench_cli_startup, bench_worker_startup
from taskforge.bench.transactional import (
    bench_txn_enqueue,
    bench_txn_enqueue_many,
    bench_txn_latency,
)
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.runtime import run_until_interrupted

if TYPE_CHECKING:
    import subprocess


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
    worker_counts: tuple[int, ...] = (1, 2)
    """The drain runs once with each of these numbers of worker processes (`--workers`)."""
    api_worker_counts: tuple[int, ...] = ()
    """The HTTP scenarios run once against an API started with each of these API_WORKERS
    (`--api-workers`); empty: once, against the API as the environment configures it."""
    startup_tries: int = 5
    txn_enqueue: int = 5_000
    txn_many_transactions: int = 20
    """Transactions of `enqueue_many` (1,000 jobs each)."""
    txn_latency_rate: float = 100.0
    txn_latency_seconds: float = 20.0

    @classmethod
    def quick(
        cls, worker_counts: tuple[int, ...] = (1, 2), api_worker_counts: tuple[int, ...] = ()
    ) -> BenchSizes:
        return cls(
            worker_counts=worker_counts,
            api_worker_counts=api_worker_counts,
            sequential=200,
            concurrent=500,
            batch_total=2_000,
            drain=1_000,
            latency_rate=100.0,
            latency_seconds=3.0,
            scale_drain=0,
            scale_finished=0,
            startup_tries=1,
            txn_enqueue=500,
            txn_many_transactions=2,
            txn_latency_seconds=3.0,
        )


@contextlib.asynccontextmanager
async def _step(progress: Progress, label: str) -> AsyncIterator[None]:
    task = progress.add_task(label, total=None)
    try:
        yield
    finally:
        progress.update(task, completed=1, total=1)


async def _http_scenarios(
    stack: Stack,
    sizes: BenchSizes,
    progress: Progress,
    api: subprocess.Popen[bytes],
    api_workers: int | None,
) -> list[Result]:
    """Enqueue over HTTP against the running `api`; `api_workers` (its API_WORKERS, when
    the run compares several) is added to each scenario's name, and to its figures with
    the number of processes serving it when the scenarios began."""
    after = "" if api_workers is None else f", API_WORKERS={api_workers}"
    serving = serving_processes(api.pid)
    results = []
    async with _step(progress, f"enqueue over HTTP, one client{after}"):
        results.append(await bench_sequential(stack, sizes.sequential))
    async with _step(progress, f"enqueue over HTTP, {sizes.in_flight} in flight{after}"):
        results.append(await bench_concurrent(stack, sizes.concurrent, sizes.in_flight))
    async with _step(progress, f"batch enqueue over HTTP{after}"):
        results.append(await bench_batch(stack, sizes.batch_total, sizes.batch_size))
    if api_workers is None:
        return results
    extra = {"api_workers": api_workers, "api_processes": serving}
    return [Result(f"{r.name}{after}", r.jobs, r.seconds, {**r.extra, **extra}) for r in results]


async def run_bench(settings: Settings, sizes: BenchSizes, console: Console) -> dict[str, Any]:
    stack = Stack(settings)
    results: list[Result] = []
    api_rss = 0.0
    try:
        await stack.open()
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            # Each size of --api-workers gets an API of its own; the scenarios after them
            # (the latency, the CLI) run against one as the environment configures it.
            for api_workers in sizes.api_worker_counts:
                api = await stack.start_api(api_workers)
                results += await _http_scenarios(stack, sizes, progress, api, api_workers)
                api_rss = max(api_rss, peak_rss_mib(api.pid))
                await stack.stop(api)
            api = await stack.start_api()
            if not sizes.api_worker_counts:
                results += await _http_scenarios(stack, sizes, progress, api, None)
            for workers in sizes.worker_counts:
                label = f"{workers} worker{'s' if workers > 1 else ''}"
                async with _step(progress, f"drain {sizes.drain:,} no-op jobs, {label}"):
                    results.append(
                        await bench_drain(
                            stack, f"{workers}w", sizes.drain, workers, sizes.concurrency
                        )
                    )
            async with _step(progress, "latency at a steady rate"):
                results.append(
                    await bench_latency(stack, sizes.latency_rate, sizes.latency_seconds)
                )
            async with _step(progress, "start-up: a worker, and taskforge-cli status"):
                results.append(await bench_worker_startup(stack, sizes.startup_tries))
                results.append(await bench_cli_startup(stack, sizes.startup_tries))
            async with _step(progress, "txn-enqueue: one job per transaction"):
                results.append(await bench_txn_enqueue(stack, sizes.txn_enqueue))
            async with _step(progress, "txn-enqueue-many: 1,000 jobs per transaction"):
                results.append(await bench_txn_enqueue_many(stack, sizes.txn_many_transactions))
            async with _step(progress, "txn-latency: commit to handler start"):
                results.append(
                    await bench_txn_latency(
                        stack, sizes.txn_latency_rate, sizes.txn_latency_seconds
                    )
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
        api_rss = max(api_rss, peak_rss_mib(api.pid))
    finally:
        await stack.close()
    return {
        "sizes": asdict(sizes),
        "cores": machine_cores(),
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


MAX_WORKERS = 64


def parse_worker_counts(text: str, option: str = "--workers") -> tuple[int, ...]:
    """`--workers 1,2,4` (or `--api-workers 1,2`): numbers of processes, in that order,
    each 1-64, each once. Raises ValueError saying what is wrong, naming `option`."""
    counts: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= MAX_WORKERS:
            raise ValueError(
                f"{option} {text!r}: expected numbers of workers 1-{MAX_WORKERS} separated"
                f" by commas (as 1,2,4), got {part!r}"
            )
        if int(part) not in counts:
            counts.append(int(part))
    return tuple(counts)


def main(
    settings: Settings,
    quick: bool,
    out: Path,
    runs: int = 1,
    worker_counts: tuple[int, ...] = (1, 2),
    api_worker_counts: tuple[int, ...] = (),
) -> int:
    """Run the scenarios `runs` times, each time on a fresh stack; with more than one run,
    report the medians (these figures vary from run to run on a shared machine)."""
    console = Console(width=None if sys.stdout.isatty() else 160)
    sizes = (
        BenchSizes.quick(worker_counts, api_worker_counts)
        if quick
        else BenchSizes(worker_counts=worker_counts, api_worker_counts=api_worker_counts)
    )
    reports: list[dict[str, Any]] = []
    for number in range(1, runs + 1):
        if runs > 1:
            console.print(f"run {number} of {runs}")
        reports.append(run_until_interrupted(run_bench(settings, sizes, console)))
        report = reports[0] if len(reports) == 1 else median_report(reports)
        # Written after every run: a run that fails later does not take the others with it.
        out.write_text(json.dumps(report, indent=2))
    render(report, console)
    console.print(f"written to {out}")
    console.print(save_picture(draw_runs, report, out.with_suffix(".png")))
    return 0
