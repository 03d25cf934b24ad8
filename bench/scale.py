"""`taskforge bench --big-tables`: the same measurements on an empty database and after
filling it with a million jobs, side by side, against the targets.

Targets: drain rate and enqueue->start latency within 20% of the empty-table figures, every
read endpoint and every sweep under 50 ms at p99, every dashboard page under 150 ms at p99.
Speeds vary on a shared machine: the verdicts compare figures of one run, never of runs on
different days.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from taskforge.adapters.postgres.dashboard import (
    COUNT_DELAYED,
    COUNT_READY,
    SELECT_GROUP_MEMBERS,
    SELECT_GROUPS,
)
from taskforge.adapters.postgres.dead_letter_store import COUNT_DEAD_LETTERS, FIND_DEAD_LETTERS
from taskforge.adapters.postgres.job_lists import FIND_JOBS, find_statement
from taskforge.adapters.postgres.job_store import COUNT_BY_QUEUE_AND_STATE
from taskforge.adapters.postgres.lease_store import CLAIM_DUE_JOBS, CLAIM_JOBS
from taskforge.adapters.postgres.sweeps import (
    COUNT_PENDING,
    FIND_NEVER_PUBLISHED,
    FIND_UNPUBLISHED,
    FOLD_JOB_COUNTS,
    PROMOTE_DUE,
    PRUNE_FINISHED,
    REAP_EXPIRED,
)
from taskforge.application.ports import ListFilter
from taskforge.bench.big_tables import (
    BigTableSizes,
    fill_big_tables,
    time_dashboard,
    time_reads,
    time_sweeps,
)
from taskforge.bench.charts import draw_scale, save_picture
from taskforge.bench.scenarios import Result, bench_drain, bench_latency
from taskforge.bench.stack import Stack
from taskforge.domain.states import JobState
from taskforge.domain.validation import PRIORITIES
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.runtime import run_until_interrupted

READ_P99_TARGET_MS = 50.0
PAGE_P99_TARGET_MS = 150.0
"""A dashboard page (GET /ui...), which reads several things to render one page."""
SLOWDOWN_TARGET = 1.2
"""Drain time and latency p50 on the big tables at most this many times the empty ones."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleSizes:
    jobs: int = 1_000_000
    dead_letters: int = 50_000
    drain: int = 10_000
    latency_rate: float = 200.0
    latency_seconds: float = 20.0
    repeat: int = 100
    concurrency: int = 10

    def quick(self) -> ScaleSizes:
        """The same table sizes with short measurements."""
        return ScaleSizes(
            jobs=self.jobs,
            dead_letters=self.dead_letters,
            drain=300,
            latency_rate=50.0,
            latency_seconds=2.0,
            repeat=5,
        )


def _explained(name: str, statement: str, *args: Any) -> tuple[str, str, tuple[Any, ...]]:
    return name, statement, args


# Counting over the table, as /stats, /queues, /metrics and list totals did before
# migration 0013: explained in the same run for comparison (docs/performance.md).
BEFORE_COUNTS = "SELECT queue, state, count(*) AS jobs FROM jobs GROUP BY queue, state"
# The dashboard overview's counts before they read job_counts: every queue's every state
# counted through an index up to 10,001 (one column shown; the others were alike).
BEFORE_OVERVIEW_COUNT = """
SELECT count(*) FROM (SELECT 1 FROM jobs WHERE queue = $1 AND state = 'SUCCEEDED' LIMIT 10001) AS c
"""


