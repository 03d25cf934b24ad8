"""Every role of the job store in one object, for tests that set jobs up through several
roles at once (enqueue, claim, settle...) before checking the one they are about."""

from __future__ import annotations

from typing import Protocol

from taskforge.adapters.memory.job_store import InMemoryJobStore
from taskforge.adapters.memory.lease_store import InMemoryLeaseStore
from taskforge.adapters.memory.operator_moves import InMemoryOperatorMoves
from taskforge.adapters.memory.queue_pauses import InMemoryQueuePauses
from taskforge.adapters.memory.sweeps import InMemorySweeps
from taskforge.adapters.postgres.job_store import PostgresJobStore
from taskforge.adapters.postgres.lease_store import PostgresLeaseStore
from taskforge.adapters.postgres.operator_moves import PostgresOperatorMoves
from taskforge.adapters.postgres.queue_pauses import PostgresQueuePauses
from taskforge.adapters.postgres.sweeps import PostgresSweeps
from taskforge.application.ports import (
    JobStore,
    LeaseStore,
    OperatorMoves,
    QueuePauses,
    Sweeps,
)


class JobRoles(JobStore, LeaseStore, Sweeps, OperatorMoves, QueuePauses, Protocol):
    """The job store's roles together (their method names do not overlap)."""


class InMemoryJobs(
    InMemoryJobStore,
    InMemoryLeaseStore,
    InMemorySweeps,
    InMemoryOperatorMoves,
    InMemoryQueuePauses,
):
    """Every in-memory role over one InMemoryState."""


class PostgresJobs(
    PostgresJobStore,
    PostgresLeaseStore,
    PostgresSweeps,
    PostgresOperatorMoves,
    PostgresQueuePauses,
):
    """Every Postgres role over one pool."""
