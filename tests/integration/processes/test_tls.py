"""TLS to both stores, with certificates the test makes: a Postgres that refuses TCP logins
without TLS, reached with `sslmode=verify-full` and a CA file in POSTGRES_DSN, and a
redis-server with only a TLS port, reached with REDIS_TLS and REDIS_TLS_CA_FILE. Every role
runs a job end to end over both; without REDIS_TLS, that Redis stops a role with one line."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from tests.servers import PrivatePostgres, PrivateRedis, ServicesUnavailable, TlsFiles

from .conftest import DEADLINE, Stack, run_migrate

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


@pytest.fixture
def tls_postgres(tls_files: TlsFiles) -> Iterator[PrivatePostgres]:
    try:
        server = PrivatePostgres.create({"fsync": "off"}, tls=tls_files)
    except ServicesUnavailable as exc:
        pytest.fail(f"cannot start a private Postgres with TLS: {exc}")
    try:
        yield server
    finally:
        server.remove()


async def test_postgres_without_tls_is_refused_by_the_test_server(
    tls_postgres: PrivatePostgres,
) -> None:
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(tls_postgres.dsn() + "?sslmode=disable")


async def test_a_job_runs_end_to_end_over_tls_to_postgres_and_redis(
    stack: Stack, tls_files: TlsFiles, tls_postgres: PrivatePostgres, tls_redis: PrivateRedis
) -> None:
    dsn = f"{tls_postgres.dsn()}?sslmode=verify-full&sslrootcert={tls_files.ca}"
    stack.dsn = dsn
    stack.env.update(
        POSTGRES_DSN=dsn,
        REDIS_ADDR=f"127.0.0.1:{tls_redis.port}",
        REDIS_DB="0",
        REDIS_TLS="true",
        REDIS_TLS_CA_FILE=str(tls_files.ca),
    )
    stack.env.pop("REDIS_PASSWORD", None)
    migrate = await run_migrate(stack.env)
    assert migrate.returncode == 0, migrate.stderr

    await stack.start_api()
    stack.start_worker()
    stack.start_scheduler()
    async with stack.client() as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}

    succeeding = await stack.enqueue("noop")
    failing = await stack.enqueue("fail", maxAttempts=2, initialDelay=0.1)

    await stack.wait_for(succeeding, "SUCCEEDED")
    await stack.wait_for(failing, "DLQ")
    conn = await asyncpg.connect(dsn)
    try:
        plain = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)"
            " WHERE backend_type = 'client backend' AND NOT ssl"
        )
    finally:
        await conn.close()
    assert plain == 0
    for process in stack.processes:
        assert process.popen.poll() is None, process.tail()


async def test_a_worker_without_redis_tls_stops_with_one_line_at_a_tls_only_redis(
    stack: Stack, tls_redis: PrivateRedis
) -> None:
    # Its plain PING is reset, as by a Redis that is away; a PING over TLS tells them apart.
    worker = stack.start_worker(REDIS_ADDR=f"127.0.0.1:{tls_redis.port}", REDIS_DB="0")

    exit_code = await asyncio.to_thread(worker.wait, DEADLINE)

    assert exit_code == 2, worker.tail()
    assert worker.tail().strip().splitlines()[-1] == (
        "taskforge: invalid configuration: REDIS_TLS: the Redis server at"
        f" 127.0.0.1:{tls_redis.port} answers only over TLS (+PONG): set REDIS_TLS=true"
        " (and REDIS_TLS_CA_FILE if a private CA signs its certificate)"
    )
    assert "Traceback" not in worker.tail(400)
