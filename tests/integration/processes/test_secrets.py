"""Secrets from files, on a full stack whose every secret is checked: a Postgres role with a
password (on a private cluster that asks for it), a Redis with `requirepass`, an API token.
Whatever happens (a wrong token, a failing job, Redis restarted), no secret appears in any
process's logs or traces, in the API's answers or in /metrics."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest

from tests.servers import PrivatePostgres, PrivateRedis

from .conftest import DEADLINE, REDIS_PASSWORD, Stack, run_migrate

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

# Distinct, unlikely strings, with characters a URL must escape in the DSN's password.
POSTGRES_PASSWORD = "pg-S3cret/with@signs"
API_TOKEN = "api-S3cret-token-41be"
SECRETS = (POSTGRES_PASSWORD, quote(POSTGRES_PASSWORD, safe=""), REDIS_PASSWORD, API_TOKEN)


@pytest.fixture
def postgres_with_passwords() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres.create({"fsync": "off"}, passwords=True)
    try:
        yield server
    finally:
        server.remove()


async def create_app_database(server: PrivatePostgres) -> str:
    """A role that must log in with POSTGRES_PASSWORD and a database it owns; its DSN."""
    conn = await asyncpg.connect(server.dsn())
    try:
        await conn.execute(
            "CREATE ROLE taskforge_app LOGIN PASSWORD "
            + await conn.fetchval("SELECT quote_literal($1)", POSTGRES_PASSWORD)
        )
        await conn.execute("CREATE DATABASE taskforge_app OWNER taskforge_app")
    finally:
        await conn.close()
    with pytest.raises(asyncpg.InvalidPasswordError):  # the password really is checked
        await asyncpg.connect(
            f"postgresql://taskforge_app:wrong@127.0.0.1:{server.port}/taskforge_app"
        )
    password = quote(POSTGRES_PASSWORD, safe="")
    return f"postgresql://taskforge_app:{password}@127.0.0.1:{server.port}/taskforge_app"


def secret_files(root: Path, dsn: str) -> dict[str, str]:
    files = {
        "POSTGRES_DSN": dsn + "\n",
        "REDIS_PASSWORD": REDIS_PASSWORD + "\n",
        "API_TOKEN": API_TOKEN,
    }
    env = {}
    for variable, content in files.items():
        path = root / variable.lower()
        path.write_text(content)
        env[f"{variable}_FILE"] = str(path)
    return env


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} shows the secret {secret!r}"


async def test_no_secret_leaks_from_a_full_run_with_failures(
    postgres_with_passwords: PrivatePostgres,
    redis_with_password: PrivateRedis,
    stack: Stack,
    tmp_path: Path,
) -> None:
    app_dsn = await create_app_database(postgres_with_passwords)
    for variable in ("POSTGRES_DSN", "REDIS_PASSWORD", "API_TOKEN"):
        stack.env.pop(variable, None)
    stack.env.update(
        REDIS_ADDR=f"127.0.0.1:{redis_with_password.port}",
        TRACING_ENABLED="true",
        TRACING_EXPORTER="stdout",
        LOG_LEVEL="debug",
        **secret_files(tmp_path, app_dsn),
    )
    stack.dsn = postgres_with_passwords.dsn("taskforge_app")  # the tests' own look, as postgres
    migrate = await run_migrate(stack.env)
    assert migrate.returncode == 0, migrate.stderr
    assert_no_secret("taskforge migrate", migrate.stdout + migrate.stderr)

    await stack.start_api()
    stack.start("worker", "--demo-handlers")
    stack.start_scheduler()
    answers: list[str] = []
    async with stack.client() as client:
        refused = await client.post(
            "/jobs", json={"jobType": "noop"}, headers={"Authorization": "Bearer wrong"}
        )
        assert refused.status_code == 401
        answers.append(refused.text)
        auth = {"Authorization": f"Bearer {API_TOKEN}"}

        async def enqueue(job_type: str, **body: object) -> str:
            queue = stack.env["QUEUE_NAME"]
            response = await client.post(
                "/jobs", json={"jobType": job_type, "queue": queue, **body}, headers=auth
            )
            assert response.status_code == 201, response.text
            answers.append(response.text)
            return str(response.json()["id"])

        done = await enqueue("noop")
        failing = await enqueue("fail", maxAttempts=2, initialDelay=0.1)
        await stack.wait_for(done, "SUCCEEDED")
        await stack.wait_for(failing, "DLQ")

        redis_with_password.popen.kill()  # type: ignore[union-attr]
        redis_with_password.wait_exit()
        during_outage = await enqueue("noop")  # accepted: Postgres holds it
        redis_with_password.start()
        after = await enqueue("noop")
        await stack.wait_for(during_outage, "SUCCEEDED")
        await stack.wait_for(after, "SUCCEEDED")

        for path in ("/jobs?limit=200", f"/jobs/{failing}", "/dlq", "/stats", "/readyz"):
            answers.append((await client.get(path, headers=auth)).text)
        metrics = (await client.get("/metrics")).text
    assert "taskforge_job_success_total" in metrics

    for process in stack.processes:
        process.signal(signal.SIGTERM)
    deadline = time.monotonic() + DEADLINE
    while any(process.popen.poll() is None for process in stack.processes):
        assert time.monotonic() < deadline, "a process did not stop on SIGTERM"
        await asyncio.sleep(0.05)

    assert_no_secret("/metrics", metrics)
    for answer in answers:
        assert_no_secret("an API answer", answer)
    traced = False
    for process in stack.processes:
        text = process.log.read_text(errors="replace")
        traced = traced or "trace_id" in text
        assert_no_secret(f"the {process.role}'s output", text)
    assert traced, "no trace was exported: the check above saw no span"
