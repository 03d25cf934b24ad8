"""The dashboard's reads on Postgres: job counts per queue that stay cheap on big tables
(the maintained counts of migration 0013), and dead letters grouped by error shape (the
column migration 0012 adds)."""

from __future__ import annotations

import json

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from taskforge.adapters.postgres._rows import DEAD_LETTER_COLUMNS, dead_letter_from_row
from taskforge.adapters.postgres.connection import PooledAdapter
from taskforge.adapters.postgres.job_store import COUNT_BY_QUEUE_AND_STATE
from taskforge.domain.dashboard import COUNT_COLUMNS, DeadLetterGroup, QueueJobCounts
from taskforge.domain.job import DeadLetter
from taskforge.domain.states import JobState
from taskforge.domain.validation import PRIORITIES

# The PENDING jobs of a queue split by due time, counted up to $3 per call: one range of
# jobs_pending_by_queue_priority_due per priority (queue, priority, next_run_at), so only
# the counted entries are read, however many jobs wait on the other side of now().
_PENDING_SIDE = """
SELECT queues.queue, (
    SELECT count(*) FROM (
        SELECT 1 FROM unnest($2::int[]) AS levels(priority)
        CROSS JOIN LATERAL (
            SELECT 1 FROM jobs
            WHERE jobs.queue = queues.queue AND jobs.state = 'PENDING'
              AND jobs.priority = levels.priority AND jobs.next_run_at {side} now()
            LIMIT $3
        ) AS pending
        LIMIT $3
    ) AS capped
) AS jobs
FROM unnest($1::text[]) AS queues(queue)
"""
COUNT_READY = _PENDING_SIDE.format(side="<=")
COUNT_DELAYED = _PENDING_SIDE.format(side=">")

ESTIMATE_READY = (
    "EXPLAIN (FORMAT JSON) SELECT 1 FROM jobs "
    "WHERE queue = $1 AND state = 'PENDING' AND next_run_at <= now()"
)
"""The planner's row estimate, from the table's statistics: no row is read."""

_STATE_COLUMNS = {
    JobState.RUNNING: "running",
    JobState.FAILED: "failed",
    JobState.DLQ: "dlq",
    JobState.SUCCEEDED: "succeeded",
    JobState.CANCELLED: "cancelled",
}

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
# job replayed meanwhile; SKIP LOCKED leaves jobs another transaction is moving. It locks the
# job's row, not the dead letter's: every move locks the job first, then its dead letter, so
# a purge that held a dead letter while it waited for a replay's job would deadlock with it.
PURGE_GROUP = """
WITH members AS (
    SELECT job_id FROM dead_letters
    WHERE job_type = $1 AND error_shape = $2
    ORDER BY failed_at DESC, job_id DESC
    LIMIT $3
), doomed AS (
    SELECT jobs.id FROM members JOIN jobs ON jobs.id = members.job_id
    WHERE jobs.state = 'DLQ'
    FOR UPDATE OF jobs SKIP LOCKED
)
DELETE FROM jobs USING doomed WHERE jobs.id = doomed.id AND jobs.state = 'DLQ'
"""


class PostgresJobCounts(PooledAdapter):
    """Every state's count is exact: the sums of job_counts (migration 0013), which cost the
    same for ten jobs as for ten million. Only PENDING is split further, into ready and
    delayed, by counting one side up to the cap and taking the other as the rest; when
    both sides pass the cap, ready is the planner's estimate and both are flagged."""

    async def per_queue(self, exact_up_to: int) -> list[QueueJobCounts]:
        cap = exact_up_to + 1
        priorities = list(PRIORITIES)
        async with (
            self._connection() as conn,
            # One snapshot: the ready count never disagrees with the pending total.
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            totals: dict[str, dict[str, int]] = {}
            for row in await conn.fetch(COUNT_BY_QUEUE_AND_STATE):
                counts = totals.setdefault(row["queue"], dict.fromkeys(COUNT_COLUMNS, 0))
                state = JobState(row["state"])
                column = _STATE_COLUMNS.get(state, "ready")  # PENDING: split below
                counts[column] = int(row["jobs"])
            waiting = sorted(queue for queue, counts in totals.items() if counts["ready"])
            estimated: dict[str, frozenset[str]] = {}
            if waiting:
                ready = await _side(conn, COUNT_READY, waiting, priorities, cap)
                crowded = [queue for queue in waiting if ready[queue] >= cap]
                delayed = await _side(conn, COUNT_DELAYED, crowded, priorities, cap)
                for queue in waiting:
                    counts = totals[queue]
                    pending = counts["ready"]
                    if ready[queue] < cap:
                        counts["ready"] = ready[queue]
                    elif delayed[queue] < cap:
                        counts["ready"] = pending - delayed[queue]
                    else:
                        plan = await conn.fetchval(ESTIMATE_READY, queue)
                        planned = json.loads(plan) if isinstance(plan, str) else plan
                        guess = int(planned[0]["Plan"]["Plan Rows"])
                        # Both sides were counted past the cap: the guess stays between.
                        counts["ready"] = min(max(cap, guess), pending - cap)
                        estimated[queue] = frozenset({"ready", "delayed"})
                    counts["delayed"] = pending - counts["ready"]
        return [
            QueueJobCounts(queue=queue, counts=counts, estimated=estimated.get(queue, frozenset()))
            for queue, counts in sorted(totals.items())
        ]


async def _side(
    conn: asyncpg.Connection | PoolConnectionProxy,
    statement: str,
    queues: list[str],
    priorities: list[int],
    cap: int,
) -> dict[str, int]:
    if not queues:
        return {}
    rows = await conn.fetch(statement, queues, priorities, cap)
    return {row["queue"]: int(row["jobs"]) for row in rows}


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
