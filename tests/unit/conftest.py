"""In-memory wiring for unit tests: real adapters, a manual clock, no services."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from taskforge.adapters.memory.clock import ManualClock
from taskforge.adapters.memory.jobs import (
    InMemoryDeadLetterStore,
    InMemoryJobRepository,
    InMemoryState,
)
from taskforge.adapters.memory.ready_queue import InMemoryReadyQueue
from taskforge.adapters.system import Uuid7Source
from taskforge.domain.job import NewJob
from taskforge.domain.policy import RetryPolicy


@dataclass
class Memory:
    clock: ManualClock
    ids: Uuid7Source
    state: InMemoryState
    jobs: InMemoryJobRepository
    dead_letters: InMemoryDeadLetterStore
    ready_queue: InMemoryReadyQueue

    def new_job(self, job_type: str = "noop", **fields: object) -> NewJob:
        fields.setdefault("queue", "jobs:ready")
        return NewJob(id=self.ids.new_id(), job_type=job_type, **fields)  # type: ignore[arg-type]


@pytest.fixture
def memory() -> Memory:
    clock = ManualClock()
    ids = Uuid7Source()
    state = InMemoryState()
    return Memory(
        clock=clock,
        ids=ids,
        state=state,
        jobs=InMemoryJobRepository(state, clock, ids),
        dead_letters=InMemoryDeadLetterStore(state),
        ready_queue=InMemoryReadyQueue(),
    )


def quick_policy(max_attempts: int = 3) -> RetryPolicy:
    return RetryPolicy(max_attempts=max_attempts, initial_delay=1.0, backoff=2.0, max_delay=60.0)
