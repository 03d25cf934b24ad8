"""Creating the Redis client (one server, or the master that Redis Sentinel names; plain or
TLS), and turning its connection failures into `Unavailable`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff

from taskforge.domain.errors import Unavailable

T = TypeVar("T")

CONNECT_TIMEOUT = 2.0
"""Seconds to open a connection before the server counts as unreachable."""

SOCKET_TIMEOUT = 5.0
"""Seconds to wait for any reply. A blocking pop waits in slices shorter than this (see
`RedisReadyQueue.pop`), so a long pop never trips it."""

HEALTH_CHECK_INTERVAL = 15
"""A pooled connection idle for longer is pinged before use, so a dead one is replaced
instead of failing the command."""

RETRIES = 2
"""Retries of a command after a connection error: enough to ride over a dropped idle
connection, few enough that an outage is reported within seconds."""

SENTINEL_TIMEOUT = CONNECT_TIMEOUT
"""Seconds a Sentinel may take to connect or answer before the next one is asked."""


RECONNECT_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    # Under uvloop, a write on a pooled connection that the peer reset surfaces as
    # "RuntimeError: unable to perform operation on <TCPTransport closed=True>" instead of
    # a connection error; retrying on a fresh connection is what makes it go away. Other
    # RuntimeErrors are not connection trouble (see `is_connection_failure`).
    RuntimeError,
)

_CLOSED_TRANSPORT = "closed=True"


def is_connection_failure(error: BaseException) -> bool:
    """Whether `error` says the connection failed (worth a fresh connection), as opposed to
    a refused login or a bug."""
    if isinstance(error, redis.exceptions.AuthenticationError):
        return False  # a wrong password stays wrong however often it is sent
    if isinstance(error, RuntimeError):
        return _CLOSED_TRANSPORT in str(error)
    return isinstance(error, (*RECONNECT_ERRORS, OSError))


class _ReconnectRetry(Retry):
    """Retries connection failures only (`is_connection_failure`)."""

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        def retryable(error: Exception) -> bool:
            return is_connection_failure(error) and (is_retryable is None or is_retryable(error))

        return await super().call_with_retry(do, fail, retryable, with_failure_count)


def client_options() -> dict[str, Any]:
    """The bounds and reconnect policy of every TaskForge Redis client."""
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry": _ReconnectRetry(
            ExponentialWithJitterBackoff(cap=0.5, base=0.05),
            RETRIES,
            supported_errors=RECONNECT_ERRORS,
        ),
    }


def tls_options(*, ca_file: str | None) -> dict[str, Any]:
    """Options that make a connection speak TLS and check the server's certificate and host
    name against `ca_file` (PEM), or against the system's trusted CAs when None."""
    return {
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": ca_file,
        "ssl_check_hostname": True,
    }


def create_redis(
    *,
    host: str,
    port: int,
    db: int,
    password: str | None,
    sentinels: Sequence[tuple[str, int]] = (),
    sentinel_master: str | None = None,
    sentinel_password: str | None = None,
    tls: bool = False,
    tls_ca_file: str | None = None,
) -> Redis:
    """A pooled client; an empty password means none. The caller closes it (`aclose`).

    With `sentinels`, `host` and `port` are unused: each new connection asks the Sentinels
    (in turn, logging in with `sentinel_password`) for the current master of
    `sentinel_master` and connects there, so after a failover the client follows the
    promoted replica; while no master is known, commands fail like an unreachable server.
    `tls` applies to the Sentinels as well as to the servers."""
    options = {
        **client_options(),
        **(tls_options(ca_file=tls_ca_file) if tls else {}),
    }
    if not sentinels:
        return Redis(host=host, port=port, db=db, password=password or None, **options)
    if not sentinel_master:
        raise ValueError("sentinel_master is required with sentinels")
    sentinel = Sentinel(
        list(sentinels),
        sentinel_kwargs={
            "socket_connect_timeout": SENTINEL_TIMEOUT,
            "socket_timeout": SENTINEL_TIMEOUT,
            "socket_keepalive": True,
            "password": sentinel_password or None,
            **(tls_options(ca_file=tls_ca_file) if tls else {}),
        },
    )
    for asked in sentinel.sentinels:
        # Their repr goes into "No master found" per Sentinel that failed to answer.
        asked.__class__ = _SentinelClient
    client: Redis = sentinel.master_for(
        sentinel_master,
        redis_class=_SentinelMasterRedis,
        db=db,
        password=password or None,
        **options,
    )
    return client


class _SentinelClient(Redis):
    """The client of one Sentinel, shown as `Sentinel host:port`: redis-py names each
    Sentinel that failed to answer in its "No master found" error by the client's repr,
    otherwise a screenful of connection settings per Sentinel."""

    def __repr__(self) -> str:
        options = self.connection_pool.connection_kwargs
        return f"Sentinel {options.get('host')}:{options.get('port')}"


class _SentinelMasterRedis(Redis):
    """The client of a Sentinel-managed master: closing it closes the Sentinel clients too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def blocking_slice(client: Redis) -> float | None:
    """The longest a single blocking command may wait on `client` without its socket timeout
    firing first; None when the client has no socket timeout."""
    socket_timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if not socket_timeout:
        return None
    timeout = float(socket_timeout)
    return max(timeout - 1.0, timeout / 2)


NOT_SERVING_NOW = frozenset({"MISCONF", "NOREPLICAS", "BUSY"})
"""Error replies of a server that cannot serve the command now, whatever the command: its
last snapshot failed (MISCONF, with stop-writes-on-bgsave-error), too few replicas for
min-replicas-to-write (NOREPLICAS), a script running past its time (BUSY). The driver
raises a plain ResponseError for these; its own classes cover READONLY (a demoted master
reached by a name that still points at it), OOM (maxmemory under noeviction), TRYAGAIN and
MASTERDOWN."""
_NOT_SERVING_NOW_ERRORS = (
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
)


@contextmanager
def translate_connection_errors() -> Iterator[None]:
    """Re-raise the driver's connection failures (refused, reset, timed out), a refused
    login and the replies of a server that cannot serve now (NOT_SERVING_NOW: it would
    refuse every command, as a server that is away would not answer it) as
    `Unavailable("redis", ...)`, naming the cause: the roles wait for it as for any outage
    (workers claim from the store meanwhile). Any other error is a bug and passes through
    unchanged."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise Unavailable("redis", str(exc) or type(exc).__name__) from exc
    except _NOT_SERVING_NOW_ERRORS as exc:
        raise Unavailable("redis", f"{type(exc).__name__}: {exc}") from exc
    except redis.exceptions.ResponseError as exc:
        # The reply's code, also where a pipeline's message has put its own words first.
        code = getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]
        if code not in NOT_SERVING_NOW:
            raise
        raise Unavailable("redis", str(exc)) from exc
    except RuntimeError as exc:
        if not is_connection_failure(exc):
            raise
        raise Unavailable("redis", str(exc)) from exc
