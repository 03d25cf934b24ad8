"""LeaseStore on Postgres: claims, heartbeats, settlements and hand-backs, each one
statement for a whole batch, each write fenced by its lease token."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from taskforge.adapters.postgres._fragments import (
    ENTER_DLQ,
    NO_LEASE,
    REQUEUE,
    not_paused,
    with_error,
)
from taskforge.adapters.postgres._rows import JOB_COLUMNS, JOBS_COLUMNS, job_from_row
from taskforge.adapters.postgres.connection import PooledAdapter
from taskforge.domain.job import Job, Lease
from taskforge.domain.outcome import (
    DeadLettered,
    HandedBack,
    RetryLater,
    Settlement,
    Snoozed,
    Succeeded,
    target_state,
)

# $2 is the lease owner in both claims.
_CLAIM = """
    state = 'RUNNING',
    attempt_count = jobs.attempt_count + 1,
    lease_owner = $2,
    lease_token = gen_random_uuid(),
    lease_expires_at = now() + make_interval(secs => jobs.visibility_timeout),
    started_at = now(),
    finished_at = NULL,
    updated_at = now()"""

# The hinted rows are found by primary key alone and their state is checked once they are
# locked. Putting the state and due-time conditions in the lookup would let the planner
# pick the pending-jobs index instead, a scan that grows with the backlog; it does so
# whenever the statistics say the table is small (a queue table is often empty when
# analyzed, then fills quickly).
CLAIM_JOBS = f"""
WITH locked AS (
    SELECT id, queue, state, next_run_at FROM jobs
    WHERE id = ANY($1::uuid[])
    ORDER BY id
    FOR UPDATE
), claimable AS (
    SELECT id FROM locked
    WHERE state = 'PENDING' AND next_run_at <= now()
      AND {not_paused("locked.queue", claiming=True)}
)
UPDATE jobs SET {_CLAIM}
FROM claimable
WHERE jobs.id = claimable.id
RETURNING {JOBS_COLUMNS}
"""

# By priority, then oldest due first (domain.job.dispatch_order). Each queue's first jobs
# come from its own ordered walk of the index on (queue, priority, next_run_at, id) of
# pending jobs (migration 0010), then the queues' candidates are merged: with `queue =
# ANY(...)` instead, the index cannot give the order, and Postgres sorts every due job of
# the backlog (a 200k backlog: 0.5 s a claim, against a few ms so). A queue's candidates
# that the merge leaves out stay locked only until the statement ends. The claimed jobs are
# found by primary key alone: locked, they stay PENDING (see sweeps.PROMOTE_DUE).
CLAIM_DUE_JOBS = f"""
WITH due AS (
    SELECT candidate.id, candidate.priority, candidate.next_run_at
    -- Each queue once, paused ones left out.
    FROM (
        SELECT DISTINCT asked.queue FROM unnest($1::text[]) AS asked (queue)
        WHERE {not_paused("asked.queue", claiming=True)}
    ) AS wanted (queue)
    CROSS JOIN LATERAL (
        SELECT id, priority, next_run_at FROM jobs
        WHERE jobs.queue = wanted.queue AND state = 'PENDING' AND next_run_at <= now()
        ORDER BY priority, next_run_at, id
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) AS candidate
    ORDER BY candidate.priority, candidate.next_run_at, candidate.id
    LIMIT $3
), claimed AS (
    UPDATE jobs SET {_CLAIM}
    FROM due
    WHERE jobs.id = due.id
    RETURNING {JOBS_COLUMNS}, due.next_run_at AS due_at
)
SELECT {JOB_COLUMNS} FROM claimed ORDER BY priority, due_at, id
"""

# The RUNNING jobs whose lease token matches one of ($1 ids, $2 tokens), locked in id order.
_HELD_LEASES = """
held AS (
    SELECT jobs.id, lease.token
    FROM jobs
    JOIN unnest($1::uuid[], $2::uuid[]) AS lease (job_id, token)
        ON jobs.id = lease.job_id AND jobs.lease_token = lease.token
    WHERE jobs.state = 'RUNNING'
    ORDER BY jobs.id
    FOR UPDATE OF jobs
)"""

_STILL_HELD = "jobs.id = held.id AND jobs.state = 'RUNNING' AND jobs.lease_token = held.token"

HEARTBEAT = f"""
WITH {_HELD_LEASES}
UPDATE jobs SET
    lease_expires_at = now() + make_interval(secs => jobs.visibility_timeout),
    updated_at = now()
FROM held
WHERE {_STILL_HELD}
RETURNING jobs.id
"""

# The attempt was not finished, so it does not count.
RELEASE = f"""
WITH {_HELD_LEASES}
UPDATE jobs SET {REQUEUE}, attempt_count = jobs.attempt_count - 1,
    hand_backs = jobs.hand_backs + 1
