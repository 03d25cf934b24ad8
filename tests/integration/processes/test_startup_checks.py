"""Worker, scheduler and API started against a database they cannot use yet: each logs why
in one line (the password masked), waits, and starts by itself once the database is fixed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from taskforge.adapters.postgres import apply_migrations
from tests.integration.processes.conftest import DEADLINE, REDIS_PASSWORD, Process, Stack
from tests.servers import PrivateRedis
from tests.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "hunter2-secret"
MIGRATE = "run `taskforge migrate`"


def _with_password(dsn: str, *, user: str | None = None) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    name = user or parts.username or "postgres"
    return urlunsplit(parts._replace(netloc=f"{name}:{PASSWORD}@{host}"))


async def _wait_for_line(process: Process, text: str) -> str:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        lines = [line for line in process.tail(400).splitlines() if text in line]
        if lines:
            return lines[0]
        assert process.popen.poll() is None, f"{process.role} exited:\n{process.tail()}"
        await asyncio.sleep(0.05)
    raise AssertionError(f"{process.role} never logged {text!r}:\n{process.tail()}")


def _lines_with(process: Process, text: str) -> list[str]:
    return [line for line in process.tail(400).splitlines() if text in line]


async def test_worker_and_scheduler_wait_for_migrations_and_then_start(
    stack: Stack, scratch_dsn: str
) -> None:
    dsn = _with_password(scratch_dsn)
    worker = stack.start_worker(POSTGRES_DSN=dsn)
    scheduler = stack.start_scheduler(POSTGRES_DSN=dsn)

    for process in (worker, scheduler):
        line = await _wait_for_line(process, MIGRATE)
        assert f"{process.role} cannot use Postgres at postgresql://postgres:***@" in line
    assert not _lines_with(worker, "worker serving")

    await apply_migrations(scratch_dsn)

    await _wait_for_line(worker, "worker serving")
    await _wait_for_line(scheduler, "is ready now")
    for process in (worker, scheduler):
        # Said once, not at every re-check; once more if a re-check met the migrations half
        # applied (a reason of its own: the schema is behind).
        lines = _lines_with(process, MIGRATE)
        assert "has no TaskForge schema" in lines[0], lines
        assert all("schema is behind" in line for line in lines[1:]), lines
        assert len(set(lines)) == len(lines), lines
        assert PASSWORD not in process.tail(400)


async def test_a_worker_on_an_unknown_role_says_so_instead_of_serving(
    stack: Stack, postgres_admin_dsn: str
) -> None:
    worker = stack.start_worker(
        POSTGRES_DSN=_with_password(postgres_admin_dsn, user="taskforge_no_such_role")
    )

    line = await _wait_for_line(worker, "does not exist")

    assert "worker cannot use Postgres" in line
    assert "role" in line and "taskforge_no_such_role" in line
    assert not _lines_with(worker, "worker serving")
    assert REDIS_PASSWORD not in worker.tail(400)


async def test_the_api_logs_once_why_it_is_not_ready(stack: Stack, scratch_dsn: str) -> None:
    api = await stack.start_api(POSTGRES_DSN=_with_password(scratch_dsn))

    line = await _wait_for_line(api, MIGRATE)

    assert "api cannot use Postgres at postgresql://postgres:***@" in line
    async with stack.client() as client:
        assert (await client.get("/readyz")).status_code == 503
    assert len(_lines_with(api, "cannot use Postgres")) == 1


@pytest.mark.parametrize("api_workers", ["1", "2"])
async def test_the_api_warns_once_of_a_short_token_never_showing_it(
    stack: Stack, api_workers: str
) -> None:
    # Bearer tokens are not throttled: a short one could be guessed.
    api = await stack.start_api(API_TOKEN="hunter2", API_WORKERS=api_workers)

    line = await _wait_for_line(api, "API_TOKEN is 7 characters long")

    assert "openssl rand -hex 32" in line
    assert "hunter2" not in api.tail(400)
    assert len(_lines_with(api, "API_TOKEN is")) == 1


@pytest.mark.parametrize(
    ("role", "api_workers"), [("worker", "1"), ("scheduler", "1"), ("api", "1"), ("api", "2")]
)
async def test_a_redis_db_the_server_does_not_have_stops_every_role_with_one_line(
    stack: Stack, role: str, api_workers: str
) -> None:
    # Every Redis command would fail the same way, for good: a configuration error (exit 2),
    # not an outage to retry through. API_WORKERS=2: checked before the processes fork.
    listen = {"HTTP_ADDR": f"127.0.0.1:{free_port()}"} if role == "api" else {}
    process = stack.start(role, REDIS_DB="9999", API_WORKERS=api_workers, **listen)

    exit_code = await asyncio.to_thread(process.wait, DEADLINE)

    assert exit_code == 2, process.tail()
    assert process.tail().strip().splitlines()[-1] == (
        "taskforge: invalid configuration: REDIS_DB='9999': the Redis server refuses it"
        " (DB index is out of range): its `databases` setting is lower"
    )


@pytest.fixture
async def web_server() -> AsyncIterator[int]:
    """The port of a server that answers in HTTP, where Redis should be."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("role", ["worker", "scheduler"])
