"""The start-up check of the Redis server (`refusal`) against real servers: a TLS setting
that does not match the server's port is refused for good, naming REDIS_TLS; a server that
is away or frozen is not, with or without TLS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from taskforge.adapters.redis.checks import START_CHECK_TIMEOUT, Refusal, refusal
from taskforge.adapters.redis.client import create_redis
from tests.servers import PrivateRedis, TlsFiles
from tests.support import free_port

pytestmark = pytest.mark.integration


async def _refusal_of(client: Redis) -> Refusal | None:
    try:
        async with asyncio.timeout(START_CHECK_TIMEOUT):  # as the roles ask
            return await refusal(client)
    finally:
        await client.aclose()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts connections and reads, but never answers: a frozen Redis."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(4096):
                pass
        finally:
            writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_redis_tls_set_for_a_plain_redis_is_refused(redis_url: str) -> None:
    parts = urlsplit(redis_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    client = create_redis(host=host, port=port, db=0, password=parts.password, tls=True)
    # A server with a password refuses the plain PING (NOAUTH): an answer all the same.
    reply = "-NOAUTH Authentication required." if parts.password else "+PONG"

    refused = await _refusal_of(client)

    assert refused == Refusal(
        "REDIS_TLS",
        f"the Redis server at {host}:{port} answers without TLS ({reply}): unset REDIS_TLS"
        " or point REDIS_ADDR at the server's TLS port",
    )


async def test_redis_tls_unset_for_a_tls_only_redis_is_refused(tls_redis: PrivateRedis) -> None:
    client = create_redis(host="127.0.0.1", port=tls_redis.port, db=0, password=None)

    refused = await _refusal_of(client)

    assert refused == Refusal(
        "REDIS_TLS",
        f"the Redis server at 127.0.0.1:{tls_redis.port} answers only over TLS (+PONG):"
        " set REDIS_TLS=true (and REDIS_TLS_CA_FILE if a private CA signs its certificate)",
    )


async def test_a_tls_redis_reached_with_redis_tls_is_not_refused(
    tls_files: TlsFiles, tls_redis: PrivateRedis
) -> None:
    client = create_redis(
        host="127.0.0.1",
        port=tls_redis.port,
        db=0,
        password=None,
        tls=True,
        tls_ca_file=str(tls_files.ca),
    )

    assert await _refusal_of(client) is None


@pytest.mark.parametrize("tls", [False, True])
async def test_a_redis_that_is_away_is_not_refused(tls: bool) -> None:
    client = create_redis(host="127.0.0.1", port=free_port(), db=0, password=None, tls=tls)

    with pytest.raises(RedisConnectionError):  # the driver's error: nothing is known yet
        await _refusal_of(client)


@pytest.mark.parametrize("tls", [False, True])
async def test_a_frozen_redis_is_not_refused_and_does_not_hold_up_the_check(
    silent_port: int, tls: bool
) -> None:
    client = create_redis(host="127.0.0.1", port=silent_port, db=0, password=None, tls=tls)
    started = time.monotonic()

    with pytest.raises(TimeoutError):
        await _refusal_of(client)

    assert time.monotonic() - started < START_CHECK_TIMEOUT + 0.5
