"""Checks of the Redis server that TaskForge makes at start-up."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, InvalidResponse, ResponseError

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


@dataclass(frozen=True, slots=True)
class Refusal:
    """A setting the Redis server refuses, and the server's words for why."""

    setting: str
    reason: str


async def refusal(client: Redis) -> Refusal | None:
    """What the server refuses for good, else None: the password (REDIS_PASSWORD wrong,
    or missing where the server asks for one), the database (REDIS_DB at or beyond its
    `databases` setting: "DB index is out of range"), or Redis itself (REDIS_ADDR names
    a server that answers in another protocol: a web server, a proxy). Every command would
    fail the same way, so it is a configuration error, not an outage. A server that is
    away raises the driver's error: nothing is known yet."""
    try:
        await client.ping()
    except AuthenticationError as exc:
        return Refusal("REDIS_PASSWORD", str(exc))
    except InvalidResponse as exc:
        return Refusal("REDIS_ADDR", str(exc))
    except ResponseError as exc:
        return Refusal("REDIS_DB", str(exc)) if "DB index" in str(exc) else None
    return None
