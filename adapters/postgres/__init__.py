"""The Postgres backend: the source of truth for jobs and dead letters, and its schema.

One module per store role (`job_store`, `lease_store`, `sweeps`, `operator_moves`,
`queue_pauses`, `schedule_store`, `dead_letter_store`, `worker_registry`), each with
its SQL beside its methods; `connection` opens the pool they share and maps connection
failures to Unavailable; `migrations` brings a database's schema up to date from the
numbered files in `migrations/`.

Every transition is one conditional statement: it names the state it expects and, for a
worker's writes, the lease token, so a write whose condition no longer holds changes
nothing. Batched methods take arrays and `unnest` them (a large batch of new jobs without
keys is written by COPY instead: `job_copy`). Statements that lock several rows
and may wait lock them in id order, so two of them never wait for each other in a cycle;
scheduler sweeps use `FOR UPDATE SKIP LOCKED` instead, so concurrent schedulers share the
work without waiting and never handle one job twice. Timestamps come from the database's
`now()` (the transaction's start), never from Python (COPY writes the `now()` it read).
"""

from taskforge.adapters.postgres.connection import create_pool
from taskforge.adapters.postgres.dead_letter_store import PostgresDeadLetterStore
from taskforge.adapters.postgres.job_store import PostgresJobStore
from taskforge.adapters.postgres.lease_store import PostgresLeaseStore
from taskforge.adapters.postgres.migrations import MigrationError, apply_migrations
from taskforge.adapters.postgres.operator_moves import PostgresOperatorMoves
from taskforge.adapters.postgres.queue_pauses import PostgresQueuePauses
from taskforge.adapters.postgres.schedule_store import PostgresScheduleStore
from taskforge.adapters.postgres.sweeps import PostgresSweeps
from taskforge.adapters.postgres.worker_registry import PostgresWorkerRegistry

__all__ = [
    "MigrationError",
    "PostgresDeadLetterStore",
    "PostgresJobStore",
    "PostgresLeaseStore",
    "PostgresOperatorMoves",
    "PostgresQueuePauses",
    "PostgresScheduleStore",
    "PostgresSweeps",
    "PostgresWorkerRegistry",
    "apply_migrations",
    "create_pool",
]
