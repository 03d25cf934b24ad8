"""Creating clients, and how an unreachable Redis surfaces: as `Unavailable`, never as a
driver error."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest
import redis.exceptions
from redis._parsers.hiredis import _AsyncHiredisParser
from redis.asyncio import Redis
from redis.connection import HiredisRespSerializer

from taskforge.adapters.redis.client import (
    CONNECT_TIMEOUT,
    RETRIES,
    SOCKET_TIMEOUT,
    create_redis,
    is_connection_failure,
    translate_connection_errors,
)
from taskforge.adapters.redis.keys import RedisKeys
from taskforge.adapters.redis.metrics import RedisMetricsStore
from taskforge.adapters.redis.rate_limiter import RedisRateLimiter
from taskforge.adapters.redis.ready_queue import RedisReadyQueue
from taskforge.domain.errors import Unavailable
from taskforge.domain.job import ReadyHint
from tests.servers import PrivateRedis, ServicesUnavailable
from tests.support import free_port, redis_from_url

Operation = Callable[[RedisReadyQueue, RedisRateLimiter], Awaitable[object]]
HINT = ReadyHint("jobs:ready", uuid.uuid4())


@pytest.fixture
async def unreachable_client() -> AsyncIterator[Redis]:
    client = create_redis(host="127.0.0.1", port=free_port(), db=0, password=None)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda queue, _: queue.ping(), id="ping"),
        pytest.param(lambda queue, _: queue.push([HINT]), id="push"),
        pytest.param(lambda queue, _: queue.push_front([HINT]), id="push_front"),
        pytest.param(lambda queue, _: queue.pop(["jobs:ready"], 5, 1.0), id="pop"),
        pytest.param(lambda queue, _: queue.pop(["jobs:ready"], 5, 0), id="pop_no_wait"),
        pytest.param(lambda queue, _: queue.depth(["jobs:ready"]), id="depth"),
        pytest.param(lambda queue, _: queue.check_intact(), id="check_intact"),
        pytest.param(lambda queue, _: queue.forget_intact(), id="forget_intact"),
        pytest.param(lambda _, limiter: limiter.acquire("jobs:ready", 5.0, 1), id="acquire"),
    ],
)
async def test_an_unreachable_redis_raises_unavailable(
    unreachable_client: Redis, operation: Operation
) -> None:
    ready_queue = RedisReadyQueue(unreachable_client)
    limiter = RedisRateLimiter(unreachable_client)

    with pytest.raises(Unavailable) as raised:
        await operation(ready_queue, limiter)

    assert raised.value.service == "redis"


def test_clients_bound_connecting_and_waiting_for_replies() -> None:
    for client in (
        create_redis(host="localhost", port=6379, db=0, password=None),
        redis_from_url("redis://localhost:6379/0"),
    ):
        options = client.connection_pool.connection_kwargs
        assert options["socket_connect_timeout"] == CONNECT_TIMEOUT
        assert options["socket_timeout"] == SOCKET_TIMEOUT
        assert options["health_check_interval"] > 0


def test_with_the_fast_extra_replies_are_parsed_and_commands_packed_by_hiredis() -> None:
    # The lock installs the `fast` extra; a client built another way (an explicit parser
    # class, say) would lose the compiled parser and packer the worker's drain relies on.
    pool = create_redis(host="localhost", port=6379, db=0, password=None).connection_pool
    connection = pool.connection_class(**pool.connection_kwargs)

    assert isinstance(connection._parser, _AsyncHiredisParser)
    assert isinstance(connection._command_packer, HiredisRespSerializer)


def test_options_in_the_url_override_the_defaults() -> None:
    client = redis_from_url("redis://localhost:6379/3?socket_timeout=30")

    assert client.connection_pool.connection_kwargs["socket_timeout"] == 30.0
    assert client.connection_pool.connection_kwargs["db"] == 3


@pytest.mark.integration
async def test_create_redis_treats_an_empty_password_as_none(redis_url: str) -> None:
    parts = urlsplit(redis_url)
    if parts.password:
        pytest.skip("the test server needs a password")
    db = int(parts.path.strip("/") or 0)
    client = create_redis(
        host=parts.hostname or "localhost", port=parts.port or 6379, db=db, password=""
    )
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


RESET_UNDER_UVLOOP = RuntimeError(
    "unable to perform operation on <TCPTransport closed=True reading=False 0x55c4>; "
    "the handler is closed"
)


@pytest.mark.parametrize(
    ("error", "reconnect"),
    [
        (redis.exceptions.ConnectionError("Connection reset by peer"), True),
        (redis.exceptions.TimeoutError("Timeout reading from socket"), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (RESET_UNDER_UVLOOP, True),
        (RuntimeError("dictionary changed size during iteration"), False),
        (redis.exceptions.AuthenticationError("invalid username-password pair"), False),
        (redis.exceptions.ResponseError("WRONGTYPE"), False),
    ],
)
def test_only_connection_failures_count_as_such(error: Exception, reconnect: bool) -> None:
    assert is_connection_failure(error) is reconnect


def test_a_runtime_error_that_is_not_a_reset_connection_passes_through() -> None:
    with pytest.raises(RuntimeError, match="dictionary changed"), translate_connection_errors():
        raise RuntimeError("dictionary changed size during iteration")
    with pytest.raises(Unavailable), translate_connection_errors():
        raise RESET_UNDER_UVLOOP


@pytest.mark.parametrize(
    ("error", "calls"),
    [
        (redis.exceptions.ConnectionError("reset"), RETRIES + 1),
        (RESET_UNDER_UVLOOP, RETRIES + 1),
        (redis.exceptions.AuthenticationError("invalid username-password pair"), 1),
        (RuntimeError("a bug"), 1),
    ],
)
async def test_the_client_resends_only_after_a_connection_failure(
    error: Exception, calls: int
) -> None:
    client = create_redis(host="127.0.0.1", port=free_port(), db=0, password=None)
    attempts = 0

    async def command() -> None:
        nonlocal attempts
        attempts += 1
        raise error

    async def on_failure(_: Exception) -> None:
        return None

    try:
        retry = client.connection_pool.connection_kwargs["retry"]
        with pytest.raises(type(error)):
            await retry.call_with_retry(command, on_failure)
        assert attempts == calls
    finally:
        await client.aclose()


async def test_no_master_from_sentinels_names_each_sentinel_by_its_address(
    redis_url: str,
) -> None:
    # A plain Redis where a Sentinel should be (and an address where nothing listens):
    # the error names each one briefly, not by the repr of its client's settings.
    server = urlsplit(redis_url)
    nothing = free_port()
    client = create_redis(
        host="unused",
        port=0,
        db=0,
        password=None,
        sentinels=[(server.hostname or "127.0.0.1", server.port or 6379), ("127.0.0.1", nothing)],
        sentinel_master="taskforge",
    )
    try:
        with pytest.raises(Unavailable) as raised, translate_connection_errors():
            await client.ping()
    finally:
        await client.aclose()

    cause = raised.value.cause
    assert cause.startswith("No master found for 'taskforge' : Sentinel ")
    assert f"Sentinel 127.0.0.1:{nothing} - " in cause
    assert "ConnectionPool" not in cause
    assert len(cause) < 400, cause


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ResponseError("MISCONF Redis is configured to save RDB snapshots, ..."),
        redis.exceptions.ResponseError("NOREPLICAS Not enough good replicas to write."),
        redis.exceptions.ResponseError("BUSY Redis is busy running a script. ..."),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        redis.exceptions.MasterDownError("Link with MASTER is down"),
        redis.exceptions.ResponseError(
            "Command # 1 (LPUSH q h) of pipeline caused error: MISCONF Redis is configured",
            status_code="MISCONF",
        ),
    ],
    ids=["MISCONF", "NOREPLICAS", "BUSY", "READONLY", "OOM", "MASTERDOWN", "in a pipeline"],
)
def test_a_server_that_cannot_serve_now_is_unavailable_as_one_that_is_away(
    error: Exception,
) -> None:
    # Every command would get the same reply: the roles wait it out (workers claim from
    # the store meanwhile) instead of failing each tick or pop on it.
    with pytest.raises(Unavailable), translate_connection_errors():
        raise error


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
        redis.exceptions.ResponseError("ERR unknown command 'FOO'"),
        redis.exceptions.NoScriptError("No matching script."),
    ],
    ids=["WRONGTYPE", "ERR", "NOSCRIPT"],
)
def test_any_other_error_reply_passes_through(error: Exception) -> None:
    with pytest.raises(type(error)), translate_connection_errors():
        raise error


async def test_a_demoted_master_refuses_pushes_and_pings_yet_its_metrics_read() -> None:
    # A replica (a master demoted behind a name that still points at it) refuses writes.
    try:
        server = PrivateRedis.create()
    except ServicesUnavailable as exc:
        pytest.fail(f"cannot start a private redis-server: {exc}")
    client = create_redis(host="127.0.0.1", port=server.port, db=0, password=None)
    prefix = f"t-{uuid.uuid4().hex[:6]}:"
    try:
        # A worker that stopped without leaving: its load expired, its name is still listed.
        await client.sadd(RedisKeys(prefix).metric_workers, "gone-worker")
        await client.replicaof("127.0.0.1", free_port())
        ready_queue = RedisReadyQueue(client, prefix)
        with pytest.raises(Unavailable, match="ReadOnlyError"):
            await ready_queue.push([HINT])
        # A worker claiming from the store asks with a write whether to go back to hints: a
        # replica answers PING, but would refuse every pop.
        assert await client.ping()
        with pytest.raises(Unavailable, match="ReadOnlyError"):
            await ready_queue.ping()
        # The metrics still read: forgetting the gone worker is tidying, which can wait.
        assert (await RedisMetricsStore(client, prefix).read()).workers == []
    finally:
        await client.aclose()
        server.remove()
