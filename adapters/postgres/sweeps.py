"""Sweeps on Postgres: the scheduler's batched passes. Each locks its rows with
`FOR UPDATE SKIP LOCKED`, so concurrent schedulers share the work without waiting and never
handle one job twice."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID

from taskforge.adapters.postgres._fragments import (
    ATTEMPTS_EXHAUSTED,
    ENTER_DLQ,
    NO_LEASE,
    REQUEUE,
    not_paused,
    with_error,
)
from taskforge.adapters.postgres._rows import hint_from_row, reaped_dead_letter_from_row
from taskforge.adapters.postgres.connection import PooledAdapter
from taskforge.application.ports import STALE_LOOKOUT
from taskforge.domain.job import ReadyHint, ReapedDeadLetter
from taskforge.domain.outcome import EXHAUSTED_REASON, LEASE_EXPIRED_ERROR
from taskforge.domain.states import JobState
from taskforge.domain.validation import HIGHEST_PRIORITY, LOWEST_PRIORITY

PENDING = JobState.PENDING

# The UPDATEs below find the rows their CTE locked by primary key alone: a locked row keeps
# the state it was locked in until the statement ends. A state condition there would let
# the planner, when the statistics know of no job in that state (a backlog that built up
# since the last ANALYZE), walk the state's index and compare each of its jobs with each
# locked one: seconds per sweep for a backlog of 20,000, growing with its square.
PROMOTE_DUE = f"""
WITH due AS (
    SELECT id, next_run_at FROM jobs
    WHERE state = 'FAILED' AND next_run_at <= now()
    ORDER BY next_run_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), promoted AS (
    UPDATE jobs SET {REQUEUE}, retry_count = jobs.retry_count + 1
    FROM due
    WHERE jobs.id = due.id
    RETURNING jobs.id, jobs.queue, jobs.traceparent, jobs.priority, due.next_run_at AS due_at
)
SELECT queue, id, traceparent, priority FROM promoted ORDER BY due_at, id
"""

# Attempts left: back to PENDING (the expired attempt still counts). None left: DLQ.
# $2 is the error recorded on the job, $3 the dead-letter reason.
REAP_EXPIRED = f"""
WITH expired AS (
    SELECT id, lease_expires_at FROM jobs
    WHERE state = 'RUNNING' AND lease_expires_at < now()
    ORDER BY lease_expires_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), reaped AS (
    UPDATE jobs SET
        state = CASE WHEN {ATTEMPTS_EXHAUSTED} THEN 'DLQ'
                     ELSE 'PENDING' END,
        last_error = $2::text,
        errors = {with_error("$2::text", "NULL::text")},
        reason = CASE WHEN {ATTEMPTS_EXHAUSTED} THEN $3::text END,
        next_run_at = CASE WHEN {ATTEMPTS_EXHAUSTED} THEN jobs.next_run_at
                           ELSE now() END,
        published_at = CASE WHEN {ATTEMPTS_EXHAUSTED}
                            THEN jobs.published_at ELSE now() END,
        finished_at = CASE WHEN {ATTEMPTS_EXHAUSTED} THEN now() END,
        updated_at = now(),
        {NO_LEASE}
    FROM expired
    WHERE jobs.id = expired.id AND jobs.state = 'RUNNING'
    RETURNING jobs.id, jobs.queue, jobs.job_type, jobs.payload, jobs.state, jobs.reason,
              jobs.last_error, jobs.attempt_count, jobs.traceparent, jobs.priority,
              expired.lease_expires_at AS expired_at
), dead_lettered AS ({ENTER_DLQ.format(source="reaped")}
)
SELECT queue, id, state, traceparent, priority, job_type, reason, last_error
FROM reaped ORDER BY expired_at, id
"""

# By priority, then oldest due first (domain.job.dispatch_order): when more jobs wait for
# a hint than one batch takes, the higher priorities' hints go out first. {found} picks
# the due pending jobs of unpaused queues, locked, with their id, priority and next_run_at.
_MARK_PUBLISHED = """
WITH found AS ({found}
), marked AS (
    UPDATE jobs SET published_at = now()
    FROM found
    WHERE jobs.id = found.id
    RETURNING jobs.id, jobs.queue, jobs.traceparent, jobs.priority,
              found.next_run_at AS due_at
)
SELECT queue, id, traceparent, priority FROM marked ORDER BY priority, due_at, id
"""
# No hint for $4 seconds: never published, or published long enough ago to be lost.
_STALE = "(published_at IS NULL OR published_at < now() - make_interval(secs => $4))"
# Each priority on its own: a queue's claim-order index (queue, priority, next_run_at, id)
# holds its due jobs of one priority as one range, ahead of the ones not due yet.
_EACH_PRIORITY = f"generate_series({HIGHEST_PRIORITY}, {LOWEST_PRIORITY}) AS level (priority)"

# Only queues whose due jobs outnumber the hints they hold or are about to get ($2, per
# queue $1), and of those only as many stale jobs as they lack: a backlog that waits with
# its hints intact is not rewritten every REPUBLISH_AFTER. First a look for a stale job
# among each priority's STALE_LOOKOUT oldest due jobs, so that a queue with none costs an
# index probe per priority and no count, however many jobs it holds. Its due jobs are its
# pending count (job_counts, in the statement's snapshot) less the ones not due yet,
# counted per priority from the claim-order index: a waiting backlog is not counted, only
# the delayed jobs beside it, which are what make a covered queue look short. Each queue's
# stale jobs in dispatch order through its claim-order index; with several queues short,
# the ones the batch leaves out stay locked until the statement ends.
FIND_UNPUBLISHED = _MARK_PUBLISHED.format(
    found=f"""
    SELECT candidate.id, candidate.priority, candidate.next_run_at
    FROM (
        SELECT name, covered FROM unnest($1::text[], $2::bigint[]) AS wanted (name, covered)
        WHERE {not_paused("wanted.name")}
          AND EXISTS (
            SELECT 1 FROM {_EACH_PRIORITY} CROSS JOIN LATERAL (
                SELECT published_at FROM jobs
                WHERE jobs.queue = wanted.name AND jobs.priority = level.priority
                  AND state = 'PENDING' AND next_run_at <= now()
                ORDER BY next_run_at, id
                LIMIT {STALE_LOOKOUT}
            ) AS oldest
            WHERE {_STALE}
          )
    ) AS queue
    CROSS JOIN LATERAL (
        SELECT (
            SELECT coalesce(sum(job_counts.jobs), 0) FROM job_counts
            WHERE job_counts.queue = queue.name AND job_counts.state = 'PENDING'
        ) - (
            SELECT coalesce(sum(later.jobs), 0) FROM {_EACH_PRIORITY} CROSS JOIN LATERAL (
                SELECT count(*) AS jobs FROM jobs
                WHERE jobs.queue = queue.name AND jobs.priority = level.priority
                  AND state = 'PENDING' AND next_run_at > now()
            ) AS later
        ) AS jobs
    ) AS due
    CROSS JOIN LATERAL (
        SELECT id, priority, next_run_at FROM jobs
        WHERE jobs.queue = queue.name AND state = 'PENDING' AND next_run_at <= now()
          AND {_STALE}
        ORDER BY priority, next_run_at, id
        LIMIT least(greatest(due.jobs - queue.covered, 0), $3::integer)
        FOR UPDATE SKIP LOCKED
    ) AS candidate
    ORDER BY candidate.priority, candidate.next_run_at, candidate.id
    LIMIT $3"""
)
# After a Redis loss every pending job is unpublished: one sort over all of them would take
# each batch a second per 200k jobs. Instead each priority's first jobs come from an
# ordered walk of the index on (priority, next_run_at, id) of unpublished pending jobs
# (migration 0010), and only those (at most ten batches) are sorted. The ones the batch
# leaves out stay locked only until the statement ends.
FIND_NEVER_PUBLISHED = _MARK_PUBLISHED.format(
    found=f"""
    SELECT candidate.id, candidate.priority, candidate.next_run_at
    FROM generate_series({HIGHEST_PRIORITY}, {LOWEST_PRIORITY}) AS level (priority)
    CROSS JOIN LATERAL (
        SELECT id, priority, next_run_at FROM jobs
        WHERE jobs.priority = level.priority
          AND state = 'PENDING' AND published_at IS NULL AND next_run_at <= now()
          AND {not_paused("jobs.queue")}
        ORDER BY next_run_at, id
        LIMIT $1
        FOR UPDATE SKIP LOCKED
    ) AS candidate
    ORDER BY candidate.priority, candidate.next_run_at, candidate.id
    LIMIT $1"""
)

# From the maintained counts (migration 0013): cheap whatever the size of the table.
COUNT_PENDING = f"""
SELECT queue, sum(jobs)::bigint AS jobs FROM job_counts
WHERE state = 'PENDING' AND {not_paused("job_counts.queue")}
GROUP BY queue HAVING sum(jobs) > 0
"""

# A pending row someone else holds is about to leave PENDING or to be published by its
# holder, so skipping it is safe, and skipping means this sweep never waits on a claim.
# In bounded batches, each its own transaction: one statement over the whole backlog
# would hold every pending row locked while it runs, and claims wait for those locks.
MARK_UNPUBLISHED_BATCH = 1000

_MARK_PENDING = """marked AS (
    UPDATE jobs SET published_at = NULL
    FROM pending
    WHERE jobs.id = pending.id
    RETURNING 1
)"""
"""Forget the published time of the rows of `pending` (a CTE of PENDING jobs' ids)."""

MARK_UNPUBLISHED = f"""
WITH pending AS (
    SELECT id FROM jobs
    WHERE state = 'PENDING' AND id > $2
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), {_MARK_PENDING}
SELECT (SELECT count(*) FROM marked) AS marked,
       (SELECT count(*) FROM pending) AS seen,
       (SELECT id FROM pending ORDER BY id DESC LIMIT 1) AS last
"""

# Hints that never reached the ready queue. A pending row someone holds is skipped, as in
# MARK_UNPUBLISHED: it is about to leave PENDING or to be published by its holder.
MARK_JOBS_UNPUBLISHED = f"""
WITH pending AS (
    SELECT id FROM jobs
    WHERE id = ANY($1::uuid[]) AND state = 'PENDING'
    FOR UPDATE SKIP LOCKED
), {_MARK_PENDING}
SELECT count(*) FROM marked
"""

# Oldest first through jobs_prunable_by_finished_at (migration 0019), both states in one
# scan: it starts at the longest finished job and stops at `limit` rows or at the first one
# still within retention. The states are written out, not passed, so that every plan of the
# statement, a generic one too, knows it may use that partial index.
PRUNE_FINISHED = """
WITH doomed AS (
    SELECT id FROM jobs
    WHERE state IN ('SUCCEEDED', 'CANCELLED')
      AND finished_at < now() - make_interval(secs => $1)
    ORDER BY finished_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM jobs USING doomed WHERE jobs.id = doomed.id RETURNING 1
)
SELECT count(*) FROM deleted
"""

# Pairs with more than one row get their rows replaced by one holding the sum (none when
# the sum is 0). Rows appended meanwhile are not in this statement's snapshot and stay.
FOLD_JOB_COUNTS = """
WITH pairs AS (
    SELECT queue, state FROM job_counts GROUP BY queue, state HAVING count(*) > 1
), folded AS (
    DELETE FROM job_counts USING pairs
    WHERE job_counts.queue = pairs.queue AND job_counts.state = pairs.state
    RETURNING job_counts.queue, job_counts.state, job_counts.jobs
), summed AS (
    INSERT INTO job_counts (queue, state, jobs)
    SELECT queue, state, sum(jobs) FROM folded GROUP BY queue, state HAVING sum(jobs) <> 0
)
SELECT count(*) FROM folded
"""

# One scheduler folds at a time: two deleting the same rows in different orders could
# deadlock, and a second one would find nothing left to fold anyway.
FOLD_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext('taskforge:fold_job_counts'))"

