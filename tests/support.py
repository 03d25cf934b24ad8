"""Helpers shared by the test folders (fixtures live in the conftest files)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx

from taskforge.bench.stack import free_port

__all__ = ["DevServer", "free_port", "redis_env", "wait_until_healthy"]


@dataclass(frozen=True)
class DevServer:
    """A running `taskforge dev` (the `dev_server` fixture): its URL and bearer token."""

    url: str
    token: str


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
