"""Checks of the Redis server that TaskForge makes at start-up."""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import ResponseError

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


async def refused_database(client: Redis) -> str | None:
    """Why the server refuses the database the client selects (REDIS_DB at or beyond its
    `databases` setting: "DB index is out of range"), else None, also when it is away.
    Every command would fail the same way, so it is a configuration error."""
    try:
        await client.ping()
    except ResponseError as exc:
        return str(exc) if "DB index" in str(exc) else None
    except Exception as exc:  # noqa: BLE001 - away: the roles wait for it
        log.debug("could not reach Redis at start-up: %s", exc)
    return None
