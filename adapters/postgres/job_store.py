"""JobStore on Postgres: storing jobs (idempotently, in batches) and reading them back.
The statements that store them are in job_inserts (and job_copy, for large batches)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from taskforge.adapters.postgres._rows import (
    JOB_COLUMNS,
    JOB_DETAIL_COLUMNS,
    JOBS_COLUMNS,
    as_uuid,
    job_from_row,
)
from taskforge.adapters.postgres.connection import PING_TIMEOUT, PooledAdapter
from taskforge.adapters.postgres.job_copy import copy_jobs, stored_by_copy
from taskforge.adapters.postgres.job_inserts import (
    INSERT_JOB,
    INSERT_JOB_ALONE,
    INSERT_JOB_UNPUBLISHED,
    INSERT_JOBS,
    INSERT_JOBS_BY_COLUMNS,
    INSERT_JOBS_UNPUBLISHED,
    column_parameters,
    insert_parameters,
)
from taskforge.adapters.postgres.job_lists import find_statement
from taskforge.application.ports import Added, ListFilter
from taskforge.domain.errors import JobIdTaken
from taskforge.domain.job import Job, QueueStats
from taskforge.domain.new_job import NewJob
from taskforge.domain.states import JobState
from taskforge.domain.validation import Page

SELECT_JOBS_BY_IDEMPOTENCY_KEY = f"""
SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = ANY($1::text[])
"""

SELECT_JOBS_BY_UNIQUE_KEY = f"""
SELECT {JOBS_COLUMNS} FROM jobs
JOIN unnest($1::text[], $2::text[]) AS wanted (queue, unique_key)
    ON jobs.queue = wanted.queue AND jobs.unique_key = wanted.unique_key
WHERE jobs.state IN ('PENDING', 'RUNNING', 'FAILED')
"""

SELECT_TAKEN_IDS = "SELECT id FROM jobs WHERE id = ANY($1::uuid[])"
SELECT_JOB = f"SELECT {JOB_DETAIL_COLUMNS} FROM jobs WHERE id = $1"

# From the maintained counts (migration 0013), not a count over the jobs table.
COUNT_BY_QUEUE_AND_STATE = """
SELECT queue, state, sum(jobs)::bigint AS jobs FROM job_counts
GROUP BY queue, state HAVING sum(jobs) <> 0
"""

PING = "SELECT 1"


class PostgresJobStore(PooledAdapter):
    """JobStore on Postgres; semantics identical to InMemoryJobStore."""

    async def add(self, job: NewJob) -> Added:
        async with self._connection() as conn:
            [result] = await insert_jobs(conn, [job])
            return result

    async def add_many(self, jobs: Sequence[NewJob]) -> list[Added]:
        if not jobs:
            return []
        async with self._connection() as conn:
            if len(jobs) == 1 or stored_by_copy(conn, jobs):
                # Its INSERT (or the batch's COPY) is the only statement that can write:
                # atomic on its own, no BEGIN/COMMIT round trips around it.
                return await insert_jobs(conn, jobs)
            # A batch's INSERT may be followed by a look-up of taken keys and another INSERT:
            # one transaction keeps it all or none, also when a later statement fails, the
            # rows cannot be read back or the call is cancelled.
            async with conn.transaction():
                return await insert_jobs(conn, jobs)

    async def get(self, job_id: UUID) -> Job | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(SELECT_JOB, job_id)
        return None if row is None else job_from_row(row)

    async def find(self, where: ListFilter, page: Page) -> tuple[list[Job], int]:
        statement, filters = find_statement(where)
        async with self._connection() as conn:
            rows = await conn.fetch(statement, page.limit, page.offset, *filters)
        jobs = [job_from_row(row) for row in rows if row["id"] is not None]
        return jobs, rows[0]["total"]

    async def stats(self) -> list[QueueStats]:
        async with self._connection() as conn:
            rows = await conn.fetch(COUNT_BY_QUEUE_AND_STATE)
        per_queue: dict[str, dict[JobState, int]] = {}
        for row in rows:
            counts = per_queue.setdefault(row["queue"], dict.fromkeys(JobState, 0))
            counts[JobState(row["state"])] = row["jobs"]
        # Sorted here, not in SQL, so the order is Python's string order whatever the
        # database's collation.
        return [QueueStats(queue, counts) for queue, counts in sorted(per_queue.items())]

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval(PING, timeout=PING_TIMEOUT)


async def insert_jobs(
    conn: asyncpg.Connection | PoolConnectionProxy,
    jobs: Sequence[NewJob],
    attempts: int = 3,
    *,
    published: bool = True,
) -> list[Added]:
    """See insert_jobs_as; a created job is the Job its NewJob stores, needing its hint now
    when the INSERT stored it as published; an existing job never needs one."""
    return await insert_jobs_as(conn, jobs, _added, _existing, attempts, published=published)


def _added(job: NewJob, row: CreatedRow) -> Added:
    stored = job.stored(row["next_run_at"], row["created_at"], row["payload"])
    return Added(stored, True, row["published"])


def _existing(holder: Job) -> Added:
    return Added(holder, False, False)


Outcome = TypeVar("Outcome")
CreatedRow = asyncpg.Record | Mapping[str, Any]
"""A created job's id, payload, next_run_at, created_at and published, as insert_jobs_as
gives them to `created_as`: the INSERT's row, or the same read from a COPY."""


