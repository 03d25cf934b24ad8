"""Start-up checks of the process roles."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from dishka.entities.key import DependencyKey
from dishka.exceptions import NoFactoryError
from redis.asyncio.connection import Connection
from redis.exceptions import AuthenticationError, InvalidResponse, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from taskforge.adapters.redis.checks import warn_about_eviction
from taskforge.application.handlers import DeclarationError, HandlerRegistry
from taskforge.application.worker import TooManyAbandonedThreads
from taskforge.entrypoints import runtime
from taskforge.entrypoints.cli import service
from taskforge.entrypoints.config import ConfigError, Settings
from taskforge.entrypoints.container import Backend, make_container
from taskforge.entrypoints.runtime import check_redis

pytestmark = pytest.mark.asyncio


def plain_pool(**options: object) -> SimpleNamespace:
    """The pool of a client without TLS; without a host (as behind Sentinels) the checks
    ask nothing over a connection of their own."""
    return SimpleNamespace(connection_class=Connection, connection_kwargs=options)


class FakeRedis:
    connection_pool = plain_pool()

    def __init__(self, policy: str) -> None:
        self.policy = policy

    async def ping(self) -> bool:
        return True

    async def config_get(self, name: str) -> dict[str, str]:
        return {name: self.policy}


class NoSuchDatabase(FakeRedis):
    """A server asked for a database beyond its `databases` setting (SELECT fails)."""

    connection_pool = plain_pool(db=16)

    async def ping(self) -> bool:
        raise ResponseError("DB index is out of range")


class WrongPassword(FakeRedis):
    async def ping(self) -> bool:
        raise AuthenticationError("invalid username-password pair or user is disabled.")


class NotRedis(FakeRedis):
    """A web server (or a proxy) where Redis should be: its reply is no Redis reply."""

    connection_pool = plain_pool(host="cache", port=8080)

    async def ping(self) -> bool:
        raise InvalidResponse('Protocol error, got "H" as reply type byte')


class Unreachable(FakeRedis):
    async def ping(self) -> bool:
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:1")


class Silent(FakeRedis):
    """A Redis behind a dropped route: nothing answers, nothing fails."""

    async def ping(self) -> bool:
        await asyncio.sleep(3600)
        return True


class FakeContainer:
    """A container with `redis`, or with no Redis at all (None) as dishka says it."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def get(self, kind: type) -> Any:
        if self.redis is None:
            raise NoFactoryError(DependencyKey(kind, ""))
        if isinstance(self.redis, Exception):
            raise self.redis
        return self.redis


async def test_worker_warns_when_redis_may_evict_hints(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="taskforge.redis"):
        await check_redis(FakeContainer(FakeRedis("allkeys-lru")))  # type: ignore[arg-type]

    assert any("allkeys-lru" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("redis", [FakeRedis("noeviction"), None])
async def test_no_warning_with_noeviction_or_without_redis(
    caplog: pytest.LogCaptureFixture, redis: Any
) -> None:
    with caplog.at_level(logging.WARNING, logger="taskforge.redis"):
        await check_redis(FakeContainer(redis))  # type: ignore[arg-type]

    assert not caplog.records


async def test_the_in_memory_backend_has_no_redis_to_check() -> None:
    container = make_container(Settings(), Backend.MEMORY, HandlerRegistry())
    try:
        assert await check_redis(container) is True
    finally:
        await container.close()


async def test_a_redis_client_that_cannot_be_made_is_no_missing_redis() -> None:
    # Every exception read as "no Redis here": a bad client went unchecked, logged at debug.
    with pytest.raises(RuntimeError, match="cannot make the client"):
        await check_redis(FakeContainer(RuntimeError("cannot make the client")))  # type: ignore[arg-type]


async def test_a_database_the_redis_server_does_not_have_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"REDIS_DB='16': the Redis server refuses it"):
        await check_redis(FakeContainer(NoSuchDatabase("noeviction")))  # type: ignore[arg-type]


async def test_a_password_the_redis_server_refuses_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as refused:
        await check_redis(FakeContainer(WrongPassword("noeviction")))  # type: ignore[arg-type]

    assert str(refused.value) == (
        "invalid configuration: REDIS_PASSWORD: the Redis server refuses it"
        " (invalid username-password pair or user is disabled.)"
    )


async def test_a_server_that_does_not_speak_redis_is_a_configuration_error() -> None:
    # Else the worker retries its fetch forever and never falls back to the store.
    with pytest.raises(ConfigError) as refused:
        async with asyncio.timeout(5):
            await check_redis(FakeContainer(NotRedis("noeviction")), asyncio.Event())  # type: ignore[arg-type]

    assert str(refused.value) == (
        "invalid configuration: REDIS_ADDR='cache:8080': the server there does not speak the"
        ' Redis protocol (Protocol error, got "H" as reply type byte)'
    )