# A TRUNCATE of jobs empties job_counts (migration 0013) with a DELETE that does not see
# the row a fold committing meanwhile inserts: that sum would outlive the jobs it counted.
# Holding jobs in ACCESS SHARE, which TRUNCATE's lock conflicts with, makes a fold end
# before a TRUNCATE begins, or begin after it ended.
FOLD_HOLDS_OFF_TRUNCATE = "LOCK TABLE jobs IN ACCESS SHARE MODE"


class PostgresSweeps(PooledAdapter):
    """Sweeps on Postgres; semantics identical to InMemorySweeps."""

    async def promote_due(self, limit: int) -> list[ReadyHint]:
        async with self._connection() as conn:
            rows = await conn.fetch(PROMOTE_DUE, limit)
        return [hint_from_row(row) for row in rows]

    async def reap_expired(self, limit: int) -> tuple[list[ReadyHint], list[ReapedDeadLetter]]:
        async with self._connection() as conn:
            rows = await conn.fetch(REAP_EXPIRED, limit, LEASE_EXPIRED_ERROR, EXHAUSTED_REASON)
        hints = [hint_from_row(row) for row in rows if row["state"] == PENDING]
        dead = [reaped_dead_letter_from_row(row) for row in rows if row["state"] != PENDING]
        return hints, dead

    async def find_unpublished(
        self, covered: Mapping[str, int], limit: int, older_than: float
    ) -> list[ReadyHint]:
        if not covered or limit <= 0:
            return []
        queues = list(covered)
        counts = [covered[queue] for queue in queues]
        async with self._connection() as conn:
            rows = await conn.fetch(FIND_UNPUBLISHED, queues, counts, limit, float(older_than))
        return [hint_from_row(row) for row in rows]

    async def find_never_published(self, limit: int) -> list[ReadyHint]:
        async with self._connection() as conn:
            rows = await conn.fetch(FIND_NEVER_PUBLISHED, limit)
        return [hint_from_row(row) for row in rows]

    async def count_pending(self) -> dict[str, int]:
        async with self._connection() as conn:
            rows = await conn.fetch(COUNT_PENDING)
        return {row["queue"]: int(row["jobs"]) for row in rows}

    async def mark_unpublished(self, job_ids: Sequence[UUID] | None = None) -> int:
        if job_ids is not None:
            return await self._mark_jobs_unpublished(job_ids)
        marked, after = 0, UUID(int=0)
        async with self._connection() as conn:
            while True:
                row = await conn.fetchrow(MARK_UNPUBLISHED, MARK_UNPUBLISHED_BATCH, after)
                assert row is not None
                marked += row["marked"]
                if row["seen"] < MARK_UNPUBLISHED_BATCH:
                    return int(marked)
                after = row["last"]

    async def _mark_jobs_unpublished(self, job_ids: Sequence[UUID]) -> int:
        if not job_ids:
            return 0
        async with self._connection() as conn:
            marked = await conn.fetchval(MARK_JOBS_UNPUBLISHED, list(job_ids))
        return int(marked)

    async def prune_finished(self, older_than: float, limit: int) -> int:
        async with self._connection() as conn:
            deleted = await conn.fetchval(PRUNE_FINISHED, older_than, limit)
        return int(deleted)

    async def fold_job_counts(self) -> int:
        async with self._connection() as conn, conn.transaction():
            if not await conn.fetchval(FOLD_LOCK):
                return 0
            await conn.execute(FOLD_HOLDS_OFF_TRUNCATE)
            return int(await conn.fetchval(FOLD_JOB_COUNTS))
