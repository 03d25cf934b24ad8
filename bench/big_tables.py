"""Big tables: a database filled in bulk the way a queue looks after months, and what reads
and sweeps cost over it.

`fill_big_tables` is the data generator (the dashboard's scale checks use it too): finished
jobs spread over the retention period, jobs delayed into the future, and dead letters with a
few error shapes, written by INSERT ... SELECT over generate_series, so the rows are made
inside Postgres and a million of them take a minute rather than an hour of round trips.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

import asyncpg
import httpx

from taskforge.adapters.postgres.sweeps import PostgresSweeps

CHUNK = 100_000
"""Rows per INSERT: progress shows, and one statement never holds a huge transaction."""

# Time-ordered ids, as Uuid7Source makes them: the first 48 bits are the creation time in
# milliseconds, so ids of a month of jobs land in the primary key in order.
_ID = (
    "encode(overlay(uuid_send(gen_random_uuid()) placing "
    "substring(int8send((extract(epoch FROM {at}) * 1000)::bigint) FROM 3) FROM 1 FOR 6), "
    "'hex')::uuid"
)

# $1 queues, $2 first row number, $3 rows, $4 retention in seconds, $5 rows in all. Finished
# within the last 90% of the retention period (none is prunable yet), in row order as a queue
# finishes them, so each index grows at its right edge as it does in production.
FILL_FINISHED = f"""
INSERT INTO jobs (id, queue, job_type, payload, state, max_attempts, initial_delay, backoff,
                  max_delay, jitter, visibility_timeout, attempt_count, next_run_at,
                  published_at, created_at, updated_at, started_at, finished_at)
SELECT {_ID.format(at="made.finished_at")}, made.queue, made.job_type,
       jsonb_build_object('order', made.n), made.state, 3, 1, 2, 300, false, 30, 1,
       made.finished_at - interval '2 seconds', made.finished_at - interval '2 seconds',
       made.finished_at - interval '2 seconds', made.finished_at,
       made.finished_at - interval '1 second', made.finished_at
FROM (
    SELECT n, ($1::text[])[1 + n % cardinality($1::text[])] AS queue,
           (ARRAY['email', 'resize', 'report'])[1 + n % 3] AS job_type,
           CASE WHEN n % 50 = 0 THEN 'CANCELLED' ELSE 'SUCCEEDED' END AS state,
           now() - make_interval(secs => $4 * 0.9 * (1 - n::float8 / $5)) AS finished_at
    FROM generate_series($2::bigint, $2::bigint + $3 - 1) AS n
) AS made
"""

# Delayed: due between an hour and 30 days from now, never published (not due yet).
FILL_DELAYED = f"""
INSERT INTO jobs (id, queue, job_type, payload, state, max_attempts, initial_delay, backoff,
                  max_delay, jitter, visibility_timeout, next_run_at, created_at, updated_at)
SELECT {_ID.format(at="now()")}, ($1::text[])[1 + n % cardinality($1::text[])],
       'reminder', jsonb_build_object('order', n), 'PENDING', 3, 1, 2, 300, false, 30,
       now() + make_interval(secs => 3600 + 30 * 86400 * random()), now(), now()
FROM generate_series($2::bigint, $2::bigint + $3 - 1) AS n
"""

# Dead-lettered jobs with five error shapes, numbers and ids varying inside each.
FILL_DEAD = f"""
INSERT INTO jobs (id, queue, job_type, payload, state, max_attempts, initial_delay, backoff,
                  max_delay, jitter, visibility_timeout, attempt_count, next_run_at,
                  last_error, reason, published_at, created_at, updated_at, started_at,
                  finished_at)
SELECT {_ID.format(at="made.failed_at")}, made.queue, made.job_type,
       jsonb_build_object('order', made.n), 'DLQ', 3, 1, 2, 300, false, 30, 3, made.failed_at,
       made.error, 'attempts exhausted', made.failed_at, made.failed_at, made.failed_at,
       made.failed_at, made.failed_at