async def explain_hot_statements(stack: Stack, queue: str) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statements every request or tick runs, each in a
    transaction that is rolled back (the sweeps and claims write)."""
    never = [uuid.uuid4()]
    priorities = list(PRIORITIES)
    statements = [
        _explained("list jobs, no filter", FIND_JOBS, 50, 0),
        _explained(
            "list jobs, queue and state",
            find_statement(ListFilter(queue=queue, state=JobState.PENDING))[0],
            *(50, 0, queue, "PENDING"),
        ),
        _explained(
            "list jobs, state",
            find_statement(ListFilter(state=JobState.SUCCEEDED))[0],
            *(50, 0, "SUCCEEDED"),
        ),
        _explained("stats: counts per queue and state", COUNT_BY_QUEUE_AND_STATE),
        _explained("before: counts over the jobs table", BEFORE_COUNTS),
        _explained("dead-letter count", COUNT_DEAD_LETTERS),
        _explained("dashboard: ready jobs, up to 10,001", COUNT_READY, [queue], priorities, 10_001),
        _explained(
            "dashboard: delayed jobs, up to 10,001", COUNT_DELAYED, [queue], priorities, 10_001
        ),
        _explained(
            "before: dashboard, one capped count of 7 per queue", BEFORE_OVERVIEW_COUNT, queue
        ),
        _explained("dashboard: dead-letter groups", SELECT_GROUPS, 200),
        _explained(
            "dashboard: a group's members", SELECT_GROUP_MEMBERS, "email", "order N not found", 100
        ),
        _explained("list dead letters", FIND_DEAD_LETTERS, 50, 0),
        _explained("claim by hinted ids", CLAIM_JOBS, never, "bench"),
        _explained("claim without hints", CLAIM_DUE_JOBS, [queue], "bench", 10),
        _explained("sweep: promote due retries", PROMOTE_DUE, 500),
        _explained("sweep: reap expired leases", REAP_EXPIRED, 500, "expired", "exhausted"),
        _explained("sweep: never published", FIND_NEVER_PUBLISHED, 500),
        _explained("sweep: pending jobs per queue", COUNT_PENDING),
        _explained("sweep: republish stale hints", FIND_UNPUBLISHED, [queue], [0], 500, 30.0),
        _explained("sweep: prune finished", PRUNE_FINISHED, 7 * 86_400.0, 500),
        _explained("sweep: fold job counts", FOLD_JOB_COUNTS),
    ]
    plans = {}
    async with stack.pool.acquire() as conn:
        for name, statement, args in statements:
            transaction = conn.transaction()
            await transaction.start()
            try:
                rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {statement}", *args)
            finally:
                await transaction.rollback()
            plans[name] = "\n".join(row[0] for row in rows)
    return plans


async def _measure(
    stack: Stack, label: str, sizes: ScaleSizes, queues: list[str], console: Console
) -> dict[str, Any]:
    console.print(f"[{label}] reads and sweeps, {sizes.repeat} times each")
    reads = await time_reads(stack.api_url, queues[0], sizes.repeat)
    pages = await time_dashboard(stack.api_url, stack.pool, queues[0], sizes.repeat)
    sweeps = await time_sweeps(stack.pool, queues, sizes.repeat, 7 * 86_400.0)
    console.print(f"[{label}] drain {sizes.drain:,} jobs")
    drain: Result = await bench_drain(stack, label, sizes.drain, 1, sizes.concurrency)
    console.print(f"[{label}] latency at {sizes.latency_rate:g} jobs/s")
    latency_queue = f"latency-{label}"
    latency = await bench_latency(
        stack, sizes.latency_rate, sizes.latency_seconds, label=latency_queue
    )
    rows = await stack.pool.fetch(
        "SELECT extract(epoch FROM started_at - created_at) * 1000 AS ms FROM jobs "
        "WHERE queue = $1 AND idempotency_key IS NULL ORDER BY 1",
        stack.queue(latency_queue),
    )
    return {
        "timings": {t.name: t.summary() for t in (*reads, *pages, *sweeps)},
        "drain": {"jobs": drain.jobs, "seconds": drain.seconds, "jobs_per_second": drain.rate},
        "latency": latency.extra,
        "start_latency_ms": [float(row["ms"]) for row in rows],
    }


def verdicts(empty: dict[str, Any], big: dict[str, Any]) -> dict[str, Any]:
    """Each target with the figure it was judged on and whether it was met."""
    drain_ratio = big["drain"]["seconds"] / empty["drain"]["seconds"]
    p50_ratio = big["latency"]["start_p50_ms"] / max(empty["latency"]["start_p50_ms"], 1e-9)
    p99_ratio = big["latency"]["start_p99_ms"] / max(empty["latency"]["start_p99_ms"], 1e-9)
    pages = {name: t for name, t in big["timings"].items() if name.startswith("GET /ui")}
    slow = {
        name: timing["p99_ms"]
        for name, timing in big["timings"].items()
        if name not in pages and timing["p99_ms"] >= READ_P99_TARGET_MS
    }
    slow_pages = {
        name: timing["p99_ms"]
        for name, timing in pages.items()
        if timing["p99_ms"] >= PAGE_P99_TARGET_MS
    }
    return {
        "drain_time_ratio": drain_ratio,
        "drain_within_20_percent": drain_ratio <= SLOWDOWN_TARGET,
        "start_p50_ratio": p50_ratio,
        "start_p99_ratio": p99_ratio,
        "latency_within_20_percent": p50_ratio <= SLOWDOWN_TARGET,
        "over_50_ms_p99": slow,
        "reads_and_sweeps_under_50_ms": not slow,
        "pages_over_150_ms_p99": slow_pages,
        "pages_under_150_ms": not slow_pages,
    }


async def run_scale(settings: Settings, sizes: ScaleSizes, console: Console) -> dict[str, Any]:
    stack = Stack(settings)
    try:
        await stack.open()
        await stack.start_api()
        queues = [stack.queue(name) for name in ("orders", "emails", "reports", "webhooks")]
        empty = await _measure(stack, "empty", sizes, queues, console)
        table_sizes = BigTableSizes.of(sizes.jobs, sizes.dead_letters)
        # A session of its own: no statement timeout, and no wait for the WAL flush of
        # each chunk (a crash would only lose the scratch data).
        conn = await asyncpg.connect(stack.direct_dsn)
        try:
            await conn.execute("SET synchronous_commit = off")
            seconds = await fill_big_tables(
                conn, queues, table_sizes, lambda step: console.print(f"[fill] {step}")
            )
        finally:
            await conn.close()
        console.print(f"[fill] done in {seconds:.1f} s")
        big = await _measure(stack, "big", sizes, queues, console)
        plans = await explain_hot_statements(stack, queues[0])
        stored = await stack.pool.fetchrow(
            "SELECT (SELECT count(*) FROM jobs) AS jobs, "
            "(SELECT count(*) FROM dead_letters) AS dead_letters, "
            "pg_total_relation_size('jobs') AS jobs_bytes"
        )
    finally:
        await stack.close()
    assert stored is not None
    return {
        "sizes": asdict(sizes),
        "queue": queues[0],
        "stored": {**dict(stored), "fill_seconds": seconds},
        "empty": empty,
        "big": big,
        "verdicts": verdicts(empty, big),
        "explain": plans,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def render_scale(report: dict[str, Any], console: Console) -> None:
    stored = report["stored"]
    table = Table(
        title=f"TaskForge bench, big tables: {stored['jobs']:,} jobs, "
        f"{stored['dead_letters']:,} dead letters (filled in {stored['fill_seconds']:.0f} s)"
    )
    for column in ("measured", "empty p50", "empty p99", "big p50", "big p99"):
        table.add_column(column, justify="left" if column == "measured" else "right")
    empty, big = report["empty"], report["big"]
    for name, timing in big["timings"].items():
        before = empty["timings"][name]
        table.add_row(
            name,
            f"{before['p50_ms']:.1f} ms",
            f"{before['p99_ms']:.1f} ms",
            f"{timing['p50_ms']:.1f} ms",
            f"{timing['p99_ms']:.1f} ms",
        )
    table.add_row(
        f"drain {empty['drain']['jobs']:,} jobs, jobs/s",
        f"{empty['drain']['jobs_per_second']:,.0f}",
        "",
        f"{big['drain']['jobs_per_second']:,.0f}",
        "",
    )
    table.add_row(
        "enqueue->start latency",
        f"{empty['latency']['start_p50_ms']:.1f} ms",
        f"{empty['latency']['start_p99_ms']:.1f} ms",
        f"{big['latency']['start_p50_ms']:.1f} ms",
        f"{big['latency']['start_p99_ms']:.1f} ms",
    )
    console.print(table)
    verdict = report["verdicts"]
    console.print(
        f"drain time big/empty {verdict['drain_time_ratio']:.2f} "
        f"(target <= {SLOWDOWN_TARGET}), start p50 big/empty {verdict['start_p50_ratio']:.2f}, "
        f"p99 {verdict['start_p99_ratio']:.2f}; over 50 ms at p99: "
        f"{', '.join(verdict['over_50_ms_p99']) or 'none'}; dashboard pages over "
        f"{PAGE_P99_TARGET_MS:g} ms at p99: {', '.join(verdict['pages_over_150_ms_p99']) or 'none'}"
    )


def write_explain(report: dict[str, Any], path: Path) -> None:
    path.write_text("".join(f"-- {name}\n{plan}\n\n" for name, plan in report["explain"].items()))


def main(settings: Settings, sizes: ScaleSizes, out: Path) -> int:
    """Run the big-table scenario; write the JSON report to `out`, the plans of the hot
    statements next to it (.explain.txt) and its picture (.png)."""
    console = Console(width=None if sys.stdout.isatty() else 160)
    report = run_until_interrupted(run_scale(settings, sizes, console))
    out.write_text(json.dumps(report, indent=2))
    write_explain(report, out.with_suffix(".explain.txt"))
    render_scale(report, console)
    console.print(f"written to {out}")
    console.print(save_picture(draw_scale, report, out.with_suffix(".png")))
    return 0
