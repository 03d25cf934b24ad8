"""One scenario, end to end: fresh database, real processes behind the proxy, steady load,
faults on a logged schedule, heal, drain, then every invariant.

`Services` owns the private Postgres and Redis of a whole run; `Run` is one scenario on
them (its own database, processes, proxy routes and load) and is used as
`async with Run(...) as run: ...; result = await run.finish()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from uuid import UUID

import asyncpg
import httpx
from redis.asyncio import Redis

from tests.faults.cluster import QUEUE, REDIS_PREFIX, Cluster, Proc, WorkerSpec
from tests.faults.invariants import TERMINAL, Observation, Tally, Verdict, check
from tests.faults.load import DEFAULT_MIX, Load, Mix, Submitted
from tests.faults.proxy import FaultProxy
from tests.faults.records import Snapshot, prepare_database, read_snapshot
from tests.servers import PrivatePostgres, PrivateRedis

VISIBILITY_TIMEOUT = 4.0
"""Seconds; every job the load enqueues uses it (heartbeats renew every third of it)."""
SCHEDULER_TICK = 0.2
REPUBLISH_AFTER = 3.0
REQUEST_DEADLINE = 5.0
"""Seconds the API gives any request before answering 503 not_ready (its REQUEST_DEADLINE,
set here explicitly so the deadline the hung-dependency faults assert is the one in force)."""
PROBE_TIMEOUT = 45.0
DRAIN_TIMEOUT = 90.0
SAMPLE_EVERY = 0.3
UUID_PATTERN = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
STORE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

BASE_ENV = {
    "QUEUE_NAME": QUEUE,
    "TASKFORGE_REDIS_PREFIX": REDIS_PREFIX,
    "SCHEDULER_TICK": str(SCHEDULER_TICK),
    "REPUBLISH_AFTER": str(REPUBLISH_AFTER),
    "REQUEST_DEADLINE": str(REQUEST_DEADLINE),
    "WORKER_SHUTDOWN_GRACE": "2",
    "LOG_LEVEL": "info",
}

DEFAULT_WORKERS = (WorkerSpec("w1"), WorkerSpec("w2"), WorkerSpec("w3"))
STOP_GRACE = 15.0
"""Seconds the processes have to stop after SIGTERM at the end of a run before SIGKILL."""


@dataclass
class Services:
    """The private Postgres and Redis of one run."""

    postgres: PrivatePostgres
    redis: PrivateRedis

    @classmethod
    def start(cls) -> Services:
        postgres = PrivatePostgres.create()
        try:
            redis = PrivateRedis.create()
        except BaseException:
            postgres.remove()
            raise
        return cls(postgres, redis)

    def remove(self) -> None:
        try:
            self.redis.remove()
        finally:
            self.postgres.remove()


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class FaultRecord:
    """One injected fault, as the schedule log and the recovery table show it."""

    kind: str
    target: str
    injected: float
    """time.time() of the injection."""
    offset: float = 0.0
    """Seconds since the scenario started."""
    healed: float | None = None
    victims: list[UUID] = field(default_factory=list)
    """Jobs the fault hit directly (held by a killed or stopped worker, popped in flight)."""
    pid: int | None = None
    recovery: float | None = None
    """Seconds until every victim ran again elsewhere or ended (victim faults), or from the
    heal until a fresh probe job succeeded (service faults)."""
    basis: str = ""
    checks: list[Check] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    jobs: int
    rate: float
    inject: Callable[[Run], Awaitable[None]]
    workers: tuple[WorkerSpec, ...] = DEFAULT_WORKERS
    env: tuple[tuple[str, str], ...] = ()
    mix: Mix = DEFAULT_MIX
    budget: float = 300.0
    """Seconds the whole scenario may take, drain included."""


@dataclass
class ScenarioResult:
    name: str
    summary: str
    seed: int
    duration: float
    verdicts: list[Verdict]
    checks: list[Check]
    tally: Tally
    faults: list[FaultRecord]
    statuses: Counter[int]
    drain: float | None
    logs: Path

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts) and all(c.ok for c in self.checks)


def rss_bytes(pid: int) -> int | None:
    """Resident set size from /proc/<pid>/status; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Run:
    """One scenario on the run's services. Times are time.time() unless named otherwise."""

    def __init__(
        self,
        services: Services,
        scenario: Scenario,
        *,
        seed: int,
        logs: Path,
        echo: TextIO | None = None,
    ) -> None:
        self.services = services
        self.scenario = scenario
        self.seed = seed
        self.logs = logs / scenario.name
        self.echo = echo
        self.database = "faults_" + re.sub(r"[^a-z0-9]", "_", scenario.name.lower())
        self.started = time.time()
        self.faults: list[FaultRecord] = []
        self.checks: list[Check] = []
        self.statuses: Counter[int] = Counter()
        self.observations: list[Observation] = []
        self.rss: list[int] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.service_lock = asyncio.Lock()
        self.proxy = FaultProxy()
        self.cluster = Cluster(
            postgres=services.postgres,
            redis=services.redis,
            proxy=self.proxy,
            database=self.database,
            logs=self.logs,
            env={**BASE_ENV, **dict(scenario.env)},
        )
        self.load: Load
        self.db: asyncpg.Pool
        self.redis: Redis
        self.http: httpx.AsyncClient

    # --- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Run:
        self.logs.mkdir(parents=True, exist_ok=True)
        postgres = self.services.postgres
        await prepare_database(postgres.dsn(), self.database, self.cluster.direct_dsn)
        self.redis = Redis(host="127.0.0.1", port=self.services.redis.port, socket_timeout=5)
        await self.redis.flushall()
        self.db = await asyncpg.create_pool(self.cluster.direct_dsn, min_size=0, max_size=4)
        try:
            api = await self.cluster.start_api()
            for spec in self.scenario.workers:
                await self.cluster.start_worker(spec)
            await self.cluster.start_scheduler()
            self.http = httpx.AsyncClient(base_url=self.cluster.api_url, timeout=10)
            self.load = Load(
                api_url=self.cluster.api_url,
                seed=f"{self.seed}:{self.scenario.name}",
                key_prefix=self.scenario.name,
                total=self.scenario.jobs,
                rate=self.scenario.rate,
                mix=self.scenario.mix,
            )
            self._tasks.append(asyncio.create_task(self._sample(api)))
            self.started = time.time()
            warm_up = await self.probe()
            self.say(f"cluster up, first probe job done in {warm_up:.2f}s")
        except BaseException:
            await self._teardown()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._teardown()

    async def _teardown(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await asyncio.to_thread(self.cluster.stop_all)
        await self.proxy.close()
        if hasattr(self, "http"):
            await self.http.aclose()
        if hasattr(self, "db"):
            await self.db.close()
        if hasattr(self, "redis"):
            with contextlib.suppress(Exception):
                await self.redis.aclose()

    # --- logging ---------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.time() - self.started

    def say(self, message: str) -> None:
        line = f"[{self.scenario.name} +{self.elapsed():6.1f}s] {message}"
        with (self.logs / "schedule.log").open("a") as log:
            log.write(line + "\n")
        if self.echo is not None:
            print(line, file=self.echo, flush=True)

    def fault(self, kind: str, target: str, **details: Any) -> FaultRecord:
        record = FaultRecord(
            kind=kind, target=target, injected=time.time(), offset=self.elapsed(), **details
        )
        self.faults.append(record)
        self.say(f"FAULT {kind} -> {target}")
        return record

    def heal(self, record: FaultRecord, note: str = "") -> None:
        record.healed = time.time()
        if note:
            record.note = (record.note + "; " if record.note else "") + note
        self.say(f"HEAL  {record.kind} -> {record.target}" + (f" ({note})" if note else ""))

    # --- background observation ------------------------------------------------------

    async def _sample(self, api: Proc) -> None:
        """Sample job states through the API (and, every few rounds, /stats and /readyz,
        which touch Redis as well) and the API's RSS, until the run stops."""
        offset = 0
        for round_number in itertools.count():
            if self._stopping.is_set():
                return
            if (rss := rss_bytes(api.pid)) is not None:
                self.rss.append(rss)
            extra = ("/stats", "/readyz")[round_number % 2] if round_number % 3 == 0 else None
            try:
                response = await self.http.get("/jobs", params={"limit": 200, "offset": offset})
                if extra is not None:
                    self.statuses[(await self.http.get(extra)).status_code] += 1
            except httpx.TransportError:
                pass
            else:
                self.statuses[response.status_code] += 1
                if response.status_code == 200:
                    body = response.json()
                    at = datetime.now(UTC)
                    for item in body["items"]:
                        self.observations.append(Observation(at, UUID(item["id"]), item["state"]))
                    total = int(body["total"])
                    offset = offset + 200 if offset + 200 < total else 0
            await asyncio.sleep(SAMPLE_EVERY)

    # --- the suite's own view of the store (direct, retried across restarts) ----------

    async def fetch(self, statement: str, *args: Any) -> list[asyncpg.Record]:
        deadline = time.monotonic() + PROBE_TIMEOUT
        while True:
            try:
                return await self.db.fetch(statement, *args)
            except STORE_ERRORS:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def states(self, ids: Iterable[UUID]) -> dict[UUID, str]:
        rows = await self.fetch("SELECT id, state FROM jobs WHERE id = ANY($1::uuid[])", list(ids))
        return {row["id"]: row["state"] for row in rows}

    async def wait_state(self, job_id: UUID, states: set[str], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = (await self.states([job_id])).get(job_id)
            if state in states:
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is {state} after {timeout:g}s, wanted {states}")
            await asyncio.sleep(0.05)

    async def open_executions(self, pid: int) -> list[UUID]:
        rows = await self.fetch(
            "SELECT job_id FROM fault_ledger WHERE pid = $1 AND ended_at IS NULL", pid
        )
        return [row["job_id"] for row in rows]

    async def wait_busy(self, process: Proc, timeout: float = 20.0) -> list[UUID]:
        """Jobs `process` is running right now (at least one), waiting for some if needed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = await self.open_executions(process.pid)
            if running:
                return running
            await asyncio.sleep(0.05)
        return []

    # --- load, probes, drain ---------------------------------------------------------

    def start_load(self) -> asyncio.Task[None]:
        task = asyncio.create_task(self.load.run())
        self._tasks.append(task)
        return task

    async def enqueue(self, kind: str, queue: str | None = None, **payload: Any) -> UUID:
        """One extra job of `kind` (payload fields override the plan's), accepted or raise."""
        job = self.load.next_job(kind)
        job.body["payload"].update(payload)
        if queue is not None:
            job.body["queue"] = queue
        async with httpx.AsyncClient(base_url=self.cluster.api_url, timeout=10) as client:
            await self.load.submit(client, job)
        if job.job_id is None:
            raise AssertionError(f"the API never accepted {kind} job {job.key}")
        return UUID(job.job_id)

    async def probe(self, timeout: float = PROBE_TIMEOUT) -> float:
        """Seconds for a fresh job to be accepted and to succeed."""
        began = time.monotonic()
        job_id = await self.enqueue("probe")
        await self.wait_state(job_id, {"SUCCEEDED"}, timeout - (time.monotonic() - began))
        return time.monotonic() - began

    async def recovered(self, record: FaultRecord) -> None:
        """Measure recovery after a healed service fault: a fresh job must succeed."""
        try:
            await self.probe()
        except AssertionError as exc:
            record.checks.append(Check("recovers by itself", False, str(exc)))
            return
        assert record.healed is not None
        record.recovery = time.time() - record.healed
        record.basis = "heal -> new job succeeded"

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> float | None:
        """Wait until every accepted job ended and nothing is due; seconds, or None."""
        self.proxy.heal_all()
        began = time.monotonic()
        accepted = [UUID(job_id) for job_id in self.accepted()]
        while time.monotonic() - began < timeout:
            [row] = await self.fetch(
                "SELECT"
                " count(*) FILTER (WHERE state = 'RUNNING') AS running,"
                " count(*) FILTER (WHERE state IN ('PENDING', 'FAILED')"
                "   AND next_run_at <= now()) AS due,"
                " count(*) FILTER (WHERE id = ANY($1::uuid[])"
                "   AND state NOT IN ('SUCCEEDED', 'DLQ', 'CANCELLED')) AS open"
                " FROM jobs",
                accepted,
            )
            if row["running"] == row["due"] == row["open"] == 0:
                return time.monotonic() - began
            await asyncio.sleep(0.2)
        return None

    def accepted(self) -> dict[str, Submitted]:
        return self.load.accepted

    # --- the end ---------------------------------------------------------------------

    async def finish(self) -> ScenarioResult:
        """Drain, stop the processes, check every invariant and build the result."""
        self.say("load done, healing and draining")
        drain = await self.drain()
        self.say(f"drained in {drain:.1f}s" if drain is not None else "NOT drained in time")
        crashed = self.cluster.crashed()
        self._stopping.set()
        # Stopped as an operator would: a worker ends its handlers within its shutdown grace
        # (2 s) and writes their ledger rows; one SIGKILLed here would leave a row open, so the
        # wait before that is long enough for a busy machine to finish the stop.
        await asyncio.to_thread(self.cluster.stop_all, STOP_GRACE)
        snapshot = await read_snapshot(self.cluster.direct_dsn)
        accepted = {UUID(job_id): job.kind for job_id, job in self.accepted().items()}
        killed = {
            p.pid: datetime.fromtimestamp(p.killed, UTC)
            for p in self.cluster.processes
            if p.killed is not None
        }
        cancelled = [
            UUID(job_id) for job_id, job in self.accepted().items() if job.cancel_status == 200
        ]
        verdicts, tally = check(snapshot, accepted, self.observations, killed, cancelled)
        self._victim_recovery(snapshot)
        checks = [*self.checks]
        checks.append(self._api_check())
        checks.append(
            Check(
                "no process crashed",
                not crashed,
                "; ".join(f"{p.role} {p.slot} pid {p.pid}:\n{p.tail(15)}" for p in crashed)
                or f"{len(self.cluster.processes)} processes, only those killed on purpose died",
            )
        )
        if self.load.errors:
            checks.append(Check("client requests answered", False, "; ".join(self.load.errors[:5])))
        for record in self.faults:
            checks += [Check(f"{record.kind}: {c.name}", c.ok, c.detail) for c in record.checks]
            if record.recovery is None:
                checks.append(Check(f"{record.kind}: recovered", False, "no recovery measured"))
        return ScenarioResult(
            name=self.scenario.name,
            summary=self.scenario.summary,
            seed=self.seed,
            duration=self.elapsed(),
            verdicts=verdicts,
            checks=checks,
            tally=tally,
            faults=self.faults,
            statuses=self.statuses + self.load.statuses,
            drain=drain,
            logs=self.logs,
        )

    def _api_check(self) -> Check:
        statuses = self.statuses + self.load.statuses
        total = sum(statuses.values())
        errors = {code: n for code, n in statuses.items() if code >= 500 and code != 503}
        shown = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
        return Check(
            "API never answers 5xx other than 503", not errors, f"{total} answers ({shown})"
        )

    def _victim_recovery(self, snapshot: Snapshot) -> None:
        for record in self.faults:
            if not record.victims or record.recovery is not None:
                continue
            injected = datetime.fromtimestamp(record.injected, UTC)
            worst = 0.0
            for victim in record.victims:
                candidates = [
                    e.started_at
                    for e in snapshot.executions
                    if e.job_id == victim and e.started_at > injected and e.pid != record.pid
                ]
                changes = [h for h in snapshot.history if h.job_id == victim]
                candidates += [h.at for h in changes if h.at > injected and h.to_state in TERMINAL]
                if any(h.at <= injected and h.to_state in TERMINAL for h in changes[-1:]):
                    candidates.append(injected)
                if not candidates:
                    record.checks.append(
                        Check("victims recovered", False, f"{victim} never ran again")
                    )
                    break
                worst = max(worst, (min(candidates) - injected).total_seconds())
            else:
                record.recovery = worst
                record.basis = "fault -> every victim running elsewhere or ended"


def peak(values: list[int]) -> int:
    return max(values) if values else 0
