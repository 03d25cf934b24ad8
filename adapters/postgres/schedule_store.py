"""ScheduleStore on Postgres: the `schedules` table (migration 0009). Firing locks due
schedules with FOR UPDATE SKIP LOCKED and stores their jobs and new fire times in the same
transaction, so concurrent schedulers never fire one tick twice."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from taskforge.adapters.postgres._rows import retry_policy_from_row
from taskforge.adapters.postgres.connection import PooledAdapter
from taskforge.adapters.postgres.job_store import insert_jobs
from taskforge.application.ports import FiringPlan
from taskforge.domain.errors import ScheduleNotFound
from taskforge.domain.schedule import Schedule, ScheduleDefinition, ScheduleSource

SCHEDULE_COLUMNS = (
    "name, cron, timezone, catch_up, source, job_type, queue, payload, max_attempts, "
    "initial_delay, backoff, max_delay, jitter, visibility_timeout, timeout, paused, "
    "next_fire_at, last_fire_at, created_at, updated_at, priority"
)

# A replaced schedule keeps its pause, its last fire and, unless its cron expression or
# time zone changed, its next fire: saving the same declaration again changes no tick.
SAVE = f"""
INSERT INTO schedules (
    name, cron, timezone, catch_up, source, job_type, queue, payload, max_attempts,
    initial_delay, backoff, max_delay, jitter, visibility_timeout, timeout, next_fire_at,
    priority
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (name) DO UPDATE SET
    cron = EXCLUDED.cron,
    timezone = EXCLUDED.timezone,
    catch_up = EXCLUDED.catch_up,
    source = EXCLUDED.source,
    job_type = EXCLUDED.job_type,
    queue = EXCLUDED.queue,
    payload = EXCLUDED.payload,
    max_attempts = EXCLUDED.max_attempts,
    initial_delay = EXCLUDED.initial_delay,
    backoff = EXCLUDED.backoff,
    max_delay = EXCLUDED.max_delay,
    jitter = EXCLUDED.jitter,
    visibility_timeout = EXCLUDED.visibility_timeout,
    timeout = EXCLUDED.timeout,
    priority = EXCLUDED.priority,
    next_fire_at = CASE
        WHEN (schedules.cron, schedules.timezone) = (EXCLUDED.cron, EXCLUDED.timezone)
        THEN schedules.next_fire_at
        ELSE EXCLUDED.next_fire_at
    END,
    updated_at = now()
RETURNING (xmax = 0) AS created, {SCHEDULE_COLUMNS}
"""

SELECT_ONE = f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = $1"
SELECT_ALL = f"SELECT {SCHEDULE_COLUMNS} FROM schedules"
DELETE = "DELETE FROM schedules WHERE name = $1 RETURNING name"
PAUSE = f"""
UPDATE schedules SET paused = true, updated_at = CASE WHEN paused THEN updated_at ELSE now() END
WHERE name = $1
RETURNING {SCHEDULE_COLUMNS}
"""
RESUME = f"""
UPDATE schedules SET paused = false, next_fire_at = $2, updated_at = now()
WHERE name = $1 AND paused
RETURNING {SCHEDULE_COLUMNS}
"""

LOCK_DUE = f"""
SELECT now() AS now, {SCHEDULE_COLUMNS} FROM schedules
WHERE NOT paused AND next_fire_at <= now()
ORDER BY next_fire_at, name
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

MOVE_ON = """
UPDATE schedules
SET next_fire_at = moved.next_fire_at, last_fire_at = moved.last_fire_at
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[])
    AS moved (name, next_fire_at, last_fire_at)
WHERE schedules.name = moved.name
"""


class PostgresScheduleStore(PooledAdapter):
    """ScheduleStore on Postgres; semantics identical to InMemoryScheduleStore."""

    async def save(
        self, definition: ScheduleDefinition, next_fire_at: datetime
    ) -> tuple[Schedule, bool]:
        policy = definition.policy
        async with self._connection() as conn:
            row = await conn.fetchrow(
                SAVE,
                definition.name,
                definition.cron,
                definition.timezone,
                definition.catch_up,
                definition.source.value,
                definition.job_type,
                definition.queue,
                definition.payload,
                policy.max_attempts,
                policy.initial_delay,
                policy.backoff,
                policy.max_delay,
                policy.jitter,
                definition.visibility_timeout,
                definition.timeout,
                next_fire_at,
                definition.priority,
            )
        assert row is not None  # an upsert always returns its row
        return schedule_from_row(row), bool(row["created"])

    async def get(self, name: str) -> Schedule | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(SELECT_ONE, name)
        return None if row is None else schedule_from_row(row)

    async def find(self) -> list[Schedule]:
        async with self._connection() as conn:
            rows = await conn.fetch(SELECT_ALL)
        # Sorted here, not in SQL: Python's string order whatever the database's collation.
        return sorted((schedule_from_row(row) for row in rows), key=lambda s: s.name)

    async def delete(self, name: str) -> bool:
        async with self._connection() as conn:
            return await conn.fetchval(DELETE, name) is not None

    async def pause(self, name: str) -> Schedule:
        async with self._connection() as conn:
            row = await conn.fetchrow(PAUSE, name)
        if row is None:
            raise ScheduleNotFound(name)
        return schedule_from_row(row)

    async def resume(self, name: str, next_fire_at: datetime) -> Schedule:
        async with self._connection() as conn:
            row = await conn.fetchrow(RESUME, name, next_fire_at)
            if row is None:
                row = await conn.fetchrow(SELECT_ONE, name)
        if row is None:
            raise ScheduleNotFound(name)
        return schedule_from_row(row)

    async def fire_due(self, limit: int, plan: FiringPlan) -> tuple[int, int]:
        async with self._connection() as conn, conn.transaction():
            rows = await conn.fetch(LOCK_DUE, limit)
            if not rows:
                return 0, 0
            now: datetime = rows[0]["now"]
            firings = [(schedule_from_row(row), row) for row in rows]
            planned = [(schedule, plan(schedule, now)) for schedule, _ in firings]
            jobs = [job for _, firing in planned for job in firing.jobs]
            stored = await insert_jobs(conn, jobs, published=False) if jobs else []
            await conn.execute(
                MOVE_ON,
                [schedule.name for schedule, _ in planned],
                [firing.next_fire_at for _, firing in planned],
                [firing.last_fire_at for _, firing in planned],
            )
        return len(rows), sum(added.created for added in stored)


def schedule_from_row(row: asyncpg.Record) -> Schedule:
    return Schedule(
        definition=ScheduleDefinition(
            name=row["name"],
            cron=row["cron"],
            timezone=row["timezone"],
            catch_up=row["catch_up"],
            source=ScheduleSource(row["source"]),
            job_type=row["job_type"],
            queue=row["queue"],
            payload=row["payload"],
            policy=retry_policy_from_row(row),
            visibility_timeout=row["visibility_timeout"],
            timeout=row["timeout"],
            priority=row["priority"],
        ),
        paused=row["paused"],
        next_fire_at=row["next_fire_at"],
        last_fire_at=row["last_fire_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
