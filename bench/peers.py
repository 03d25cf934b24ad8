"""`just bench-peers`: TaskForge beside other Python job queues, in one run on one machine.

The peers (pgqueuer, dramatiq; pinned with hashes in scripts/peers/requirements.txt) live in
an environment of their own, .venv-peers, and run through the small programs beside that
file, each printing its figures as JSON. Every round runs every scenario of every system,
the systems in a rotating order so that none always runs first or last on a machine whose
load changes; the report gives each scenario's median over the rounds.

Scenarios:
- drain: JOBS no-op jobs are stored (untimed), then one worker process is spawned with
  concurrency 10; timed from the spawn to the last job durably done (TaskForge and
  pgqueuer: the latest completion timestamp their tables hold; dramatiq: its last message
  acked, polled every 10 ms). Each peer at its documented settings, plus a row for the
  setting that made it fastest here.
- enqueue: one job per call, one after another, from the application's process
  (TaskForge: `taskforge.enqueue` on an asyncpg connection, as pgqueuer's
  `Queries.enqueue`; dramatiq: `actor.send`).
- enqueue many: the bulk form, 1,000 jobs a call (TaskForge `taskforge.enqueue_many`,
  pgqueuer `Queries.enqueue` with lists; dramatiq has none).
Each Postgres run, TaskForge's enqueues as pgqueuer's every scenario, starts on an empty
database of its own, its schema installed untimed.

The enqueue scenarios take about a second a run, and a run's figure moves by +-20% on a
shared machine, more than the two Postgres queues differ by: each round runs them in
PASSES passes (every system once a pass, the first system rotating from pass to pass),
so their medians are of rounds x passes runs. Each TaskForge row also gives its ratio to
pgqueuer pass by pass (pgqueuer's row at its documented settings, run in the same pass, so
the machine's drift falls on both alike): the median of those ratios, and in how many
passes TaskForge was the faster.

    python -m taskforge.bench.peers [--runs 3] [--passes 5] [--jobs 10000] [--out bench-peers.json]

Longer than most modules: every scenario of every system and the report, so what is measured
and how reads in one place.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from taskforge.adapters.postgres.migrations import apply_migrations
from taskforge.bench.scenarios import preload
from taskforge.bench.stack import Stack, _with_database, cannot_use
from taskforge.domain.errors import Unavailable
from taskforge.domain.validation import whole_number
from taskforge.entrypoints.config import ConfigError, Settings
from taskforge.entrypoints.runtime import Interrupted, run_until_interrupted
from taskforge.sdk import enqueue, enqueue_many

PROGRAMS = Path(__file__).resolve().parent.parent / "scripts" / "peers"
"""The peers' programs (in the source tree; the wheel does not ship them)."""

CONCURRENCY = 10
BULK_CHUNK = 1_000
PASSED = frozenset({"enqueue", "enqueue many"})
"""The scenarios run in several passes a round (the drain, at about ten seconds a run of
each system, runs once)."""

Figures = dict[str, float]


@dataclass(frozen=True, slots=True)
class Row:
    """One scenario of one system at one setting; `run` measures it once."""

    system: str
    scenario: str
    setting: str
    jobs: int
    run: Callable[[], Awaitable[Figures]]