async def test_a_redis_that_does_not_answer_at_start_up_is_left_to_the_roles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "START_CHECK_TIMEOUT", 0.05)
    await check_redis(FakeContainer(Unreachable("noeviction")))  # type: ignore[arg-type]
    async with asyncio.timeout(5):  # the API must get to serve /healthz
        await check_redis(FakeContainer(Silent("noeviction")))  # type: ignore[arg-type]


async def test_the_checks_say_whether_they_are_done(monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker or scheduler checks again beside its work only when Redis did not answer.
    monkeypatch.setattr(runtime, "START_CHECK_TIMEOUT", 0.05)

    assert await check_redis(FakeContainer(FakeRedis("noeviction"))) is True  # type: ignore[arg-type]
    assert await check_redis(FakeContainer(None)) is True  # type: ignore[arg-type]
    assert await check_redis(FakeContainer(Unreachable("noeviction"))) is False  # type: ignore[arg-type]
    assert await check_redis(FakeContainer(Silent("noeviction"))) is False  # type: ignore[arg-type]


class LateNoSuchDatabase(NoSuchDatabase):
    """A server whose first answer comes too late (a start-up that kept the process busy,
    a Redis that was away), then refuses the database."""

    def __init__(self, policy: str) -> None:
        super().__init__(policy)
        self.pings = 0

    async def ping(self) -> bool:
        self.pings += 1
        if self.pings == 1:
            await asyncio.sleep(3600)
        return await super().ping()


async def test_beside_the_roles_a_late_answer_still_refuses_the_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "START_CHECK_TIMEOUT", 0.05)
    monkeypatch.setattr(runtime, "REDIS_RECHECK_INTERVAL", 0.01)
    redis = LateNoSuchDatabase("noeviction")

    with pytest.raises(ConfigError, match=r"REDIS_DB='16': the Redis server refuses it"):
        async with asyncio.timeout(5):
            await check_redis(FakeContainer(redis), asyncio.Event())  # type: ignore[arg-type]

    assert redis.pings == 2


async def test_beside_the_roles_the_checks_end_with_the_stop_signal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "START_CHECK_TIMEOUT", 0.05)
    monkeypatch.setattr(runtime, "REDIS_RECHECK_INTERVAL", 0.01)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)

    async with asyncio.timeout(5):
        await check_redis(FakeContainer(Silent("noeviction")), stop)  # type: ignore[arg-type]


async def test_a_server_that_refuses_config_is_not_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class ManagedRedis:
        async def config_get(self, name: str) -> dict[str, str]:
            raise PermissionError("unknown command 'CONFIG'")

    with caplog.at_level(logging.WARNING, logger="taskforge.redis"):
        await warn_about_eviction(ManagedRedis())  # type: ignore[arg-type]

    assert not caplog.records


@pytest.mark.parametrize(
    ("second", "exit_code"),
    [
        (signal.SIGTERM, 143),  # 128 + 15: as if SIGTERM had ended the process
        (signal.SIGINT, 130),  # 128 + 2: a second Ctrl-C
    ],
)
async def test_a_second_signal_exits_at_once_with_that_signals_code(
    monkeypatch: pytest.MonkeyPatch, second: signal.Signals, exit_code: int
) -> None:
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    signals = runtime.StopSignals()

    signals._on_signal(signal.SIGTERM)
    assert signals.stop.is_set()
    assert exits == []
    signals._on_signal(second)

    assert exits == [exit_code]


async def test_a_worker_stopped_by_abandoned_threads_exits_for_a_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def worker_gave_up(**options: object) -> None:
        raise TooManyAbandonedThreads("3 abandoned handler threads are still running (limit 2)")

    monkeypatch.setattr(service, "app", worker_gave_up)

    with pytest.raises(SystemExit) as exited:
        service.main()

    assert exited.value.code == service.RESTART_EXIT_CODE != 0


BESIDE_THE_PACKAGES = str(Path(__file__).resolve().parents[2] / "examples" / "jobs.py")


async def test_a_refused_declaration_names_the_users_file_even_beside_taskforges_folders() -> None:
    # In a source checkout TaskForge's packages are folders of the repository, beside which
    # a project's own modules (examples/) may live: only those packages are TaskForge's.
    declaration = compile("\n\nraise DeclarationError('twice')\n", BESIDE_THE_PACKAGES, "exec")
    try:
        exec(declaration, {"DeclarationError": DeclarationError})
    except DeclarationError as exc:
        where = runtime._declared_at(exc)

    assert where.endswith(f"{os.sep}examples{os.sep}jobs.py:3") or where == "examples/jobs.py:3"
