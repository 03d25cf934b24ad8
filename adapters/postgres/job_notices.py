"""JobNotices on Postgres: LISTEN for the NOTIFY an application's transactional enqueue
sends, on a session connection of its own (POSTGRES_DIRECT_DSN: a transaction pooler does
not keep a LISTEN)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from taskforge.adapters.postgres.connection import CONNECTION_ERRORS, PING_TIMEOUT
from taskforge.domain.errors import Unavailable

JOBS_CHANNEL = "taskforge_jobs"
"""Notified by the INSERT of due jobs that nobody publishes a hint for at commit (the
trigger of migration 0016), delivered at the commit (never after a rollback). The payload
is constant, so Postgres folds a transaction's notices into one: one per transaction
however many jobs it stores, and notifying serialises commits."""

CONNECT_TIMEOUT = 10.0

IDLE_CHECK = 30.0
"""Seconds without a notice after which the connection is pinged: a silent network
partition would otherwise leave the listener deaf with no error."""


_PING_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)


class PostgresJobNotices:
    """One listening connection, opened by `listen` and again after it was lost."""

    def __init__(self, dsn: str, idle_check: float = IDLE_CHECK) -> None:
        self._dsn = dsn
        self._idle_check = idle_check
        self._conn: asyncpg.Connection | None = None
        self._arrived = asyncio.Event()
        self._lost = False

    async def listen(self) -> None:
        await self.close()
        self._lost = False
        try:
            conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
        except CONNECTION_ERRORS as exc:
            raise Unavailable("postgres", str(exc) or type(exc).__name__) from exc
        conn.add_termination_listener(self._on_lost)
        try:
            await conn.add_listener(JOBS_CHANNEL, self._on_notice)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        # Jobs committed while nobody listened have no notice coming: the first wait
        # returns at once so they are published now.
        self._arrived.set()

    async def wait(self) -> None:
        while True:
            conn = self._listening()
            try:
                await asyncio.wait_for(self._arrived.wait(), self._idle_check)
            except TimeoutError:
                await self._ping(conn)
                continue
            self._arrived.clear()
            self._listening()  # a loss also wakes the wait: report it
            return

    def _listening(self) -> asyncpg.Connection:
        conn = self._conn
        if conn is None or self._lost or conn.is_closed():
            raise Unavailable("postgres", "the connection listening for new jobs was lost")
        return conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()  # nothing to finish on a listening connection

    async def _ping(self, conn: asyncpg.Connection) -> None:
        try:
            await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT)
        except _PING_ERRORS as exc:
            self._lost = True
            raise Unavailable("postgres", str(exc) or type(exc).__name__) from exc

    def _on_notice(self, *_: Any) -> None:
        self._arrived.set()

    def _on_lost(self, *_: Any) -> None:
        self._lost = True
        self._arrived.set()
