"""Real TaskForge processes (API, workers, scheduler) wired through the fault proxy.

Every process has a slot (`api`, `scheduler`, `w1`, ...) and each slot its own proxy route
to Postgres (`pg:<slot>`) and to Redis (`redis:<slot>`), so a fault can hit one process's
connections or all of them; a worker restarted in a slot reuses the slot's routes. Every
process the cluster starts is stopped by pid in `stop_all`; its output goes to a log file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.proxy import FaultProxy
from tests.servers import PrivatePostgres, PrivateRedis
from tests.support import free_port, wait_until_healthy

SUPPORT = Path(__file__).parent / "support"
HANDLERS = "faults_ledger"
QUEUE = "faults"
REDIS_PREFIX = "taskforge:faults:"
START_TIMEOUT = 30.0


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`taskforge <args>` in a new process (fork and exec: it does not wait for it)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "taskforge.entrypoints.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    slot: str
    queues: str = QUEUE
    concurrency: int = 6
    env: tuple[tuple[str, str], ...] = ()


@dataclass
class Proc:
    role: str
    slot: str
    popen: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.time)
    killed: float | None = None
    """When the suite killed it with SIGKILL (time.time())."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if sig is signal.SIGKILL:
            self.killed = time.time()
        os.kill(self.pid, sig)

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Cluster:
    """The processes of one scenario, on one database of the private Postgres."""

    def __init__(
        self,
        *,
        postgres: PrivatePostgres,
        redis: PrivateRedis,
        proxy: FaultProxy,
        database: str,
        logs: Path,
        env: dict[str, str],
    ) -> None:
        self.postgres = postgres
        self.redis = redis
        self.proxy = proxy
        self.database = database
        self.logs = logs
        self.base_env = env
        self.processes: list[Proc] = []
        self.api_url = ""
        self.worker_specs: dict[str, WorkerSpec] = {}

    @property
    def direct_dsn(self) -> str:
        """Postgres without the proxy: for the suite's own reads and the ledger."""
        return self.postgres.dsn(self.database)

    async def _routes(self, slot: str) -> tuple[int, int]:
        name_pg, name_redis = f"pg:{slot}", f"redis:{slot}"
        if name_pg not in self.proxy.routes:
            await self.proxy.add(name_pg, self.postgres.port)
            await self.proxy.add(name_redis, self.redis.port)
        return self.proxy[name_pg].port, self.proxy[name_redis].port

    async def start(self, role: str, slot: str, *args: str, **extra: str) -> Proc:
        pg_port, redis_port = await self._routes(slot)
        env = {
            **os.environ,
            **self.base_env,
            "PYTHONPATH": os.pathsep.join(
                [str(SUPPORT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "POSTGRES_DSN": self.postgres.dsn(self.database, pg_port),
            "LEDGER_DSN": self.direct_dsn,
            "REDIS_ADDR": f"127.0.0.1:{redis_port}",
            **extra,
        }
        log = self.logs / f"{slot}-{role}-{len(self.processes)}.log"
        process = Proc(role, slot, _spawn([role, *args], env, log), log)
        self.processes.append(process)
        return process

    async def start_api(self) -> Proc:
        port = free_port()
        process = await self.start("api", "api", HTTP_ADDR=f"127.0.0.1:{port}")
        self.api_url = f"http://127.0.0.1:{port}"
        await wait_until_healthy(self.api_url, process.alive, process.tail, START_TIMEOUT)
        return process

    async def start_worker(self, spec: WorkerSpec) -> Proc:
        self.worker_specs[spec.slot] = spec
        return await self.start(
            "worker",
            spec.slot,
            "--queues",
            spec.queues,
            "--concurrency",
            str(spec.concurrency),
            "--handlers",
            HANDLERS,
            **dict(spec.env),
        )

    async def restart_worker(self, slot: str) -> Proc:
        """A new worker process in `slot` (the old one must be gone or killed)."""
        return await self.start_worker(self.worker_specs[slot])

    async def start_scheduler(self) -> Proc:
        return await self.start("scheduler", "scheduler")

    def current(self, slot: str) -> Proc:
        """The most recently started process in `slot`."""
        for process in reversed(self.processes):
            if process.slot == slot:
                return process
        raise KeyError(slot)

    def workers(self) -> list[Proc]:
        return [self.current(slot) for slot in self.worker_specs]

    def crashed(self) -> list[Proc]:
        """Processes that died without the suite killing them."""
        return [p for p in self.processes if not p.alive() and p.killed is None]

    def stop_all(self, grace: float = 5.0) -> None:
        """SIGTERM each process still running (SIGCONT first, in case it is stopped), then
        SIGKILL those still there after `grace` seconds."""
        running = [p for p in self.processes if p.alive()]
        for process in running:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.kill(process.pid, sig)
                except ProcessLookupError:
                    break
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(10)