class Peers:
    """Runs the peers' programs with the peers' interpreter."""

    def __init__(self, python: Path, stack: Stack) -> None:
        self.python = python
        self.stack = stack

    async def program(self, name: str, *args: object) -> Figures:
        process = await asyncio.create_subprocess_exec(
            str(self.python),
            str(PROGRAMS / name),
            *map(str, args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**self.stack.env, "PYTHONPATH": str(PROGRAMS)},
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{name} {args[0]} failed: {err.decode().strip()[-2000:]}")
        figures: Figures = json.loads(out.decode().strip().splitlines()[-1])
        return figures

    async def pgqueuer(self, scenario: str, jobs: int, concurrency: int, batch: int) -> Figures:
        """In a scratch database of its own, created and dropped around the program."""
        async with scratch_database(self.stack) as dsn:
            return await self.program("pgqueuer_peer.py", scenario, dsn, jobs, concurrency, batch)

    async def dramatiq(self, scenario: str, jobs: int, threads: int, processes: int) -> Figures:
        settings = self.stack.settings
        password = f":{settings.redis_password}@" if settings.redis_password else ""
        url = f"redis://{password}{settings.redis_addr.host}:{settings.redis_addr.port}/"
        return await self.program(
            "dramatiq_peer.py", scenario, f"{url}{settings.redis_db}", jobs, threads, processes
        )


async def taskforge_drain(stack: Stack, jobs: int, concurrency: int) -> Figures:
    """Timed as the peers are: from spawning the worker to the last `finished_at`."""
    queue = stack.queue(f"peers-{uuid.uuid4().hex[:6]}")
    await preload(stack, queue, jobs)
    spawned = time.time()
    worker = stack.spawn("worker", WORKER_QUEUES=queue, WORKER_CONCURRENCY=str(concurrency))

    try:
        await stack.until_succeeded(queue, jobs, f"{jobs} jobs to succeed")
    finally:
        await stack.stop(worker)
    row = await stack.pool.fetchrow(
        "SELECT extract(epoch FROM max(finished_at)) AS last,"
        " extract(epoch FROM min(started_at)) AS first FROM jobs WHERE queue = $1",
        queue,
    )
    assert row is not None
    last, first = float(row["last"]), float(row["first"])
    return {
        "seconds": last - spawned,
        "first_job_seconds": first - spawned,
        "busy_seconds": last - first,
    }


@asynccontextmanager
async def scratch_database(stack: Stack) -> AsyncIterator[str]:
    """The DSN of a database created for one measurement and dropped after it."""
    database = f"taskforge_peer_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(stack.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        try:
            yield _with_database(stack.admin_dsn, database)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await admin.close()


async def taskforge_enqueue(stack: Stack, jobs: int, bulk: bool) -> Figures:
    """The transactional enqueue on one asyncpg connection, outside a transaction (each call
    commits), as the peers' enqueue runs: into a scratch database, migrated untimed, as
    pgqueuer's program enqueues into one it installs its schema in, so neither system's
    table holds the rows of the runs before."""
    async with scratch_database(stack) as dsn:
        await apply_migrations(dsn)
        return await _taskforge_enqueue(stack, dsn, jobs, bulk)


async def _taskforge_enqueue(stack: Stack, dsn: str, jobs: int, bulk: bool) -> Figures:
    queue = stack.queue(f"peers-{uuid.uuid4().hex[:6]}")
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        if bulk:
            for start in range(0, jobs, BULK_CHUNK):
                size = min(BULK_CHUNK, jobs - start)
                await enqueue_many(
                    conn, [{"job_type": "noop", "queue": queue} for _ in range(size)]
                )
        else:
            for _ in range(jobs):
                await enqueue(conn, "noop", queue=queue)
        return {"seconds": time.perf_counter() - started}
    finally:
        await conn.close()


def rows(stack: Stack, peers: Peers, jobs: int, enqueues: int, bulk: int) -> list[Row]:
    c = CONCURRENCY
    return [
        Row(
            "TaskForge", "drain", f"concurrency {c}", jobs, lambda: taskforge_drain(stack, jobs, c)
        ),
        Row(
            "pgqueuer",
            "drain",
            f"batch 10, concurrency_limit {c}",
            jobs,
            lambda: peers.pgqueuer("drain", jobs, c, 10),
        ),
        Row(
            "dramatiq",
            "drain",
            f"1 process, {c} threads",
            jobs,
            lambda: peers.dramatiq("drain", jobs, c, 1),
        ),
        Row(
            "pgqueuer",
            "drain",
            "batch 10, no concurrency_limit (fastest here)",
            jobs,
            lambda: peers.pgqueuer("drain", jobs, 0, 10),
        ),
        Row(
            "TaskForge",
            "enqueue",
            "taskforge.enqueue, asyncpg",
            enqueues,
            lambda: taskforge_enqueue(stack, enqueues, bulk=False),
        ),
        Row(
            "pgqueuer",
            "enqueue",
            "Queries.enqueue",
            enqueues,
            lambda: peers.pgqueuer("enqueue", enqueues, c, 10),
        ),
        Row(
            "dramatiq",
            "enqueue",
            "actor.send",
            enqueues,
            lambda: peers.dramatiq("enqueue", enqueues, c, 1),
        ),
        Row(
            "TaskForge",
            "enqueue many",
            f"taskforge.enqueue_many, {BULK_CHUNK}/call",
            bulk,
            lambda: taskforge_enqueue(stack, bulk, bulk=True),
        ),
        Row(
            "pgqueuer",
            "enqueue many",
            f"Queries.enqueue of lists, {BULK_CHUNK}/call",
            bulk,
            lambda: peers.pgqueuer("enqueue-many", bulk, c, 10),
        ),
    ]


def rotated(items: list[Row], round_number: int) -> list[Row]:
    """Each scenario's systems in an order that shifts by one every round."""
    order: list[Row] = []
    for scenario in dict.fromkeys(row.scenario for row in items):
        group = [row for row in items if row.scenario == scenario]
        shift = round_number % len(group)
        order += group[shift:] + group[:shift]
    return order


async def run_peers(
    settings: Settings,
    python: Path,
    runs: int,
    jobs: int,
    enqueues: int,
    bulk: int,
    passes: int = 1,
) -> dict[str, Any]:
    stack = Stack(settings)
    measured: dict[Row, list[Figures]] = {}
    try:
        await stack.open()
        plan = rows(stack, Peers(python, stack), jobs, enqueues, bulk)
        for number in range(runs):
            for scenario, group in scenarios(plan).items():
                times = passes if scenario in PASSED else 1
                for each in range(times):
                    for row in rotated(group, number * times + each):
                        figures = await row.run()
                        measured.setdefault(row, []).append(figures)
                        rate = row.jobs / figures["seconds"]
                        print(
                            f"run {number + 1}/{runs}: {row.system} {row.scenario}"
                            f" ({row.setting}): {rate:,.0f} jobs/s",
                            file=sys.stderr,
                        )
    finally:
        await stack.close()
    results = []
    for row in plan:
        summary = _summary(row, measured[row])
        peer = pgqueuer_of(plan, row)
        if row.system == "TaskForge" and peer is not None:
            summary["against_pgqueuer"] = by_pass(measured[row], measured[peer])
        results.append(summary)
    return {"runs": runs, "passes": passes, "results": results}


def scenarios(plan: list[Row]) -> dict[str, list[Row]]:
    """The plan's rows by scenario, in the plan's order."""
    grouped: dict[str, list[Row]] = {}
    for row in plan:
        grouped.setdefault(row.scenario, []).append(row)
    return grouped


def pgqueuer_of(plan: list[Row], row: Row) -> Row | None:
    """pgqueuer's row of `row`'s scenario at its documented settings (the plan's first)."""
    return next(
        (each for each in plan if each.scenario == row.scenario and each.system == "pgqueuer"),
        None,
    )


def by_pass(ours: list[Figures], theirs: list[Figures]) -> dict[str, Any]:
    """Our rate over theirs in each pass (the i-th run of each is in the i-th pass): the
    median ratio, and in how many passes ours was the higher rate. The two rows store the
    same number of jobs, so a ratio of rates is theirs over our seconds."""
    ratios = [other["seconds"] / mine["seconds"] for mine, other in zip(ours, theirs, strict=True)]
    return {
        "ratio": statistics.median(ratios),
        "ahead": sum(ratio > 1 for ratio in ratios),
        "passes": len(ratios),
        "each_pass": ratios,
    }


def _summary(row: Row, each: list[Figures]) -> dict[str, Any]:
    seconds = statistics.median(figures["seconds"] for figures in each)
    summary: dict[str, Any] = {
        "system": row.system,
        "scenario": row.scenario,
        "setting": row.setting,
        "jobs": row.jobs,
        "seconds": seconds,
        "jobs_per_second": row.jobs / seconds,
        "jobs_per_second_each_run": [row.jobs / figures["seconds"] for figures in each],
    }
    for key in ("first_job_seconds", "busy_seconds"):
        if key in each[0]:
            summary[key] = statistics.median(figures[key] for figures in each)
    if "busy_seconds" in summary:
        summary["busy_jobs_per_second"] = row.jobs / summary["busy_seconds"]
    return summary


def render(report: dict[str, Any]) -> str:
    """The report as a Markdown table (the README's form), with each TaskForge row's ratio
    to the fastest peer of the same scenario."""
    passes = report.get("passes", 1)
    lines = [
        f"medians of {report['runs']} interleaved rounds"
        + (f", the enqueue scenarios in {passes} passes a round" if passes > 1 else ""),
        "",
        "| scenario | system | setting | jobs/s | each run | first job (s) | ratio |"
        " against pgqueuer, pass by pass |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    results = report["results"]
    for result in results:
        best_peer = max(
            (
                other["jobs_per_second"]
                for other in results
                if other["scenario"] == result["scenario"] and other["system"] != "TaskForge"
            ),
            default=0.0,
        )
        ratio = (
            f"{result['jobs_per_second'] / best_peer:.2f}x"
            if result["system"] == "TaskForge" and best_peer
            else ""
        )
        first = result.get("first_job_seconds")
        against = result.get("against_pgqueuer")
        paired = (
            f"{against['ratio']:.2f}x, ahead in {against['ahead']} of {against['passes']}"
            if against
            else ""
        )
        lines.append(
            f"| {result['scenario']} | {result['system']} | {result['setting']} |"
            f" {result['jobs_per_second']:,.0f} |"
            f" {', '.join(f'{rate:,.0f}' for rate in result['jobs_per_second_each_run'])} |"
            f" {'' if first is None else f'{first:.2f}'} | {ratio} | {paired} |"
        )
    return "\n".join(lines)


def _positive(text: str) -> int:
    """An argument that counts something: a whole number from 1 (as the CLIs read one)."""
    try:
        number = whole_number(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1, not {text!r}")
    return number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m taskforge.bench.peers", description="TaskForge beside other job queues."
    )
    parser.add_argument(
        "--python",
        type=Path,
        default=Path(".venv-peers/bin/python"),
        help="the peers' interpreter (default .venv-peers/bin/python)",
    )
    parser.add_argument("--runs", type=_positive, default=3, help="rounds")
    parser.add_argument(
        "--passes", type=_positive, default=5, help="runs of each enqueue scenario per round"
    )
    parser.add_argument("--jobs", type=_positive, default=10_000, help="jobs per drain")
    parser.add_argument(
        "--enqueues", type=_positive, default=2_000, help="jobs enqueued one by one"
    )
    parser.add_argument("--bulk", type=_positive, default=20_000, help="jobs enqueued in bulk")
    parser.add_argument("--out", type=Path, default=Path("bench-peers.json"))
    args = parser.parse_args(argv)
    if not PROGRAMS.is_dir():
        parser.error(f"the peers' programs are not at {PROGRAMS}: run from a source checkout")
    try:
        settings = Settings.from_env(os.environ)
        settings.require_postgres("bench")
    except ConfigError as exc:  # as `taskforge bench` answers it: one line, exit 2
        print(f"bench-peers: {exc}", file=sys.stderr)
        return 2
    try:
        report = run_until_interrupted(
            run_peers(
                settings,
                args.python,
                args.runs,
                args.jobs,
                args.enqueues,
                args.bulk,
                args.passes,
            )
        )
    except Interrupted as exc:
        return exc.exit_code
    except Unavailable as exc:
        print(f"bench-peers: {cannot_use(exc, settings)}", file=sys.stderr)
        return 1
    args.out.write_text(json.dumps(report, indent=2))
    print(render(report))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
