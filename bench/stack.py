"""The processes and data one bench run owns: a scratch database, a Redis key prefix,
an API process and worker processes, all removed by `Stack.close`, also when SIGINT or
SIGTERM interrupts the run (`run_until_interrupted`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from taskforge.adapters.postgres.connection import CONNECTION_ERRORS, create_pool
from taskforge.adapters.postgres.migrations import apply_migrations
from taskforge.adapters.redis.checks import refusal
from taskforge.adapters.redis.client import translate_connection_errors
from taskforge.adapters.redis.keys import DEFAULT_PREFIX
from taskforge.adapters.redis.ready_queue import RedisReadyQueue
from taskforge.domain.errors import Unavailable
from taskforge.entrypoints.backends import redis_client
from taskforge.entrypoints.config import Settings, masked_dsn, without_password
from taskforge.entrypoints.runtime import refusal_error

DEADLINE = 600.0

NOT_INHERITED = frozenset(
    {
        # Processes run from compiled bytecode, as an installed package does (pip compiles
        # at install; a source tree writes it on first import): a process compiling every
        # module it imports would measure the compiler, not its start-up.
        "PYTHONDONTWRITEBYTECODE",
        # One address for every worker and scheduler the bench runs at once: all but the
        # first would stop at start (the port taken), and a drain "with 2 workers" would
        # run with one.
        "METRICS_ADDR",
        # The bench's clients send no token: its API, on a port of its own on this
        # machine, would answer them 401.
        "API_TOKEN",
        "API_TOKEN_FILE",
    }
)
"""Variables of the environment the bench's processes do not get."""


