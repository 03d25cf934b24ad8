"""WorkerRegistry on Postgres: the `workers` table (migration 0011).

Unlike the job store's roles, its times are the reporting worker's (`heartbeat_at`) and the
caller's (`now`): liveness compares clocks of different machines, which NTP keeps far
closer than the staleness bound."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from taskforge.adapters.postgres.connection import PooledAdapter
from taskforge.domain.workers import WORKER_STALE_AFTER, WorkerStatus, stale_before

# $10 is the staleness bound: rows stale relative to this report are pruned with it.
REPORT = """
WITH pruned AS (
    DELETE FROM workers WHERE heartbeat_at < $9::timestamptz - $10::interval AND worker_id <> $1
)
INSERT INTO workers (
    worker_id, host, pid, queues, job_types, concurrency, busy_slots, started_at, heartbeat_at
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (worker_id) DO UPDATE SET
    host = EXCLUDED.host,
    pid = EXCLUDED.pid,
    queues = EXCLUDED.queues,
    job_types = EXCLUDED.job_types,
    concurrency = EXCLUDED.concurrency,
    busy_slots = EXCLUDED.busy_slots,
    started_at = EXCLUDED.started_at,
    heartbeat_at = EXCLUDED.heartbeat_at
"""

REMOVE = "DELETE FROM workers WHERE worker_id = $1"

SELECT_LIVE = """
SELECT worker_id, host, pid, queues, job_types, concurrency, busy_slots, started_at,
       heartbeat_at
FROM workers
WHERE heartbeat_at >= $1
ORDER BY worker_id
"""


class PostgresWorkerRegistry(PooledAdapter):
    """WorkerRegistry on Postgres; semantics identical to InMemoryWorkerRegistry."""

    async def report(self, status: WorkerStatus) -> None:
        async with self._connection() as conn:
            await conn.execute(
                REPORT,
                status.worker_id,
                status.host,
                status.pid,
                list(status.queues),
                list(status.job_types),
                status.concurrency,
                status.busy_slots,
                status.started_at,
                status.heartbeat_at,
                timedelta(seconds=WORKER_STALE_AFTER),
            )

    async def remove(self, worker_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute(REMOVE, worker_id)

    async def list_live(self, *, now: datetime) -> list[WorkerStatus]:
        async with self._connection() as conn:
            rows = await conn.fetch(SELECT_LIVE, stale_before(now))
        return [_status_from_row(row) for row in rows]


def _status_from_row(row: asyncpg.Record) -> WorkerStatus:
    return WorkerStatus(
        worker_id=row["worker_id"],
        host=row["host"],
        pid=row["pid"],
        queues=tuple(row["queues"]),
        job_types=tuple(row["job_types"]),
        concurrency=row["concurrency"],
        busy_slots=row["busy_slots"],
        started_at=row["started_at"],
        heartbeat_at=row["heartbeat_at"],
    )
