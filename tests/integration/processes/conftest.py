"""Whole TaskForge processes (api, worker, scheduler) on real Postgres and Redis.

Every process a test starts is stopped (by pid) when the test ends; its output goes to a
file that is printed when the test fails (standard output to a file of its own when the
test reads it apart from the logs, as the span exporter's).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.servers import PrivateRedis, ServicesUnavailable
from tests.support import free_port, redis_env, wait_until_healthy

SUPPORT = Path(__file__).parent / "support"
TASKFORGE = Path(sys.executable).parent / "taskforge"
"""The installed console script, started as users start it: unlike `python -m`, it does not
put the current directory on the import path by itself."""

# The table the handlers in support/taskforge_ledger.py write one row per execution to.
LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS ledger (
    id bigserial PRIMARY KEY,
    job_id uuid NOT NULL,
    pid int NOT NULL,
    attempt int NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at timestamptz,
    outcome text
)
"""

DEADLINE = 30.0


@dataclass
class Process:
    role: str
    popen: subprocess.Popen[bytes]
    log: Path
    stdout: Path | None = None
    """Standard output, when it is kept apart from the log (standard error)."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    async def logged(self, text: str, deadline: float = 30.0) -> None:
        """Until the log holds `text`; fails if the process exits or `deadline` seconds pass."""
        give_up = time.monotonic() + deadline
        while text not in self.log.read_text(errors="replace"):
            assert self.popen.poll() is None, f"{self.role} exited:\n{self.tail()}"
            assert time.monotonic() < give_up, f"no {text!r} in the log:\n{self.tail()}"
            await asyncio.sleep(0.05)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Stack:
    dsn: str
    env: dict[str, str]
    logs: Path
    processes: list[Process] = field(default_factory=list)
    api_url: str | None = None
    separate_stdout: bool = False
    """Write each process's standard output to `<role>-<n>.out`, apart from its log."""

    def start(self, role: str, *args: str, **env: str) -> Process:
        return self.start_in(None, role, *args, **env)

    def start_in(self, cwd: Path | None, role: str, *args: str, **env: str) -> Process:
        """`start` with `cwd` as the process's current directory."""
        return self.start_via((), cwd, role, *args, **env)

    def start_via(
        self, wrapper: Sequence[str], cwd: Path | None, role: str, *args: str, **env: str
    ) -> Process:
        """`start_in`, the command run by way of `wrapper` (as `ip netns exec <namespace>`,
        which execs it: the process keeps the pid)."""
        name = f"{role}-{len(self.processes)}"
        log = self.logs / f"{name}.log"
        stdout = self.logs / f"{name}.out" if self.separate_stdout else None
        popen = subprocess.Popen(
            [*wrapper, TASKFORGE, role, *args],
            cwd=cwd,
            env={**self.env, **env},
            stdout=stdout.open("wb") if stdout else log.open("wb"),
            stderr=log.open("wb") if stdout else subprocess.STDOUT,
        )
        process = Process(role, popen, log, stdout)
        self.processes.append(process)
        return process

    async def start_api(self, **env: str) -> Process:
        port = free_port()
        process = self.start("api", HTTP_ADDR=f"127.0.0.1:{port}", **env)
        self.api_url = f"http://127.0.0.1:{port}"
        await wait_until_healthy(
            self.api_url, lambda: process.popen.poll() is None, process.tail, DEADLINE
        )
        return process

    def start_worker(self, *args: str, **env: str) -> Process:
        return self.start(
            "worker", "--handlers", "taskforge_ledger", "--demo-handlers", *args, **env
        )

    def start_scheduler(self, **env: str) -> Process:
        return self.start("scheduler", **env)

    def client(self) -> httpx.AsyncClient:
        assert self.api_url is not None, "start_api() first"
        return httpx.AsyncClient(base_url=self.api_url, timeout=10)

    async def enqueue(self, job_type: str, **body: Any) -> str:
        async with self.client() as client:
            response = await client.post(
                "/jobs", json={"jobType": job_type, "queue": self.env["QUEUE_NAME"], **body}
            )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def job(self, job_id: str) -> dict[str, Any]:
        conn = await asyncpg.connect(self.dsn)
        try:
            row = await conn.fetchrow("SELECT * FROM jobs WHERE id = $1::uuid", job_id)
        finally:
            await conn.close()
        assert row is not None
        return dict(row)

    async def wait_for(
        self, job_id: str, *states: str, timeout: float = DEADLINE
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(job_id)
            if job["state"] in states:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {job_id} stuck in {job['state']} (last error: {job['last_error']}),"
                    f" wanted {states}"
                )
            await asyncio.sleep(0.05)

    async def ledger(self, job_id: str) -> list[dict[str, Any]]:
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(
                "SELECT * FROM ledger WHERE job_id = $1::uuid ORDER BY started_at", job_id
            )
        finally:
            await conn.close()
        return [dict(row) for row in rows]

    async def wait_for_ledger(self, job_id: str, count: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            rows = await self.ledger(job_id)
            if len(rows) >= count:
                return rows
            await asyncio.sleep(0.05)
        raise AssertionError(f"job {job_id} has fewer than {count} executions")

    def stop_all(self) -> None:
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.kill()
            process.popen.wait(10)


async def run_migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`taskforge migrate` with `env`, to its end."""

    def migrate() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TASKFORGE, "migrate"], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    return await asyncio.to_thread(migrate)


REDIS_PASSWORD = "redis-S3cret-7f3a9c"
"""The password of `redis_with_password`: distinct and unlikely, to be looked for in logs."""


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of its own, which a test may stop or freeze (SIGSTOP): thawed before
    it is removed."""
    try:
        server = PrivateRedis.create()
    except ServicesUnavailable as exc:
        pytest.fail(f"cannot start a private redis-server: {exc}")
    try:
        yield server
    finally:
        if server.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.pid, signal.SIGCONT)
        server.remove()


@pytest.fixture
def redis_with_password() -> Iterator[PrivateRedis]:
    """A redis-server of its own that asks every client for REDIS_PASSWORD."""
    server = PrivateRedis.create(password=REDIS_PASSWORD)
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def ledger_dsn(migrated_dsn: str) -> str:
    """The migrated database plus the ledger table the test handlers write to."""

    async def create_ledger() -> None:
        conn = await asyncpg.connect(migrated_dsn)
        try:
            await conn.execute(LEDGER_DDL)
        finally:
            await conn.close()

    asyncio.run(create_ledger())
    return migrated_dsn


@pytest.fixture
async def stack(
    ledger_dsn: str,
    redis_url: str,
    redis_prefix: str,
    queue_name: str,
    redis_cleanup: None,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Stack]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
        "POSTGRES_DSN": ledger_dsn,
        "LEDGER_DSN": ledger_dsn,
        **redis_env(redis_url),
        "TASKFORGE_REDIS_PREFIX": redis_prefix,
        "QUEUE_NAME": queue_name,
        "SCHEDULER_TICK": "0.1",
        "LOG_LEVEL": "info",
    }
    stack = Stack(dsn=ledger_dsn, env=env, logs=tmp_path)
    try:
        yield stack
    finally:
        stack.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            for process in stack.processes:
                print(f"--- {process.role} (pid {process.pid}) ---\n{process.tail()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