FROM (
    SELECT n, ($1::text[])[1 + n % cardinality($1::text[])] AS queue,
           (ARRAY['email', 'resize', 'report'])[1 + n % 3] AS job_type,
           now() - make_interval(secs => $4 * (1 - n::float8 / $5)) AS failed_at,
           CASE n % 5
               WHEN 0 THEN format('order %s not found', n)
               WHEN 1 THEN format('timeout after %s ms talking to ''smtp-%s''', n % 900, n % 7)
               WHEN 2 THEN format('user %s has no address', gen_random_uuid())
               WHEN 3 THEN 'ConnectionResetError: peer closed the connection'
               ELSE format('HTTP %s from upstream', 500 + n % 4)
           END AS error
    FROM generate_series($2::bigint, $2::bigint + $3 - 1) AS n
) AS made
"""

FILL_DEAD_LETTERS = """
INSERT INTO dead_letters (job_id, queue, job_type, payload, reason, last_error, attempts,
                          failed_at, created_at, updated_at)
SELECT id, queue, job_type, payload, reason, last_error, attempt_count, finished_at,
       finished_at, finished_at
FROM jobs WHERE state = 'DLQ' AND queue = ANY($1::text[])
ON CONFLICT (job_id) DO NOTHING
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class BigTableSizes:
    finished: int = 900_000
    delayed: int = 100_000
    dead_letters: int = 50_000
    retention: float = 7 * 86_400.0
    """The retention period the finished jobs are spread over (all within it)."""

    @classmethod
    def of(cls, jobs: int, dead_letters: int) -> BigTableSizes:
        """`jobs` split as the scenario describes: 90% finished, 10% delayed."""
        delayed = jobs // 10
        return cls(finished=jobs - delayed, delayed=delayed, dead_letters=dead_letters)


async def fill_big_tables(
    conn: asyncpg.Connection,
    queues: Sequence[str],
    sizes: BigTableSizes,
    progress: Callable[[str], None] = lambda _: None,
) -> float:
    """Fill jobs and dead_letters in bulk over `queues`; then VACUUM ANALYZE, as a table that
    has been around has statistics and a visibility map. Returns the seconds it took. `conn`
    should have no statement timeout: a chunk may take a while on a busy machine."""
    started = time.perf_counter()
    steps = (
        ("finished jobs", FILL_FINISHED, sizes.finished),
        ("delayed jobs", FILL_DELAYED, sizes.delayed),
        ("dead-lettered jobs", FILL_DEAD, sizes.dead_letters),
    )
    for label, statement, total in steps:
        for first in range(0, total, CHUNK):
            rows = min(CHUNK, total - first)
            if statement is FILL_DELAYED:
                await conn.execute(statement, list(queues), first, rows)
            else:
                await conn.execute(statement, list(queues), first, rows, sizes.retention, total)
            progress(f"{label}: {first + rows:,} of {total:,}")
    await conn.execute(FILL_DEAD_LETTERS, list(queues))
    progress("vacuum and analyze")
    await conn.execute("VACUUM ANALYZE jobs")
    await conn.execute("VACUUM ANALYZE dead_letters")
    return time.perf_counter() - started


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (0 for no values): with 100 samples p99 is the 99th."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass(slots=True)
class Timing:
    name: str
    samples_ms: list[float]

    def summary(self) -> dict[str, float]:
        return {
            "p50_ms": percentile(self.samples_ms, 50),
            "p99_ms": percentile(self.samples_ms, 99),
            "max_ms": max(self.samples_ms, default=0.0),
            "samples": float(len(self.samples_ms)),
        }


async def _timed(name: str, repeat: int, call: Callable[[], Awaitable[object]]) -> Timing:
    await call()  # warm: connections, prepared statements, caches
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - began) * 1000)
    return Timing(name, samples)


def read_paths(queue: str) -> list[str]:
    """The read endpoints measured: list pages with each filter, a deep page, and the
    aggregate reads a dashboard or Prometheus polls."""
    return [
        "/jobs?limit=50",
        f"/jobs?limit=50&queue={queue}",
        "/jobs?limit=50&status=succeeded",
        f"/jobs?limit=50&queue={queue}&status=pending",
        "/jobs?limit=50&offset=5000",
        f"/queues/{queue}/jobs?limit=50",
        "/dlq?limit=50",
        "/stats",
        "/queues",
        "/metrics",
    ]


