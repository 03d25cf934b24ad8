"""Fixtures shared by the integration folders: a live `taskforge dev`, and for every test
that talks to Redis directly a client of its own and a key prefix of its own under the
run's prefix, with queue names under the run's queue pattern, so `redis_cleanup` removes
every key a test creates."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from taskforge.adapters.redis.ready_queue import RedisReadyQueue
from tests.servers import PrivateRedis, ServicesUnavailable, TlsFiles
from tests.support import DevServer, free_port, redis_from_url, wait_until_healthy, with_query

DEV = "from taskforge.entrypoints.cli import main; main()"
STARTUP_DEADLINE = 30.0


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """`taskforge dev` on a free port, behind a bearer token, stopped by pid at the end. Only
    its default queue (`jobs:ready`) has a worker."""
    port = free_port()
    token = secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("dev-server") / "taskforge-dev.log"
    env = {key: value for key, value in os.environ.items() if key != "WORKER_QUEUES"}
    env.update(
        HTTP_ADDR=f"127.0.0.1:{port}", API_TOKEN=token, QUEUE_NAME="jobs:ready", LOG_LEVEL="warn"
    )
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", DEV, "dev"], stdout=output, stderr=subprocess.STDOUT, env=env
        )
    try:
        asyncio.run(
            wait_until_healthy(url, lambda: process.poll() is None, log.read_text, STARTUP_DEADLINE)
        )
        yield DevServer(url, token)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """A throwaway CA and a server certificate it signed, for localhost and 127.0.0.1."""
    directory = tmp_path / "tls"
    directory.mkdir()
    try:
        return TlsFiles.create(directory)
    except ServicesUnavailable as exc:
        pytest.fail(f"cannot make test certificates: {exc}")


@pytest.fixture
def tls_redis(tls_files: TlsFiles) -> Iterator[PrivateRedis]:
    """A redis-server of its own with only a TLS port (`tls_files`' certificate), no password."""
    try:
        server = PrivateRedis.create(tls=tls_files)
    except ServicesUnavailable as exc:
        pytest.fail(f"cannot start a private redis-server with TLS: {exc}")
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def key_prefix(redis_prefix: str) -> str:
    """An internal key prefix only this test uses, under the run's prefix."""
    return f"{redis_prefix}{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def client_name() -> str:
    """Names this test's Redis connections, so CLIENT LIST can find them."""
    return f"taskforge-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis_client(
    redis_url: str, client_name: str, redis_cleanup: None
) -> AsyncIterator[Redis]:
    client = redis_from_url(with_query(redis_url, client_name=client_name))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def redis_ready_queue(redis_client: Redis, key_prefix: str) -> RedisReadyQueue:
    return RedisReadyQueue(redis_client, key_prefix)


@pytest.fixture
def queues(queue_name: str) -> list[str]:
    """Three queue names, in the order a worker serves them; colons as in `jobs:ready`."""
    return [f"{queue_name}:{suffix}" for suffix in ("first", "second", "third")]