def free_port() -> int:
    """A local TCP port nothing listened on a moment ago: for a server to start, or as a
    port that refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


def peak_rss_mib(pid: int) -> float:
    """The highest peak resident set (VmHWM) of the process and its children, in MiB: with
    API_WORKERS > 1 the API's requests are served by the children of a supervisor. 0 where
    /proc is not available."""
    return max(_own_peak_rss_mib(each) for each in (pid, *_children(pid)))


def rss_mib(pid: int) -> float:
    """The resident set now (VmRSS) of the process, or of the largest of its children (the
    API's workers), in MiB; 0 where /proc is not available."""
    return max(_status_mib(each, "VmRSS:") for each in (pid, *_children(pid)))


def _own_peak_rss_mib(pid: int) -> float:
    return _status_mib(pid, "VmHWM:")


def _status_mib(pid: int, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def serving_processes(pid: int) -> int:
    """How many processes serve the API started as `pid`: the worker processes it spawned
    when it is a supervisor (API_WORKERS > 1; not multiprocessing's resource tracker),
    else itself."""
    spawned = 0
    for child in _children(pid):
        with contextlib.suppress(OSError):
            spawned += b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    return spawned or 1


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children += [int(child) for child in task.read_text().split()]
    return children


class Stack:
    """The processes and data one bench run owns; `close` removes all of it."""

    def __init__(self, settings: Settings) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        # Creating the scratch database and migrating it need a session of their own; the
        # processes use POSTGRES_DSN, which may lead through a pooler (POSTGRES_POOLER).
        self.admin_dsn = settings.require_direct_postgres("bench")
        database = f"taskforge_bench_{self.run_id}"
        self.direct_dsn = _with_database(self.admin_dsn, database)
        self.dsn = _with_database(settings.require_postgres("bench"), database)
        self.settings = settings
        self.prefix = f"{DEFAULT_PREFIX}bench-{self.run_id}:"
        self.processes: list[subprocess.Popen[bytes]] = []
        self._created = False
        self._reached_redis = False
        self.api_url = ""
        inherited = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        self.env = {
            **inherited,
            "POSTGRES_DSN": self.dsn,
            "POSTGRES_DIRECT_DSN": self.direct_dsn,
            "TASKFORGE_REDIS_PREFIX": self.prefix,
            "TASKFORGE_DEMO_HANDLERS": "true",
            "LOG_LEVEL": "warn",
            "QUEUE_NAME": self.queue("default"),
            "WORKER_CONCURRENCY": "10",
        }

    def queue(self, purpose: str) -> str:
        return f"bench-{self.run_id}-{purpose}"

    async def open(self) -> None:
        """Create and migrate the scratch database and reach Redis. A server that cannot be
        used raises Unavailable (naming it, with its driver's reason), and a setting Redis
        refuses (REDIS_DB, REDIS_PASSWORD, REDIS_TLS) ConfigError, before any scenario runs:
        a bench without Redis would time the workers' claims without hints. Redis is reached
        as the roles reach it: by its address or its Sentinels, over TLS with REDIS_TLS."""
        conn = await _connect(self.admin_dsn)
        # From here it may exist: a signal that cancels the CREATE once Postgres has run it
        # must still see it dropped.
        self._created = True
        try:
            await conn.execute(f'CREATE DATABASE "taskforge_bench_{self.run_id}"')
        except asyncpg.PostgresError as exc:  # a role that may not create databases
            self._created = False
            raise Unavailable("postgres", f"cannot create a scratch database: {exc}") from exc
        finally:
            await conn.close()
        await apply_migrations(self.direct_dsn)
        self.pool = await create_pool(self.direct_dsn, min_size=1, max_size=4)
        # As the roles reach it (address or Sentinels, TLS), and refused as they say.
        self.redis = redis_client(self.settings)
        self.ready_queue = RedisReadyQueue(self.redis, self.prefix)
        with translate_connection_errors():
            refused = await refusal(self.redis)
        if refused is not None:
            raise refusal_error(refused, self.redis)
        self._reached_redis = True

    def spawn(self, role: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "taskforge.entrypoints.cli", role, *args],
            env={**self.env, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(process)
        return process

    async def start_api(self, api_workers: int | None = None) -> subprocess.Popen[bytes]:
        """An API on a free port, which becomes `api_url`: with `api_workers` processes, each
        of them spawned before it returns; None: as the environment configures it."""
        port = free_port()
        env = {} if api_workers is None else {"API_WORKERS": str(api_workers)}
        process = self.spawn("api", HTTP_ADDR=f"127.0.0.1:{port}", **env)
        self.api_url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:
            await until(lambda: healthy(client, self.api_url), "the API to start")
        if api_workers is not None:

            async def all_serving() -> bool:
                return serving_processes(process.pid) >= api_workers

            await until(all_serving, f"{api_workers} API processes to start")
        return process

    async def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()

    async def count(self, queue: str, state: str) -> int:
        value = await self.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE queue = $1 AND state = $2", queue, state
        )
        return int(value)

    async def until_succeeded(
        self, queue: str, at_least: int, what: str, poll: float = 0.05
    ) -> None:
        """Wait (up to DEADLINE) until `at_least` jobs of `queue` have SUCCEEDED."""

        async def enough() -> bool:
            return await self.count(queue, "SUCCEEDED") >= at_least

        await until(enough, what, poll)

    async def close(self) -> None:
        """Stop the processes, drop the scratch database and the Redis keys. A cancellation
        (SIGINT or SIGTERM, see `run_until_interrupted`) arriving meanwhile waits for the
        removal to finish: an interrupted bench leaves nothing behind."""
        removal = asyncio.ensure_future(self._remove_everything())
        try:
            await asyncio.shield(removal)
        except asyncio.CancelledError:
            await removal
            raise

    async def _remove_everything(self) -> None:
        for process in self.processes:
            # SIGTERM, not SIGKILL: an API started with API_WORKERS > 1 is a supervisor,
            # and only a supervisor that stops by itself takes its worker processes with it.
            await self.stop(process)
        with contextlib.suppress(AttributeError):
            await self.pool.close()
        with contextlib.suppress(AttributeError):
            try:
                if self._reached_redis:
                    await self._remove_redis_keys()
            except Unavailable as exc:  # the database goes all the same
                print(f"bench: could not remove its Redis keys ({self.prefix}*): {exc.cause}")
            await self.redis.aclose()
        if self._created:
            database = f"taskforge_bench_{self.run_id}"
            try:
                conn = await _connect(self.admin_dsn)
            except Unavailable as exc:  # what failed the run is the error to raise
                print(f"bench: could not drop its scratch database {database}: {exc.cause}")
                return
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await conn.close()

    async def _remove_redis_keys(self) -> None:
        with translate_connection_errors():
            keys = [key async for key in self.redis.scan_iter(match=f"{self.prefix}*")]
            keys += [key async for key in self.redis.scan_iter(match=f"bench-{self.run_id}-*")]
            if keys:
                await self.redis.delete(*keys)


def cannot_use(exc: Unavailable, settings: Settings) -> str:
    """What a bench could not use, in one line: the server (its DSN without the password,
    or Redis's address) and the driver's reason."""
    if exc.service == "redis":
        return f"cannot use Redis at {settings.redis_addr}: {exc.cause}"
    dsn = settings.require_direct_postgres("bench")
    return f"cannot use Postgres at {masked_dsn(dsn)}: {without_password(exc.cause, dsn)}"


CONNECT_TIMEOUT = 10.0
"""Seconds the bench waits for a Postgres session (asyncpg's default is a minute)."""


async def _connect(dsn: str) -> asyncpg.Connection:
    """A session on `dsn`; a server that cannot be reached raises Unavailable."""
    try:
        return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
    except CONNECTION_ERRORS as exc:
        raise Unavailable("postgres", str(exc)) from exc


async def healthy(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(f"{url}/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def until(check: Callable[[], Awaitable[bool]], what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        await asyncio.sleep(poll)
