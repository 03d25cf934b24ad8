"""Helpers shared by the test folders (fixtures live in the conftest files)."""

from __future__ import annotations

import socket
from urllib.parse import unquote, urlsplit


def free_port() -> int:
    """A local TCP port nothing listened on a moment ago: for a server a test starts, or as a
    port that refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