@pytest.mark.parametrize("refused", ["REDIS_DB", "REDIS_ADDR"])
async def test_a_worker_or_scheduler_that_redis_refuses_prints_only_the_refusal(
    stack: Stack, web_server: int, role: str, refused: str
) -> None:
    # Checked before they start working: no fetch, metrics or leaving the store fails first.
    setting = (
        {"REDIS_DB": "9999"} if refused == "REDIS_DB" else {"REDIS_ADDR": f"127.0.0.1:{web_server}"}
    )
    if role == "worker":
        process = stack.start_worker(**setting)
    else:
        process = stack.start_scheduler(**setting)

    exit_code = await asyncio.to_thread(process.wait, DEADLINE)

    assert exit_code == 2, process.tail()
    [line] = process.tail().strip().splitlines()
    assert line.startswith(f"taskforge: invalid configuration: {refused}="), line


async def test_redis_tls_set_for_a_plain_redis_stops_a_worker_with_one_line(
    stack: Stack,
) -> None:
    # The TLS handshake gets no answer, as from a frozen Redis; a plain PING tells them apart
    # (a server with a password answers it too, refusing it).
    worker = stack.start_worker(REDIS_TLS="true")
    reply = "-NOAUTH Authentication required." if stack.env.get("REDIS_PASSWORD") else "+PONG"

    exit_code = await asyncio.to_thread(worker.wait, DEADLINE)

    assert exit_code == 2, worker.tail()
    assert worker.tail().strip().splitlines()[-1] == (
        "taskforge: invalid configuration: REDIS_TLS: the Redis server at"
        f" {stack.env['REDIS_ADDR']} answers without TLS ({reply}): unset REDIS_TLS or point"
        " REDIS_ADDR at the server's TLS port"
    )
    assert "Traceback" not in worker.tail(400)


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("not-" + REDIS_PASSWORD, "invalid username-password pair or user is disabled."),
        ("", "Authentication required."),
    ],
)
async def test_a_password_the_redis_server_refuses_stops_a_worker_with_one_line(
    stack: Stack, redis_with_password: PrivateRedis, password: str, reason: str
) -> None:
    # As a database it does not have: every command would fail the same way, for good.
    worker = stack.start_worker(
        REDIS_ADDR=f"127.0.0.1:{redis_with_password.port}", REDIS_PASSWORD=password
    )

    exit_code = await asyncio.to_thread(worker.wait, DEADLINE)

    assert exit_code == 2, worker.tail()
    assert worker.tail().strip().splitlines()[-1] == (
        f"taskforge: invalid configuration: REDIS_PASSWORD: the Redis server refuses it ({reason})"
    )
    assert REDIS_PASSWORD not in worker.tail(400)
