"""The job store contract: every test here runs against each implementation of the job
store's roles (JobStore, LeaseStore, Sweeps, OperatorMoves) and DeadLetterStore, the
in-memory ones and the Postgres ones.

Postgres tests share this run's database (migrated once) and start from empty tables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from taskforge.adapters.memory.dead_letter_store import InMemoryDeadLetterStore
from taskforge.adapters.memory.state import InMemoryState
from taskforge.adapters.postgres import PostgresDeadLetterStore, create_pool
from taskforge.adapters.system import SystemClock, Uuid7Source
from taskforge.application.ports import DeadLetterStore
from taskforge.domain.job import NewJob
from tests.job_stores import InMemoryJobs, JobRoles, PostgresJobs

JobFactory = Callable[..., NewJob]
Stores = tuple[JobRoles, DeadLetterStore]

_ids = Uuid7Source()


@pytest.fixture(params=["memory", "postgres"])
def backend_dsn(request: pytest.FixtureRequest) -> str | None:
    """Which store a test runs against: None for the in-memory one, else a Postgres DSN.
    Resolved here, outside the event loop, because the database fixtures run their own."""
    if request.param == "memory":
        return None
    dsn: str = request.getfixturevalue("migrated_dsn")
    return dsn


@pytest.fixture
async def stores(backend_dsn: str | None) -> AsyncIterator[Stores]:
    if backend_dsn is None:
        state = InMemoryState(SystemClock(), Uuid7Source())
        yield InMemoryJobs(state), InMemoryDeadLetterStore(state)
        return
    # Several connections, so concurrent calls in a test really race inside Postgres.
    pool = await create_pool(backend_dsn, min_size=4, max_size=12)
    try:
        async with pool.acquire() as conn:
            await conn.execute("TRUNCATE jobs, dead_letters")
        yield PostgresJobs(pool), PostgresDeadLetterStore(pool)
    finally:
        await pool.close()


@pytest.fixture
def jobs(stores: Stores) -> JobRoles:
    return stores[0]


@pytest.fixture
def dead_letters(stores: Stores) -> DeadLetterStore:
    return stores[1]


@pytest.fixture
def new_job(queue_name: str) -> JobFactory:
    """Builds a NewJob with a fresh time-ordered id in this test's queue; keywords override."""

    def build(**fields: Any) -> NewJob:
        fields.setdefault("id", _ids.new_id())
        fields.setdefault("queue", queue_name)
        fields.setdefault("job_type", "email")
        return NewJob(**fields)

    return build
