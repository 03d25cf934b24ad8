"""The dashboard in Chromium against the production stack: `taskforge api`, `worker` and
`scheduler` on Postgres and Redis. The operator flows of test_dashboard_dev run here as
they are, on the `dev` fixture below."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from tests.conftest import RUN_ID
from tests.support import delete_keys, redis_env

from .conftest import Server, launch, wait_until_healthy
from .test_dashboard_dev import (
    test_a_dead_letter_opened_from_its_group_is_replayed_and_succeeds,
    test_a_group_of_fifty_dead_letters_is_replayed_in_one_go,
    test_a_payload_with_a_script_is_shown_as_text,
    test_the_overview_counts_change_as_jobs_finish_without_a_reload,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUEUE = f"test-{RUN_ID}-ui-{uuid.uuid4().hex[:6]}"


async def _empty_tables(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE jobs, dead_letters, queues")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def stack(
    migrated_dsn: str, redis_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    asyncio.run(_empty_tables(migrated_dsn))
    prefix = f"{redis_prefix}ui:"
    env = {
        "POSTGRES_DSN": migrated_dsn,
        **redis_env(redis_url),
        "TASKFORGE_REDIS_PREFIX": prefix,
        "QUEUE_NAME": QUEUE,
        "SCHEDULER_TICK": "0.1",
    }
    server = launch(
        [["api"], ["worker", "--demo-handlers"], ["scheduler"]],
        env,
        tmp_path_factory.mktemp("stack"),
    )
    try:
        wait_until_healthy(server)
        yield server
    finally:
        server.stop()
        delete_keys(redis_url, (f"{prefix}*", f"{QUEUE}*"))


@pytest.fixture
def dev(stack: Server) -> Server:
    return stack


@pytest.fixture
def queue() -> str:
    return QUEUE


__all__ = [
    "test_a_dead_letter_opened_from_its_group_is_replayed_and_succeeds",
    "test_a_group_of_fifty_dead_letters_is_replayed_in_one_go",
    "test_a_payload_with_a_script_is_shown_as_text",
    "test_the_overview_counts_change_as_jobs_finish_without_a_reload",
]
