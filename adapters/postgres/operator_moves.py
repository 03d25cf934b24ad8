"""OperatorMoves on Postgres: cancel, dead-letter, retry and replay, each one conditional
statement; a refused move is explained by a look-up (JobNotFound or InvalidTransition)."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from taskforge.adapters.postgres._fragments import ENTER_DLQ, NO_LEASE, REQUEUE
from taskforge.adapters.postgres._rows import JOB_DETAIL_COLUMNS, job_from_row
from taskforge.adapters.postgres.connection import PooledAdapter
from taskforge.domain.errors import (
    DeadLetterNotFound,
    InvalidTransition,
    JobNotFound,
    UniqueKeyTaken,
)
from taskforge.domain.job import Job
from taskforge.domain.outcome import MANUAL_DLQ_REASON
from taskforge.domain.states import OPERATOR_RETRY_SOURCES, JobState, sources_of

PENDING, RUNNING, SUCCEEDED, FAILED, DLQ, CANCELLED = JobState

# A job that changes state between a refused operator move and the look-up that explains
# the refusal is tried again, a bounded number of times.
_OPERATOR_ATTEMPTS = 3

SELECT_JOB_STATE = "SELECT state FROM jobs WHERE id = $1"

# The job of the same queue holding the unique key of job $1, other than $1 itself.
SELECT_UNIQUE_KEY_HOLDER = """
SELECT job.state, job.unique_key, holder.id AS holder_id
FROM jobs AS job
JOIN jobs AS holder
    ON holder.queue = job.queue AND holder.unique_key = job.unique_key AND holder.id <> job.id
WHERE job.id = $1 AND holder.state IN ('PENDING', 'RUNNING', 'FAILED')
"""

UNIQUE_KEY_INDEX = "jobs_unique_key_active"


def _finish(state: str) -> str:
    """An operator's move of job $1 into the final `state`, with reason $2, from one of the
    states $3; it returns the job, or no row when the job is not in one of them."""
    return f"""
UPDATE jobs SET
    state = '{state}',
    reason = $2,
    finished_at = now(),
    updated_at = now(),
    {NO_LEASE}
WHERE id = $1 AND state = ANY($3::text[])
RETURNING {JOB_DETAIL_COLUMNS}"""


CANCEL = _finish("CANCELLED")

DEAD_LETTER = f"""
WITH moved AS ({_finish("DLQ")}
), dead_lettered AS ({ENTER_DLQ.format(source="moved")}
)
SELECT {JOB_DETAIL_COLUMNS} FROM moved
"""


def _requeue_and_forget(counts: str, where: str) -> str:
    """Back to PENDING, due now, and out of the dead letters, in one statement."""
    return f"""
WITH moved AS (
    UPDATE jobs SET {REQUEUE}, {counts}
    WHERE {where}
    RETURNING {JOB_DETAIL_COLUMNS}
), forgotten AS (
    DELETE FROM dead_letters WHERE job_id IN (SELECT id FROM moved)
)
SELECT {JOB_DETAIL_COLUMNS} FROM moved
"""


_STARTED_OVER = {
    "attempt_count": "0",
    "retry_count": "0",
    "snoozes": "0",
    "hand_backs": "0",
    "unknown_type_since": "NULL",
}
"""A replayed job's execution counts, as for a new job."""

# From FAILED the counts are kept (the retry continues the job's history); from DLQ and
# CANCELLED the job starts over, as for a replay.
RETRY = _requeue_and_forget(
    ", ".join(
        f"{count} = CASE WHEN jobs.state = 'FAILED' THEN jobs.{count} ELSE {start} END"
        for count, start in _STARTED_OVER.items()
    ),
    "id = $1 AND state = ANY($2::text[])",
)

# A job has a dead letter exactly while it is in DLQ: both are written, and removed, by the
# same statements.
REPLAY = _requeue_and_forget(
    ", ".join(f"{count} = {start}" for count, start in _STARTED_OVER.items()),
    "id = $1 AND state = 'DLQ'",
)


class PostgresOperatorMoves(PooledAdapter):
    """OperatorMoves on Postgres; semantics identical to InMemoryOperatorMoves."""

    async def cancel(self, job_id: UUID, reason: str | None) -> Job:
        sources = sources_of(CANCELLED)
        return await self._operator_move(
            CANCEL, (job_id, reason, _names(sources)), job_id, CANCELLED, sources
        )

    async def dead_letter(self, job_id: UUID, reason: str | None) -> Job:
        sources = sources_of(DLQ)
        arguments = (job_id, reason or MANUAL_DLQ_REASON, _names(sources))
        return await self._operator_move(DEAD_LETTER, arguments, job_id, DLQ, sources)

    async def retry_now(self, job_id: UUID) -> Job:
        sources = OPERATOR_RETRY_SOURCES
        return await self._operator_move(RETRY, (job_id, _names(sources)), job_id, PENDING, sources)

    async def replay(self, job_id: UUID) -> Job:
        async with self._connection() as conn:
            row = await _requeue(conn, REPLAY, (job_id,), job_id)
        if row is None:  # no such job, or not in DLQ: either way no dead letter
            raise DeadLetterNotFound(job_id)
        return job_from_row(row)

    async def _operator_move(
        self,
        statement: str,
        arguments: Sequence[object],
        job_id: UUID,
        target: JobState,
        sources: frozenset[JobState],
    ) -> Job:
        """Run a conditional operator transition; when it changes nothing, look the job up
        to raise JobNotFound or InvalidTransition, as the in-memory repository does."""
        current = target.value
        for _ in range(_OPERATOR_ATTEMPTS):
            async with self._connection() as conn:
                row = await _requeue(conn, statement, arguments, job_id)
                if row is not None:
                    return job_from_row(row)
                current = await conn.fetchval(SELECT_JOB_STATE, job_id)
            if current is None:
                raise JobNotFound(job_id)
            if JobState(current) not in sources:
                break
            # The job reached a state we may move it from after the update looked: try again.
        raise InvalidTransition(job_id, current, target.value)


async def _requeue(
    conn: PoolConnectionProxy, statement: str, arguments: Sequence[object], job_id: UUID
) -> asyncpg.Record | None:
    """Run an operator move; a move back to PENDING whose job's unique key another job of
    its queue holds now raises UniqueKeyTaken (the statement changed nothing)."""
    tries_left = _OPERATOR_ATTEMPTS
    while True:
        try:
            return await conn.fetchrow(statement, *arguments)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != UNIQUE_KEY_INDEX:
                raise
            holder = await conn.fetchrow(SELECT_UNIQUE_KEY_HOLDER, job_id)
            if holder is not None:
                raise UniqueKeyTaken(
                    job_id,
                    holder["state"],
                    PENDING.value,
                    holder["unique_key"],
                    holder["holder_id"],
                ) from None
            tries_left -= 1
            if not tries_left:
                raise
            # The holder finished meanwhile, freeing the key: try the move again.


def _names(states: frozenset[JobState]) -> list[str]:
    return sorted(state.value for state in states)
