"""Checks of the Redis server that TaskForge makes at start-up."""

from __future__ import annotations

import logging

from redis.asyncio import Redis

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
