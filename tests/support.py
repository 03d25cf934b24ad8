"""Helpers shared by the test folders (fixtures live in the conftest files)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

import httpx
from redis.asyncio import Redis

from taskforge.adapters.redis.client import client_options
from taskforge.bench.stack import free_port

__all__ = [
    "DevServer",
    "free_port",
    "redis_env",
    "redis_from_url",
    "wait_until_healthy",
    "with_query",
]


@dataclass(frozen=True)
class DevServer:
    """A running `taskforge dev` (the `dev_server` fixture): its URL and bearer token."""

    url: str
    token: str


def with_query(url: str, **params: str) -> str:
    """`url` with extra query parameters (redis-py reads client options from the query)."""
    parts = urlsplit(url)
    query = "&".join(part for part in (parts.query, urlencode(params)) if part)
    return urlunsplit(parts._replace(query=query))


def delete_keys(url: str, patterns: Sequence[str]) -> None:
    """Delete every key of the Redis at `url` that matches one of `patterns` (glob)."""
    from redis import Redis as SyncRedis

    client = SyncRedis.from_url(url)
    try:
        for pattern in patterns:
            keys = list(client.scan_iter(match=pattern, count=500))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


def redis_from_url(url: str) -> Redis:
    """A client like the service's, for `redis://[:password@]host:port/db`; options given in
    the URL's query (`?socket_timeout=10`) override the defaults. The caller closes it."""
    client: Redis = Redis.from_url(url, **client_options())
    return client


def redis_env(redis_url: str) -> dict[str, str]:
    """The REDIS_* variables that point a TaskForge process at `redis://[:pw@]host:port/db`."""
    parts = urlsplit(redis_url)
    env = {
        "REDIS_ADDR": f"{parts.hostname}:{parts.port or 6379}",
        "REDIS_DB": (parts.path or "/0").lstrip("/") or "0",
    }
    if parts.password:
        env["REDIS_PASSWORD"] = unquote(parts.password)
    return env


async def wait_until_healthy(
    api_url: str, alive: Callable[[], bool], tail: Callable[[], str], timeout: float
) -> None:
    """Poll `api_url`/healthz until it answers 200; fail with the process's last output
    when it exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if not alive():
                raise AssertionError(f"api exited early:\n{tail()}")
            try:
                if (await client.get(f"{api_url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"api never became healthy:\n{tail()}")
