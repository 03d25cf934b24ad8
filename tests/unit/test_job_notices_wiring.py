"""Where the scheduler LISTENs for jobs committed in applications' transactions."""

from __future__ import annotations

import logging

import pytest

from taskforge.adapters.postgres.job_notices import PostgresJobNotices
from taskforge.application.handlers import HandlerRegistry
from taskforge.application.ports import JobNotices
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.container import Backend, make_container

POOLER = "postgresql://app@pooler:6432/app"
SERVER = "postgresql://app@db:5432/app"


async def notices_for(settings: Settings) -> JobNotices | None:
    container = make_container(settings, Backend.POSTGRES_REDIS, HandlerRegistry())
    try:
        notices: JobNotices | None = await container.get(JobNotices | None)
        return notices
    finally:
        await container.close()


async def test_behind_a_pooler_the_scheduler_listens_on_the_direct_dsn() -> None:
    settings = Settings(
        postgres_dsn=POOLER, postgres_pooler="pgbouncer", postgres_direct_dsn=SERVER
    )
    assert isinstance(await notices_for(settings), PostgresJobNotices)


async def test_behind_a_pooler_without_a_direct_dsn_it_does_not_listen_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(postgres_dsn=POOLER, postgres_pooler="pgbouncer")
    with caplog.at_level(logging.WARNING, logger="taskforge.runtime"):
        assert await notices_for(settings) is None
    assert "POSTGRES_DIRECT_DSN" in caplog.text
    # The never-published sweep runs every tick, not after REPUBLISH_AFTER.
    assert "next sweep (within SCHEDULER_TICK)" in caplog.text
    assert "app@pooler" not in caplog.text  # no DSN in the log


async def test_without_a_pooler_the_scheduler_listens_on_postgres_dsn() -> None:
    assert isinstance(await notices_for(Settings(postgres_dsn=SERVER)), PostgresJobNotices)
