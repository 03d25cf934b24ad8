"""SQL pieces that several store roles write with: a requeue, a lease cleared, a failure
appended to a job's errors, the dead_letters row written on entering DLQ, and the test
that a queue is not paused."""

from __future__ import annotations

from taskforge.domain.job import MAX_ATTEMPT_ERRORS

ATTEMPTS_EXHAUSTED = "jobs.attempt_count >= jobs.max_attempts"
"""domain.policy.attempts_exhausted over a `jobs` row; a contract test checks they agree."""

NO_LEASE = "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL"

# Back to PENDING, due now, without a result (a new run's result replaces an old one). The
# hint for it is pushed by the caller right after, so it counts as published.
REQUEUE = f"""
    state = 'PENDING',
    next_run_at = now(),
    published_at = now(),
    finished_at = NULL,
    reason = NULL,
    result = NULL,
    updated_at = now(),
    {NO_LEASE}"""


def not_paused(queue: str, *, claiming: bool = False) -> str:
    """True unless the queue named by the SQL expression `queue` is paused: its jobs are
    neither claimed nor published (they stay PENDING; resuming publishes them again).

    `claiming`: for a claim, which reads the pause in its statement's snapshot. FOR KEY
    SHARE makes the statement hold a ROW SHARE lock on `queues`, taken before that snapshot,
    which a pause's EXCLUSIVE lock (PAUSE_LOCK) conflicts with: a pause waits for the claims
    under way, and a claim that begins meanwhile waits for the pause and then sees it. Only
    a paused queue's row is ever locked, and only by a claim that meets one of its jobs."""
    lock = " FOR KEY SHARE" if claiming else ""
    return f"NOT EXISTS (SELECT 1 FROM queues WHERE queues.name = {queue} AND queues.paused{lock})"


def with_error(error: str, traceback: str) -> str:
    """The job's `errors` with its current attempt's failure appended (`error` and
    `traceback` are SQL expressions), keeping the last MAX_ATTEMPT_ERRORS."""
    return f"""jsonb_path_query_array(
        jobs.errors || jsonb_build_array(jsonb_build_object(
            'attempt', jobs.attempt_count,
            'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'error', {error},
            'traceback', {traceback}
        )),
        '$[last - {MAX_ATTEMPT_ERRORS - 1} to last]'
    )"""


# Writes the dead_letters row for every row of the named CTE that is now in DLQ. The CTE
# returns the job's id, queue, job_type, payload, reason, last_error and attempt_count.
ENTER_DLQ = """
    INSERT INTO dead_letters (
        job_id, queue, job_type, payload, reason, last_error, attempts,
        failed_at, created_at, updated_at
    )
    SELECT id, queue, job_type, payload, reason, last_error, attempt_count,
           now(), now(), now()
    FROM {source}
    WHERE state = 'DLQ'
    ON CONFLICT (job_id) DO UPDATE SET
        queue = EXCLUDED.queue,
        job_type = EXCLUDED.job_type,
        payload = EXCLUDED.payload,
        reason = EXCLUDED.reason,
        last_error = EXCLUDED.last_error,
        attempts = EXCLUDED.attempts,
        failed_at = EXCLUDED.failed_at,
        created_at = EXCLUDED.created_at,
        updated_at = EXCLUDED.updated_at"""
