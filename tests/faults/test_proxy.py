"""The fault proxy on its own, in front of a local echo server: it forwards, delays, stalls,
resets and traps as commanded. No services."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import pytest

from tests.faults.proxy import FaultProxy, Route, Trap

pytestmark = pytest.mark.asyncio
DEADLINE = 5.0


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def route() -> AsyncIterator[Route]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    proxy = FaultProxy()
    try:
        yield await proxy.add("echo", server.sockets[0].getsockname()[1])
    finally:
        await proxy.close()
        server.close()
        await server.wait_closed()


async def _connect(route: Route) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", route.port)


def _armed(route: Route) -> bool:
    return route.trap is not None


async def _roundtrip(route: Route, message: bytes) -> tuple[bytes, float]:
    reader, writer = await _connect(route)
    try:
        began = time.monotonic()
        writer.write(message)
        await writer.drain()
        reply = await asyncio.wait_for(reader.readexactly(len(message)), DEADLINE)
        return reply, time.monotonic() - began
    finally:
        writer.close()


async def test_forwards_both_ways(route: Route) -> None:
    reply, _ = await _roundtrip(route, b"hello")
    assert reply == b"hello"
    assert route.stats.connections == 1


async def test_latency_delays_each_direction(route: Route) -> None:
    route.latency = 0.2
    reply, took = await _roundtrip(route, b"slow")
    assert reply == b"slow"
    assert took >= 0.4  # 0.2 s to the server and 0.2 s back


async def test_drop_resets_open_connections(route: Route) -> None:
    reader, writer = await _connect(route)
    writer.write(b"x")
    assert await asyncio.wait_for(reader.readexactly(1), DEADLINE) == b"x"
    assert route.drop() == 1
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), DEADLINE)
    writer.close()


async def test_stall_holds_traffic_until_resumed(route: Route) -> None:
    reader, writer = await _connect(route)
    route.stall()
    writer.write(b"held")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), 0.3)
    route.resume()
    assert await asyncio.wait_for(reader.readexactly(4), DEADLINE) == b"held"
    writer.close()


async def test_a_trap_swallows_the_matching_reply_and_springs_first(route: Route) -> None:
    sprung: list[list[bytes]] = []
    route.trap = Trap(re.compile(rb"id-[0-9]+"), sprung.append)
    reader, writer = await _connect(route)
    writer.write(b"no match")
    assert await asyncio.wait_for(reader.readexactly(8), DEADLINE) == b"no match"
    writer.write(b"take id-42")
    await writer.drain()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(10), DEADLINE)
    assert sprung == [[b"id-42"]]
    assert not _armed(route)  # one shot
    writer.close()


async def test_refusing_closes_new_connections(route: Route) -> None:
    route.refusing = True
    reader, writer = await _connect(route)
    writer.write(b"x")
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), DEADLINE)
    assert route.stats.refused == 1
    writer.close()
