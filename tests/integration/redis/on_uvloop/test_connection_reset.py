"""A pooled connection that the network reset is replaced, under uvloop too.

uvloop reports a write on a reset connection as RuntimeError rather than a connection
error; the client must retry it on a fresh connection like any other dropped connection.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import uvloop

from taskforge.adapters.redis.ready_queue import RedisReadyQueue
from taskforge.domain.job import ReadyHint
from tests.support import redis_from_url

pytestmark = pytest.mark.integration


class Forwarder:
    """A TCP relay to Redis whose open connections can be reset on command."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, upstream_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, RuntimeError):
                pass

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def reset_all(self) -> None:
        """Send RST on every open connection, as a dropped NAT entry or a failover would."""
        for writer in self._writers:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.reset_all()
        self._server.close()


@pytest.fixture
async def forwarder(redis_url: str) -> AsyncIterator[Forwarder]:
    target = urlsplit(redis_url)
    relay = Forwarder(target.hostname or "127.0.0.1", target.port or 6379)
    await relay.start()
    yield relay
    await relay.close()


async def test_push_after_the_connection_was_reset_succeeds(
    forwarder: Forwarder, redis_url: str, redis_prefix: str, queue_name: str, redis_cleanup: None
) -> None:
    db = (urlsplit(redis_url).path or "/0").lstrip("/") or "0"
    client = redis_from_url(f"redis://127.0.0.1:{forwarder.port}/{db}")
    queue = RedisReadyQueue(client, redis_prefix)
    try:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        await client.ping()  # a pooled connection now exists
        forwarder.reset_all()
        await asyncio.sleep(0.05)  # let the reset reach the client's transport

        await queue.push([ReadyHint(queue_name, uuid.uuid4())])

        assert (await queue.depth([queue_name]))[queue_name] == 1
    finally:
        await client.aclose()