async def time_reads(api_url: str, queue: str, repeat: int) -> list[Timing]:
    """Each read endpoint `repeat` times in a row, one request at a time, timed at the client
    (so a figure includes the HTTP round trip on this machine)."""
    timings = []
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        for path in read_paths(queue):

            async def get(path: str = path) -> None:
                (await client.get(path)).raise_for_status()

            timings.append(await _timed(f"GET {path}", repeat, get))
    return timings


def dashboard_paths(
    queue: str, job_id: str, job_type: str, error_shape: str
) -> list[tuple[str, str]]:
    """(name, path) of the dashboard's pages measured: the overview and its live part, the
    job list unfiltered and by state, one job, the dead-letter groups and one group, the
    queues. Names hold placeholders where the path holds a stored job or group, so the
    empty and the big side of a run line up."""
    group = urlencode({"job_type": job_type, "error_shape": error_shape})
    return [
        ("GET /ui", "/ui"),
        ("GET /ui/overview/live", "/ui/overview/live"),
        ("GET /ui/jobs", "/ui/jobs"),
        ("GET /ui/jobs?state=succeeded", "/ui/jobs?state=succeeded"),
        ("GET /ui/jobs?queue=Q&state=pending", f"/ui/jobs?queue={queue}&state=pending"),
        ("GET /ui/jobs/{id}", f"/ui/jobs/{job_id}"),
        ("GET /ui/dlq", "/ui/dlq"),
        ("GET /ui/dlq/group?{group}", f"/ui/dlq/group?{group}"),
        ("GET /ui/queues", "/ui/queues"),
    ]


async def time_dashboard(api_url: str, pool: asyncpg.Pool, queue: str, repeat: int) -> list[Timing]:
    """Each dashboard page `repeat` times in a row, timed like the read endpoints. The job
    shown is the queue's newest (one is enqueued when the queue has none); the group is the
    one that failed last (an empty group's page when there are no dead letters)."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        newest = await client.get("/jobs", params={"queue": queue, "limit": 1})
        newest.raise_for_status()
        job_id = next((item["id"] for item in newest.json()["items"]), None)
        if job_id is None:
            created = await client.post("/jobs", json={"jobType": "noop", "queue": queue})
            created.raise_for_status()
            job_id = created.json()["id"]
        group = await pool.fetchrow(
            "SELECT job_type, error_shape FROM dead_letters "
            "ORDER BY failed_at DESC, job_id DESC LIMIT 1"
        )
        job_type, error_shape = (group["job_type"], group["error_shape"]) if group else ("noop", "")
        timings = []
        for name, path in dashboard_paths(queue, str(job_id), job_type, error_shape):

            async def get(path: str = path) -> None:
                (await client.get(path)).raise_for_status()

            timings.append(await _timed(name, repeat, get))
    return timings


async def time_sweeps(
    pool: asyncpg.Pool, queues: Sequence[str], repeat: int, retention: float
) -> list[Timing]:
    """Each scheduler sweep `repeat` times, as one tick runs them (batch of 500)."""
    sweeps = PostgresSweeps(pool)
    limit = 500
    uncovered = dict.fromkeys(queues, 0)
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("promote_due", lambda: sweeps.promote_due(limit)),
        ("reap_expired", lambda: sweeps.reap_expired(limit)),
        ("find_never_published", lambda: sweeps.find_never_published(limit)),
        ("count_pending", sweeps.count_pending),
        # Nothing covered: as if every queue had lost its hints (the dearest case).
        ("find_unpublished", lambda: sweeps.find_unpublished(uncovered, limit, 30.0)),
        ("prune_finished", lambda: sweeps.prune_finished(retention, limit)),
        ("fold_job_counts", sweeps.fold_job_counts),
    ]
    return [await _timed(f"sweep {name}", repeat, call) for name, call in calls]
