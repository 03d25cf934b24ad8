"""QueuePauses on Postgres: the `queues` table (migration 0008), which the claims and the
republish sweep consult in the same statements that pick jobs."""

from __future__ import annotations

from datetime import datetime

from taskforge.adapters.postgres._rows import JOBS_COLUMNS, job_from_row
from taskforge.adapters.postgres.connection import PooledAdapter
from taskforge.domain.job import Job, dispatch_order

# Waits for the claims under way (each holds a ROW SHARE lock on `queues` until it ends:
# _fragments.not_paused) and holds new ones off until the pause is stored, so no claim that
# missed the pause ends after it answered. Plain reads of `queues` are not held up.
PAUSE_LOCK = "LOCK TABLE queues IN EXCLUSIVE MODE"

PAUSE = """
INSERT INTO queues (name, paused, paused_at, updated_at) VALUES ($1, true, now(), now())
ON CONFLICT (name) DO UPDATE SET
    paused = true,
    paused_at = coalesce(queues.paused_at, now()),
    updated_at = now()
RETURNING paused_at
"""

# Only a queue that was paused yields jobs: resuming a running one publishes nothing twice.
# The jobs locked in `due` are PENDING until this statement ends, so the UPDATE finds them
# by primary key alone: a state condition there would let the planner, when the statistics
# think the queue empty (a backlog piled up during the pause since), walk the pending-jobs
# index and compare each of its jobs with each of `due`'s, a time growing with their product.
RESUME = f"""
WITH resumed AS (
    UPDATE queues SET paused = false, paused_at = NULL, updated_at = now()
    WHERE name = $1 AND paused
    RETURNING name
), due AS (
    SELECT id FROM jobs
    WHERE queue = $1 AND state = 'PENDING' AND next_run_at <= now()
      AND EXISTS (SELECT 1 FROM resumed)
    ORDER BY priority, next_run_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET published_at = now()
FROM due
WHERE jobs.id = due.id
RETURNING {JOBS_COLUMNS}
"""

SELECT_PAUSED = "SELECT name, paused_at FROM queues WHERE paused"


class PostgresQueuePauses(PooledAdapter):
    """QueuePauses on Postgres; semantics identical to InMemoryQueuePauses."""

    async def pause(self, queue: str) -> datetime:
        async with self._connection() as conn, conn.transaction():
            await conn.execute(PAUSE_LOCK)
            paused_at: datetime = await conn.fetchval(PAUSE, queue)
        return paused_at

    async def resume(self, queue: str, limit: int) -> list[Job]:
        async with self._connection() as conn:
            rows = await conn.fetch(RESUME, queue, limit)
        jobs = [job_from_row(row) for row in rows]
        return sorted(jobs, key=dispatch_order)

    async def paused(self) -> dict[str, datetime]:
        async with self._connection() as conn:
            rows = await conn.fetch(SELECT_PAUSED)
        return {row["name"]: row["paused_at"] for row in rows}
