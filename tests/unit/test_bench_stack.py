"""The bench's stack removes what it made, however its start-up ended."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ResponseError

from taskforge.bench import stack as stack_module
from taskforge.bench.stack import Stack
from taskforge.domain.errors import Unavailable
from taskforge.entrypoints.backends import redis_client
from taskforge.entrypoints.config import ConfigError, Settings

pytestmark = pytest.mark.asyncio


class Session:
    """A Postgres session that runs every statement, and is cancelled (a SIGINT reaching
    the bench) right after running the CREATE DATABASE."""

    def __init__(self, statements: list[str]) -> None:
        self.statements = statements

    async def execute(self, statement: str) -> None:
        self.statements.append(statement)
        if statement.startswith("CREATE DATABASE"):
            raise asyncio.CancelledError

    async def close(self) -> None:
        pass


async def cancelled_start(monkeypatch: pytest.MonkeyPatch, connect: Any) -> Stack:
    """A stack whose start was cancelled right after Postgres ran its CREATE DATABASE, its
    sessions from `connect`."""
    monkeypatch.setattr(stack_module, "_connect", connect)
    stack = Stack(Settings.from_env({"POSTGRES_DSN": "postgresql://u@127.0.0.1:1/db"}))
    with pytest.raises(asyncio.CancelledError):
        await stack.open()
    return stack


async def test_a_start_cancelled_once_its_database_was_created_still_drops_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    statements: list[str] = []

    async def connect(dsn: str) -> Any:
        return Session(statements)

    stack = await cancelled_start(monkeypatch, connect)
    await stack.close()

    database = f"taskforge_bench_{stack.run_id}"
    assert statements == [
        f'CREATE DATABASE "{database}"',
        f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)',
    ]


async def test_a_stack_whose_server_went_away_says_what_it_left_and_raises_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sessions = iter([Session([])])

    async def connect(dsn: str) -> Any:
        for session in sessions:
            return session
        raise Unavailable("postgres", "connection refused")

    stack = await cancelled_start(monkeypatch, connect)
    await stack.close()

    database = f"taskforge_bench_{stack.run_id}"
    assert f"could not drop its scratch database {database}: connection refused" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize("variable", ["METRICS_ADDR", "API_TOKEN", "API_TOKEN_FILE"])
async def test_the_processes_do_not_get_settings_that_would_stop_them_or_refuse_the_bench(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # METRICS_ADDR: the second worker of a drain would find its port taken and stop; an
    # API_TOKEN: the API would answer the bench's own requests 401.
    monkeypatch.setenv(variable, "127.0.0.1:9464")

    stack = Stack(Settings.from_env({"POSTGRES_DSN": "postgresql://u@127.0.0.1:1/db"}))

    assert variable not in stack.env


def redis_without_the_database(settings: Settings) -> Any:
    """A client of a Redis server whose `databases` setting is below REDIS_DB."""
    client: Any = redis_client(settings)

    async def ping() -> None:
        raise ResponseError("DB index is out of range")

    client.ping = ping
    return client


async def test_a_redis_database_the_server_lacks_is_a_bad_setting_and_the_database_goes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A one-line configuration error, as every role says it; not the driver's traceback.
    statements: list[str] = []

    class Accepting(Session):
        async def execute(self, statement: str) -> None:
            self.statements.append(statement)

    async def connect(dsn: str) -> Any:
        return Accepting(statements)

    async def nothing(*args: Any, **kwargs: Any) -> Any:
        return None

    class Pool:
        async def close(self) -> None:
            pass

    async def pool(*args: Any, **kwargs: Any) -> Pool:
        return Pool()

    monkeypatch.setattr(stack_module, "_connect", connect)
    monkeypatch.setattr(stack_module, "apply_migrations", nothing)
    monkeypatch.setattr(stack_module, "create_pool", pool)
    monkeypatch.setattr(stack_module, "redis_client", redis_without_the_database)
    settings = {"POSTGRES_DSN": "postgresql://u@127.0.0.1:1/db", "REDIS_DB": "99"}
    stack = Stack(Settings.from_env(settings))

    with pytest.raises(ConfigError, match=r"REDIS_DB='99': the Redis server refuses it"):
        await stack.open()
    await stack.close()

    assert (
        statements[-1] == f'DROP DATABASE IF EXISTS "taskforge_bench_{stack.run_id}" WITH (FORCE)'
    )
