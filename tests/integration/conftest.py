"""Fixtures shared by the integration folders."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import DevServer, free_port, wait_until_healthy

DEV = "from taskforge.entrypoints.cli.service import main; main()"
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