async def insert_jobs_as(
    conn: asyncpg.Connection | PoolConnectionProxy,
    jobs: Sequence[NewJob],
    created_as: Callable[[NewJob, CreatedRow], Outcome],
    existing_as: Callable[[Job], Outcome],
    attempts: int = 3,
    *,
    published: bool = True,
) -> list[Outcome]:
    """Insert the jobs, as if one after the other: a job whose idempotency key is taken
    yields the job that holds it; else a job whose unique key an unfinished job of its
    queue holds yields that job (stored earlier, or earlier in this batch). A job whose id
    is taken raises JobIdTaken, with the caller's transaction usable; jobs of the batch
    stored before it (by an INSERT of a small batch, or an earlier chunk) stay in that
    transaction, so the caller rolls it back, as after any failed write (a COPY's batch is
    undone by its savepoint).
    `published` False: the due ones are left for the scheduler to publish (see
    job_inserts.UNPUBLISHED).
    Atomic only within the caller's transaction (a batch may take several statements). On a
    connection without TaskForge's jsonb codec, the jobs' payloads come back as JSON text.
    The outcome for each job, in order: `created_as(new_job, row)` for a job created (row:
    id, payload, next_run_at, created_at, published), `existing_as(holder)` for one that
    yielded, so a caller wanting another form of them builds that form once."""
    if len(jobs) == 1 and jobs[0].idempotency_key is None and jobs[0].unique_key is None:
        # One job without keys, most enqueues. Its id is the one unique index that applies.
        # Outside a transaction its INSERT stores it or fails on that id. In one, the INSERT
        # skips a taken id, so as not to abort the caller's transaction: no row back means
        # the id is taken, or was freed since and the general path runs.
        [job] = jobs
        if not conn.is_in_transaction():
            try:
                [created] = await conn.fetch(INSERT_JOB_ALONE[published], *insert_parameters(job))
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == "jobs_pkey":
                    raise JobIdTaken(job.id) from None
                raise
            return [created_as(job, created)]
        one = INSERT_JOB if published else INSERT_JOB_UNPUBLISHED
        if (row := await conn.fetchrow(one, *insert_parameters(job))) is not None:
            return [created_as(job, row)]
        if await _taken_id(conn, jobs):
            raise JobIdTaken(job.id)
    if (repeated := repeated_id(jobs)) is not None:
        # ON CONFLICT would skip the second silently, and both would look created.
        raise JobIdTaken(repeated)
    leading, following = first_of_their_keys(jobs)
    outcomes = await _insert(conn, leading, created_as, existing_as, attempts, published)
    if not following:
        return outcomes
    # Each waits for the earlier jobs sharing one of its keys, stored now: it yields to
    # the holder of its keys, or, when none holds them any more (the earlier job yielded
    # itself), it is stored in the next round.
    by_id = dict(zip((job.id for job in leading), outcomes, strict=True))
    holders = await _holders(conn, following)
    by_id.update((job.id, existing_as(holders[job.id])) for job in following if job.id in holders)
    if freed := [job for job in following if job.id not in holders]:
        again = await insert_jobs_as(
            conn, freed, created_as, existing_as, attempts, published=published
        )
        by_id.update(zip((job.id for job in freed), again, strict=True))
    return [by_id[job.id] for job in jobs]


def first_of_their_keys(jobs: Sequence[NewJob]) -> tuple[list[NewJob], list[NewJob]]:
    """The jobs sharing neither key with an earlier job of `jobs`, and the others, each in
    order. One statement stores the first: its ORDER BY takes the keys in one order so that
    concurrent batches never deadlock, which is not the order of the batch, so it could
    not tell which of two jobs sharing a key came first."""
    leading: list[NewJob] = []
    following: list[NewJob] = []
    seen: set[tuple[str, ...]] = set()
    for job in jobs:
        if job.idempotency_key is None and job.unique_key is None:
            leading.append(job)
            continue
        keys: list[tuple[str, ...]] = []
        if job.idempotency_key is not None:
            keys.append(("idempotency", job.idempotency_key))
        if job.unique_key is not None:
            keys.append(("unique", job.queue, job.unique_key))
        (following if seen.intersection(keys) else leading).append(job)
        seen.update(keys)
    return leading, following


