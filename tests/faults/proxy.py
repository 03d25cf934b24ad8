"""A small asyncio TCP proxy that sits between TaskForge processes and Postgres or Redis.

Each `Route` listens on its own 127.0.0.1 port and forwards to one upstream. On command it
adds latency (every chunk, both ways, order kept), stalls all traffic (a partition that
neither closes nor answers), drops every open connection with a reset, refuses new ones, or
springs a trap: the next chunk the server sends that matches a pattern is swallowed and a
callback runs before anything reaches the client (the suite uses it to kill a worker right
after Redis handed it a job id, before the worker could claim the job).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

CHUNK = 65536
CONNECT_TIMEOUT = 3.0
_TRAP_CONTEXT = 64
"""Bytes of earlier server data kept so a pattern split across two chunks still matches."""


@dataclass
class Trap:
    """Swallow the first server->client chunk matching `pattern`; `spring` gets the matches
    and runs before the chunk would have been forwarded."""

    pattern: re.Pattern[bytes]
    spring: Callable[[list[bytes]], None]


@dataclass
class RouteStats:
    connections: int = 0
    dropped: int = 0
    refused: int = 0
    upstream_failures: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class _Link:
    """One proxied connection: a client socket and its upstream socket, pumped both ways."""

    def __init__(
        self,
        route: Route,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.route = route
        self.client_reader, self.client_writer = client
        self.upstream_reader, self.upstream_writer = upstream
        self._tail = b""
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        up: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        down: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._read(self.client_reader, up, upstream=True)),
            asyncio.create_task(self._write(up, self.upstream_writer, upstream=True)),
            asyncio.create_task(self._read(self.upstream_reader, down, upstream=False)),
            asyncio.create_task(self._write(down, self.client_writer, upstream=False)),
        ]
        try:
            # A side that closes is half-closed on the other (EOF forwarded); the link ends
            # when both directions have ended, or at once when it is aborted.
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            self.abort()

    async def _read(
        self,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        *,
        upstream: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(CHUNK):
                if not upstream and self.route.trap is not None and self._springs(data):
                    self.abort()
                    return
                queue.put_nowait((loop.time() + self.route.latency, data))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait(None)

    def _springs(self, data: bytes) -> bool:
        trap = self.route.trap
        assert trap is not None
        window = self._tail + data
        self._tail = window[-_TRAP_CONTEXT:]
        matches = trap.pattern.findall(window)
        if not matches:
            return False
        self.route.trap = None
        trap.spring(matches)
        return True

    async def _write(
        self,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (item := await queue.get()) is not None:
                deliver_at, data = item
                if (wait := deliver_at - loop.time()) > 0:
                    await asyncio.sleep(wait)
                await self.route.flowing.wait()
                writer.write(data)
                await writer.drain()
                if upstream:
                    self.route.stats.bytes_up += len(data)
                else:
                    self.route.stats.bytes_down += len(data)
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()
        except (ConnectionError, OSError):
            pass

    def abort(self) -> None:
        """Close both sockets with a reset (SO_LINGER 0): the peers see a broken connection."""
        for writer in (self.client_writer, self.upstream_writer):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current and not task.done():
                task.cancel()


@dataclass(eq=False)
class Route:
    """One listening port on 127.0.0.1 forwarding to `upstream_host`:`upstream_port`."""

    name: str
    upstream_port: int
    upstream_host: str = "127.0.0.1"
    port: int = 0
    latency: float = 0.0
    refusing: bool = False
    trap: Trap | None = None
    stats: RouteStats = field(default_factory=RouteStats)
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    links: set[_Link] = field(default_factory=set)
    _server: asyncio.Server | None = None

    def __post_init__(self) -> None:
        self.flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.stats.refused += 1
            writer.transport.abort()
            return
        try:
            upstream = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError):
            self.stats.upstream_failures += 1
            writer.transport.abort()
            return
        link = _Link(self, (reader, writer), upstream)
        self.links.add(link)
        self.stats.connections += 1
        try:
            await link.run()
        finally:
            self.links.discard(link)

    def drop(self) -> int:
        """Reset every open connection; returns how many there were."""
        links = list(self.links)
        for link in links:
            link.abort()
        self.stats.dropped += len(links)
        return len(links)

    def stall(self) -> None:
        """Hold all data in both directions (connections stay open) until `resume`."""
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def heal(self) -> None:
        """Back to a plain pass-through: no latency, no stall, no refusal, no trap."""
        self.latency = 0.0
        self.refusing = False
        self.trap = None
        self.resume()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)


class FaultProxy:
    """A set of named routes served by the running event loop."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}

    async def add(self, name: str, upstream_port: int, upstream_host: str | None = None) -> Route:
        if name in self.routes:
            raise ValueError(f"route {name!r} exists")
        route = Route(
            name=name, upstream_port=upstream_port, upstream_host=upstream_host or "127.0.0.1"
        )
        await route.start()
        self.routes[name] = route
        return route

    def __getitem__(self, name: str) -> Route:
        return self.routes[name]

    def matching(self, prefix: str) -> list[Route]:
        return [route for name, route in self.routes.items() if name.startswith(prefix)]

    def heal_all(self) -> None:
        for route in self.routes.values():
            route.heal()

    async def close(self) -> None:
        await asyncio.gather(*(route.close() for route in self.routes.values()))
        self.routes.clear()