FROM held
WHERE {_STILL_HELD}
RETURNING jobs.id
"""

# One statement for a whole batch of outcomes: $3 is each job's target state, $4 the error
# (FAILED, DLQ), $5 the delay until it is due again (FAILED, PENDING), $6 the dead-letter
# reason (DLQ), $7 the error's traceback (FAILED, DLQ; may be NULL), $8 the result as JSON
# text (SUCCEEDED; NULL for none, and always for the other outcomes), $9 whether a release
# (PENDING) is a snooze rather than a hand-back, $10 a hand-back's unknown_type_since.
# A release does not count its attempt; its hint is published by the scheduler once due.
SETTLE = f"""
WITH held AS (
    SELECT jobs.id, outcome.token, outcome.target, outcome.error, outcome.delay,
           outcome.reason, outcome.traceback, outcome.result, outcome.snoozed,
           outcome.unknown_type_since
    FROM jobs
    JOIN unnest(
        $1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::interval[], $6::text[], $7::text[],
        $8::text[], $9::boolean[], $10::timestamptz[]
    ) AS outcome (
        job_id, token, target, error, delay, reason, traceback, result, snoozed,
        unknown_type_since
    )
        ON jobs.id = outcome.job_id AND jobs.lease_token = outcome.token
    WHERE jobs.state = 'RUNNING'
    ORDER BY jobs.id
    FOR UPDATE OF jobs
), settled AS (
    UPDATE jobs SET
        state = held.target,
        last_error = CASE WHEN held.target IN ('SUCCEEDED', 'PENDING') THEN jobs.last_error
                          ELSE held.error END,
        errors = CASE WHEN held.target IN ('SUCCEEDED', 'PENDING') THEN jobs.errors
                      ELSE {with_error("held.error", "held.traceback")} END,
        reason = CASE WHEN held.target = 'DLQ' THEN held.reason ELSE jobs.reason END,
        result = held.result::jsonb,
        next_run_at = CASE WHEN held.target IN ('FAILED', 'PENDING') THEN now() + held.delay
                           ELSE jobs.next_run_at END,
        finished_at = CASE WHEN held.target = 'FAILED' THEN jobs.finished_at
                           WHEN held.target = 'PENDING' THEN NULL
                           ELSE now() END,
        attempt_count = CASE WHEN held.target = 'PENDING' THEN jobs.attempt_count - 1
                             ELSE jobs.attempt_count END,
        snoozes = CASE WHEN held.snoozed THEN jobs.snoozes + 1 ELSE jobs.snoozes END,
        hand_backs = CASE WHEN held.target = 'PENDING' AND NOT held.snoozed
                          THEN jobs.hand_backs + 1 ELSE jobs.hand_backs END,
        unknown_type_since = CASE WHEN held.target = 'PENDING' THEN held.unknown_type_since
                                  ELSE jobs.unknown_type_since END,
        published_at = CASE WHEN held.target = 'PENDING' THEN NULL ELSE jobs.published_at END,
        updated_at = now(),
        {NO_LEASE}
    FROM held
    WHERE {_STILL_HELD}
    RETURNING jobs.id, jobs.queue, jobs.job_type, jobs.payload, jobs.state, jobs.reason,
              jobs.last_error, jobs.attempt_count
), dead_lettered AS ({ENTER_DLQ.format(source="settled")}
)
SELECT id FROM settled
"""


class PostgresLeaseStore(PooledAdapter):
    """LeaseStore on Postgres; semantics identical to InMemoryLeaseStore."""

    async def claim(self, job_ids: Sequence[UUID], owner: str) -> list[Job]:
        if not job_ids:
            return []
        async with self._connection() as conn:
            rows = await conn.fetch(CLAIM_JOBS, list(job_ids), owner)
        claimed = {row["id"]: job_from_row(row) for row in rows}
        return [claimed[job_id] for job_id in dict.fromkeys(job_ids) if job_id in claimed]

    async def claim_due(self, queues: Sequence[str], limit: int, owner: str) -> list[Job]:
        if not queues or limit < 1:
            return []
        async with self._connection() as conn:
            rows = await conn.fetch(CLAIM_DUE_JOBS, list(queues), owner, limit)
        return [job_from_row(row) for row in rows]

    async def heartbeat(self, leases: Sequence[Lease]) -> set[UUID]:
        return await self._held_write(HEARTBEAT, leases)

    async def settle(self, settlements: Sequence[Settlement]) -> set[UUID]:
        if not settlements:
            return set()
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [], [])
        for settlement in settlements:
            error = delay = reason = traceback = result = unknown_type_since = None
            snoozed = False
            match settlement:
                case Succeeded():
                    result = settlement.result
                case RetryLater():
                    error, delay = settlement.error, settlement.delay
                    traceback = settlement.traceback
                case DeadLettered():
                    error, reason = settlement.error, settlement.reason
                    traceback = settlement.traceback
                case Snoozed():
                    delay, snoozed = settlement.delay, True
                case HandedBack():
                    delay, unknown_type_since = settlement.delay, settlement.unknown_type_since
            row = (
                settlement.lease.job_id,
                settlement.lease.token,
                target_state(settlement).value,
                error,
                delay,
                reason,
                traceback,
                result,
                snoozed,
                unknown_type_since,
            )
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        async with self._connection() as conn:
            rows = await conn.fetch(SETTLE, *columns)
        return {row["id"] for row in rows}

    async def release(self, leases: Sequence[Lease]) -> set[UUID]:
        return await self._held_write(RELEASE, leases)

    async def _held_write(self, statement: str, leases: Sequence[Lease]) -> set[UUID]:
        if not leases:
            return set()
        ids = [lease.job_id for lease in leases]
        tokens = [lease.token for lease in leases]
        async with self._connection() as conn:
            rows = await conn.fetch(statement, ids, tokens)
        return {row["id"] for row in rows}