async def _insert(
    conn: asyncpg.Connection | PoolConnectionProxy,
    jobs: Sequence[NewJob],
    created_as: Callable[[NewJob, CreatedRow], Outcome],
    existing_as: Callable[[Job], Outcome],
    attempts: int,
    published: bool,
) -> list[Outcome]:
    """insert_jobs_as for jobs that share no key with each other."""
    if stored_by_copy(conn, jobs):
        try:
            return await copy_jobs(conn, jobs, created_as, published=published)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "jobs_pkey" and (taken_id := await _taken_id(conn, jobs)):
                raise JobIdTaken(taken_id) from None
            raise
    one, batch = (
        (INSERT_JOB, INSERT_JOBS)
        if published
        else (INSERT_JOB_UNPUBLISHED, INSERT_JOBS_UNPUBLISHED)
    )
    if len(jobs) == 1:
        rows = await conn.fetch(one, *insert_parameters(jobs[0]))
    else:
        try:
            rows = await conn.fetch(batch, [insert_parameters(job) for job in jobs])
        except asyncpg.UnsupportedClientFeatureError:
            # An application's connection whose codec reads uuid or timestamptz as text:
            # asyncpg encodes no record holding them, but arrays of them. Refused before the
            # statement ran, so the caller's transaction goes on.
            rows = await conn.fetch(INSERT_JOBS_BY_COLUMNS[published], *column_parameters(jobs))
    created = {as_uuid(row["id"]): row for row in rows}
    taken = [job for job in jobs if job.id not in created]
    holders: dict[UUID, Job] = {}
    retried: dict[UUID, Outcome] = {}
    if taken:
        holders = await _holders(conn, taken)
        if freed := [job for job in taken if job.id not in holders]:
            if taken_id := await _taken_id(conn, freed):
                raise JobIdTaken(taken_id)
            # The holder finished, or retention deleted it, between the two statements: the
            # key is free again, so those jobs are inserted after all (or meet a newer holder).
            if attempts <= 1:
                raise RuntimeError("job keys kept changing hands; try again")
            again = await insert_jobs_as(
                conn, freed, created_as, existing_as, attempts - 1, published=published
            )
            retried = {job.id: outcome for job, outcome in zip(freed, again, strict=True)}
    if not taken:
        return [created_as(job, created[job.id]) for job in jobs]
    outcomes: list[Outcome] = []
    for job in jobs:
        if (inserted := created.get(job.id)) is not None:
            outcomes.append(created_as(job, inserted))
        elif job.id in retried:
            outcomes.append(retried[job.id])
        else:
            outcomes.append(existing_as(holders[job.id]))
    return outcomes


async def _taken_id(
    conn: asyncpg.Connection | PoolConnectionProxy, jobs: Sequence[NewJob]
) -> UUID | None:
    """The id of one of `jobs` that a stored job already has, if any."""
    rows = await conn.fetch(SELECT_TAKEN_IDS, [job.id for job in jobs])
    return as_uuid(rows[0]["id"]) if rows else None


def repeated_id(jobs: Sequence[NewJob]) -> UUID | None:
    """An id two of `jobs` share, if any: ON CONFLICT would skip the second silently."""
    # First compared as numbers: a UUID's own hash is Python code, a number's is not.
    if len({job.id.int for job in jobs}) == len(jobs):
        return None
    seen: set[UUID] = set()
    for job in jobs:
        if job.id in seen:
            return job.id
        seen.add(job.id)
    return None


async def _holders(
    conn: asyncpg.Connection | PoolConnectionProxy, taken: Sequence[NewJob]
) -> dict[UUID, Job]:
    """For each job that was not inserted, by its id: the stored job holding its idempotency
    key, else its queue's unfinished job holding its unique key. Jobs with neither are left
    out."""
    by_idempotency_key: dict[str, Job] = {}
    if keys := [job.idempotency_key for job in taken if job.idempotency_key is not None]:
        for row in await conn.fetch(SELECT_JOBS_BY_IDEMPOTENCY_KEY, keys):
            by_idempotency_key[row["idempotency_key"]] = job_from_row(row)
    by_unique_key: dict[tuple[str, str], Job] = {}
    wanted = [
        (job.queue, job.unique_key)
        for job in taken
        if job.unique_key is not None and job.idempotency_key not in by_idempotency_key
    ]
    if wanted:
        queues = [queue for queue, _ in wanted]
        unique_keys = [key for _, key in wanted]
        for row in await conn.fetch(SELECT_JOBS_BY_UNIQUE_KEY, queues, unique_keys):
            by_unique_key[row["queue"], row["unique_key"]] = job_from_row(row)
    holders = {}
    for job in taken:
        holder = None
        if job.idempotency_key is not None:
            holder = by_idempotency_key.get(job.idempotency_key)
        if holder is None and job.unique_key is not None:
            holder = by_unique_key.get((job.queue, job.unique_key))
        if holder is not None:
            holders[job.id] = holder
    return holders
