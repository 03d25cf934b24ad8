"""Connections to Postgres: the pool every store role shares, its codecs, and the mapping
of connection-level failures to Unavailable. The migrations use it too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from taskforge.domain.errors import Unavailable

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionError and TimeoutError
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    # A session the server ended while it sat idle in the pool can fail its next query with
    # a protocol-state error instead of a connection error.
    asyncpg.InternalClientError,
    # The server refused the session: no such database, no such role, wrong password.
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
)
"""Failures of the connection rather than of a statement: the store is unavailable."""

ACQUIRE_TIMEOUT = 10.0
"""Seconds to wait for a pooled connection before reporting the store unavailable."""

COMMAND_TIMEOUT = 15.0
"""Seconds a statement may take before the store counts as unavailable: a connection that
went silent (a network partition, a frozen server) would otherwise hang its caller for as
long as the silence lasts. TaskForge's statements take milliseconds."""

PING_TIMEOUT = 2.0

STATEMENT_CACHE_SIZE = 100
"""Statements each connection keeps prepared (asyncpg's default) when no pooler is between."""

RUN_MIGRATE = "run `taskforge migrate`"
"""What every message about a missing or outdated schema tells the operator to do."""

SET_POOLER = (
    "a pooler in transaction mode (PgBouncer) lies between this process and Postgres:"
    " set POSTGRES_POOLER=pgbouncer"
)
"""What a statement prepared on one server session and not found on the next means."""

POOLED_STATEMENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.InvalidSQLStatementNameError,
    asyncpg.DuplicatePreparedStatementError,
)
"""A named statement unknown to (or already on) the server session that ran it: the
connection's statements were spread over several server sessions by a transaction pooler
that TaskForge was not told about."""

ConnectionCheck = Callable[[asyncpg.Connection], Awaitable[None]]
"""Runs on each new connection before the pool hands it out; raising refuses it."""


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    check: ConnectionCheck | None = None,
    transaction_pooler: bool = False,
) -> asyncpg.Pool:
    """A connection pool whose connections read and write `jsonb` as Python objects, each
    passed through `check` first (the schema check, in the service roles).
    `transaction_pooler`: `dsn` leads to a pooler in transaction mode (PgBouncer), where
    consecutive transactions may run on different server sessions, so a statement prepared
    by name on one is unknown on the next: statements then stay unnamed, parsed again on
    every use (asyncpg keeps an unnamed one's parse and execution in one round trip that
    the pooler does not split). TaskForge holds no other session state on these pools.
    Raises Unavailable when Postgres cannot be reached."""

    async def init(conn: asyncpg.Connection) -> None:
        await _init_connection(conn)
        if check is not None:
            await check(conn)

    try:
        return await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=init,
            connection_class=_PooledConnection,
            command_timeout=COMMAND_TIMEOUT,
            statement_cache_size=0 if transaction_pooler else STATEMENT_CACHE_SIZE,
        )
    except CONNECTION_ERRORS as exc:
        raise Unavailable("postgres", str(exc)) from exc


class _PooledConnection(asyncpg.Connection):
    """Skips the session reset (RESET ALL, UNLISTEN, advisory-lock release...) that asyncpg
    sends on every release: TaskForge sets no session state, so it is a wasted round trip
    per statement. An open transaction is still rolled back by the pool."""

    def get_reset_query(self) -> str:
        return ""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=encode_json, decoder=msgspec.json.decode
    )


def encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


@asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[PoolConnectionProxy]:
    """A pooled connection; connection-level failures, while acquiring or while in use,
    become Unavailable."""
    try:
        async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
            yield conn
    except CONNECTION_ERRORS as exc:
        raise Unavailable("postgres", str(exc) or type(exc).__name__) from exc
    except asyncpg.UndefinedTableError as exc:
        # The schema check passed once, then the tables went (a database restored or
        # recreated under a running process): the same answer as a schema never migrated.
        raise Unavailable("postgres", f"{exc.args[0]}: {RUN_MIGRATE}") from exc
    except POOLED_STATEMENT_ERRORS as exc:
        # The driver's own message goes on for a screen about its settings.
        raise Unavailable("postgres", f"{exc.args[0]}: {SET_POOLER}") from exc


class PooledAdapter:
    """Base of the Postgres store roles: each runs its statements on the one shared pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    def _connection(self) -> AbstractAsyncContextManager[PoolConnectionProxy]:
        return connection(self._pool)
