"""The dashboard's reads on Postgres: job counts per queue that stay cheap on big tables,
and dead letters grouped by error shape (the column migration 0012 adds)."""

from __future__ import annotations

import json

from taskforge.adapters.postgres._rows import DEAD_LETTER_COLUMNS, dead_letter_from_row
from taskforge.adapters.postgres.connection import PooledAdapter
from taskforge.domain.dashboard import COUNT_COLUMNS, DeadLetterGroup, QueueJobCounts
from taskforge.domain.job import DeadLetter

# The queues that have jobs, by a skip scan of jobs_queue_newest_first: one index probe per
# queue instead of reading every row.
_QUEUES = """
WITH RECURSIVE queues(queue) AS (
    (SELECT queue FROM jobs ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT jobs.queue FROM jobs WHERE jobs.queue > queues.queue ORDER BY 1 LIMIT 1)
    FROM queues WHERE queues.queue IS NOT NULL
)
"""


def _capped(condition: str) -> str:
    # Counting stops at the cap, so a queue of millions costs what one of `cap` does; each
    # condition is the prefix of an index (jobs_queue_state_newest_first, or
    # jobs_pending_due_by_queue for ready and delayed).
    return f"(SELECT count(*) FROM (SELECT 1 FROM jobs WHERE {condition} LIMIT $1) AS capped)"


COUNT_JOBS_PER_QUEUE = f"""{_QUEUES}
SELECT queue,
    {_capped("jobs.queue = queues.queue AND state = 'PENDING' AND next_run_at <= now()")} AS ready,
    {_capped("jobs.queue = queues.queue AND state = 'PENDING' AND next_run_at > now()")} AS delayed,
    {_capped("jobs.queue = queues.queue AND state = 'RUNNING'")} AS running,
    {_capped("jobs.queue = queues.queue AND state = 'FAILED'")} AS failed,
    {_capped("jobs.queue = queues.queue AND state = 'DLQ'")} AS dlq,
    {_capped("jobs.queue = queues.queue AND state = 'SUCCEEDED'")} AS succeeded,
    {_capped("jobs.queue = queues.queue AND state = 'CANCELLED'")} AS cancelled
FROM queues WHERE queue IS NOT NULL ORDER BY queue
"""

_ESTIMATE_CONDITIONS = {
    "ready": "state = 'PENDING' AND next_run_at <= now()",
    "delayed": "state = 'PENDING' AND next_run_at > now()",
    "running": "state = 'RUNNING'",
    "failed": "state = 'FAILED'",
    "dlq": "state = 'DLQ'",
    "succeeded": "state = 'SUCCEEDED'",
    "cancelled": "state = 'CANCELLED'",
}
ESTIMATE_ROWS = {
    column: f"EXPLAIN (FORMAT JSON) SELECT 1 FROM jobs WHERE queue = $1 AND {condition}"
    for column, condition in _ESTIMATE_CONDITIONS.items()
}
"""The planner's row estimate, from the table's statistics: no row is read."""

SELECT_GROUPS = """
SELECT job_type, error_shape, count(*) AS jobs,
       min(failed_at) AS first_failed_at, max(failed_at) AS last_failed_at
FROM dead_letters
GROUP BY job_type, error_shape
ORDER BY last_failed_at DESC, job_type DESC, error_shape DESC
LIMIT $1
"""

SELECT_GROUP_MEMBERS = f"""
SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters
WHERE job_type = $1 AND error_shape = $2
ORDER BY failed_at DESC, job_id DESC
LIMIT $3
"""

# Deleting the job deletes its dead letter (ON DELETE CASCADE). The state condition keeps a
# job replayed meanwhile; SKIP LOCKED leaves rows another transaction is moving.
PURGE_GROUP = """
WITH doomed AS (
    SELECT job_id FROM dead_letters
    WHERE job_type = $1 AND error_shape = $2
    ORDER BY failed_at DESC, job_id DESC
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
DELETE FROM jobs USING doomed WHERE jobs.id = doomed.job_id AND jobs.state = 'DLQ'
"""


class PostgresJobCounts(PooledAdapter):
    async def per_queue(self, exact_up_to: int) -> list[QueueJobCounts]:
        cap = exact_up_to + 1
        async with self._connection() as conn:
            rows = await conn.fetch(COUNT_JOBS_PER_QUEUE, cap)
            found = []
            for row in rows:
                counts = {column: int(row[column]) for column in COUNT_COLUMNS}
                estimated = frozenset(column for column in COUNT_COLUMNS if counts[column] >= cap)
                for column in estimated:
                    plan = await conn.fetchval(ESTIMATE_ROWS[column], row["queue"])
                    planned = json.loads(plan) if isinstance(plan, str) else plan
                    # Never below what was counted: the statistics may be stale.
                    counts[column] = max(cap, int(planned[0]["Plan"]["Plan Rows"]))
                found.append(QueueJobCounts(queue=row["queue"], counts=counts, estimated=estimated))
        return found


class PostgresDeadLetterGroups(PooledAdapter):
    async def groups(self, limit: int) -> list[DeadLetterGroup]:
        async with self._connection() as conn:
            rows = await conn.fetch(SELECT_GROUPS, limit)
        return [
            DeadLetterGroup(
                job_type=row["job_type"],
                error_shape=row["error_shape"],
                count=row["jobs"],
                first_failed_at=row["first_failed_at"],
                last_failed_at=row["last_failed_at"],
            )
            for row in rows
        ]

    async def members(self, job_type: str, error_shape: str, limit: int) -> list[DeadLetter]:
        async with self._connection() as conn:
            rows = await conn.fetch(SELECT_GROUP_MEMBERS, job_type, error_shape, limit)
        return [dead_letter_from_row(row) for row in rows]

    async def purge(self, job_type: str, error_shape: str, limit: int) -> int:
        async with self._connection() as conn:
            status: str = await conn.execute(PURGE_GROUP, job_type, error_shape, limit)
        return int(status.rsplit(" ", 1)[-1])
