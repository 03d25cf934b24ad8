"""Checks of the Redis server that TaskForge makes at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from redis.exceptions import AuthenticationError, InvalidResponse, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("taskforge.redis")


async def warn_about_eviction(client: Redis) -> None:
    """Ready hints are plain Redis keys: an eviction policy other than noeviction may drop them
    under memory pressure. Nothing is lost (the scheduler re-publishes), but dispatch stalls
    until it does, so say so. Servers that refuse CONFIG (managed Redis) are not warned about."""
    try:
        policy = (await client.config_get("maxmemory-policy")).get("maxmemory-policy")
    except Exception as exc:  # noqa: BLE001 - CONFIG may be disabled or Redis away: only a hint
        log.debug("could not read Redis maxmemory-policy: %s", exc)
        return
    if policy and policy != "noeviction":
        log.warning(
            "Redis maxmemory-policy is %r: under memory pressure Redis may evict ready hints "
            "and dispatch waits for the scheduler to re-publish them; use noeviction",
            policy,
        )


START_CHECK_TIMEOUT = 2.0
"""Seconds the start-up checks wait for Redis together: one that does not answer is
waited for by the roles themselves, as during any outage."""


PROBE_TIMEOUT = 0.5
"""Seconds the probe in the other protocol (see `refusal`) may take to connect, send PING
and read the first line of the answer. A TLS client's own PING gets START_CHECK_TIMEOUT
less this, so that both fit in the start-up checks' time."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A setting the Redis server refuses, and the server's words for why (for REDIS_TLS,
    the whole reason: what the server answered and how to fix the setting)."""

    setting: str
    reason: str


async def refusal(client: Redis) -> Refusal | None:
    """What the server refuses for good, else None: the password (REDIS_PASSWORD wrong,
    or missing where the server asks for one), the database (REDIS_DB at or beyond its
    `databases` setting: "DB index is out of range"), Redis itself (REDIS_ADDR names
    a server that answers in another protocol: a web server, a proxy), or TLS (REDIS_TLS
    set for a server that answers in plain text, or not set for one that answers only over
    TLS). Every command would fail the same way, so it is a configuration error, not an
    outage. A server that is away raises the driver's error: nothing is known yet.

    TLS is told apart from an outage by asking once more the other way (`_answer`) when
    PING gets no answer (with REDIS_TLS: a plain Redis waits for the end of a line in the
    handshake) or its connection fails (a TLS-only Redis resets a plain one): only a Redis
    reply to that second PING counts. Behind Sentinels the server's address is theirs to
    name, so there is no second PING and a TLS mismatch looks like an outage."""
    address = _address(client)
    tls = issubclass(client.connection_pool.connection_class, SSLConnection)
    # A TLS handshake with a plain Redis gets no answer at all: keep time to ask again.
    bound = START_CHECK_TIMEOUT - PROBE_TIMEOUT if address and tls else None
    try:
        async with asyncio.timeout(bound):
            await client.ping()
    except AuthenticationError as exc:
        return Refusal("REDIS_PASSWORD", str(exc))
    except InvalidResponse as exc:
        return Refusal("REDIS_ADDR", str(exc))
    except ResponseError as exc:
        return Refusal("REDIS_DB", str(exc)) if "DB index" in str(exc) else None
    except (RedisConnectionError, RedisTimeoutError, TimeoutError):
        if address is None or (reply := await _answer(*address, tls=not tls)) is None:
            raise
        host, port = address
        if tls:
            return Refusal(
                "REDIS_TLS",
                f"the Redis server at {host}:{port} answers without TLS ({reply}):"
                " unset REDIS_TLS or point REDIS_ADDR at the server's TLS port",
            )
        return Refusal(
            "REDIS_TLS",
            f"the Redis server at {host}:{port} answers only over TLS ({reply}):"
            " set REDIS_TLS=true (and REDIS_TLS_CA_FILE if a private CA signs its certificate)",
        )
    return None


def _address(client: Redis) -> tuple[str, int] | None:
    """The host and port `client` connects to; None when Sentinels name them (or a Unix
    socket is used)."""
    options = client.connection_pool.connection_kwargs
    host, port = options.get("host"), options.get("port")
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    return host, port


async def _answer(host: str, port: int, *, tls: bool) -> str | None:
    """The Redis reply line (`+PONG`, `-NOAUTH ...`) a server at host:port gives a PING
    sent over a connection of its own, over TLS or in plain text; None for anything else:
    no connection, no answer within PROBE_TIMEOUT, a reset, a handshake that fails, a line
    that is no Redis reply. Over TLS the certificate is not checked: only whether the
    server speaks TLS is asked, and PING carries nothing secret."""
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port, ssl=context, limit=1024)
            try:
                writer.write(b"PING\r\n")
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a line beyond `limit`
        log.debug(
            "no Redis answer over %s at %s:%d: %s", "TLS" if tls else "plain TCP", host, port, exc
        )
        return None
    if line[:1] not in (b"+", b"-") or not line.endswith(b"\r\n"):
        return None
    return line.rstrip(b"\r\n").decode("utf-8", "replace")[:120]
