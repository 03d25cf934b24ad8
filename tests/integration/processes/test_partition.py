"""Many hosts and a network partition: a worker cut off while it runs jobs, then healed.

The API, two workers and the scheduler each run in a Linux network namespace of their own
(tests/namespaces.py), the "hosts" of a private network inside this machine, and reach a
private Postgres and Redis that listen on the network's bridge. Jobs sleep for a set time
(async and sync handlers) and record every execution in a file per worker. Once the first
worker runs both a job that will end within its lease and one that will outlive it, its
link is taken down for longer than the jobs' visibility timeout, then put back.

What must hold: the scheduler re-queues the cut-off worker's jobs and the other worker runs
them within twice the visibility timeout of the cut; the cut-off worker stops every job
whose lease it can no longer renew once that lease has run out, so that no job runs on two
hosts for longer than a heartbeat interval; results it produced during the cut are refused
by the lease token when it can reach the store again; nothing is lost or left stuck, and
the healed worker takes jobs again.

Needs root (network namespaces) besides the Postgres and Redis binaries; skips and says why
where they are missing or not permitted, except under CI=true, where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import asyncpg
import httpx
import pytest

from tests.namespaces import NamespacesUnavailable, PrivateNetwork
from tests.servers import PrivatePostgres, PrivateRedis, ServicesUnavailable
from tests.support import free_port, wait_until_healthy

from .conftest import SUPPORT, Process, Stack, run_migrate

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

VISIBILITY_TIMEOUT = 3.0
HEARTBEAT_INTERVAL = VISIBILITY_TIMEOUT / 3
CONCURRENCY = 8
DURATIONS = (0.6, 1.5, 5.0, 2.5, 1.0)
"""Seconds the jobs sleep, in turn: some end within a lease, some outlive it. An odd count,
so that each worker gets every kind while the two take turns at the ready queue."""
FEED_RATE = 2.0
"""Jobs per second: about 5 of the 16 slots busy, so that either worker alone can take the
other's jobs over at once."""
QUEUE = "partition"
DEADLINE = 40.0


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the partition test must run)")
    pytest.skip(reason)


@dataclass(frozen=True)
class Execution:
    """One attempt as a worker's ledger file records it (wall-clock times)."""

    job: str
    attempt: int
    started: float
    ended: float | None
    outcome: str | None


def executions(ledger: Path) -> list[Execution]:
    if not ledger.exists():
        return []
    starts: dict[tuple[str, int], float] = {}
    ends: dict[tuple[str, int], tuple[float, str]] = {}
    *complete, _being_written = ledger.read_text().split("\n")  # each record ends a line
    for line in complete:
        record = json.loads(line)
        key = (record["job"], record["attempt"])
        if record["event"] == "start":
            starts[key] = record["at"]
        else:
            ends[key] = (record["at"], record["outcome"])
    return [
        Execution(
            job=job,
            attempt=attempt,
            started=started,
            ended=ends[(job, attempt)][0] if (job, attempt) in ends else None,
            outcome=ends[(job, attempt)][1] if (job, attempt) in ends else None,
        )
        for (job, attempt), started in starts.items()
    ]


@dataclass
class Hosts:
    network: PrivateNetwork
    postgres: PrivatePostgres
    redis: PrivateRedis
    stack: Stack

    def start(self, host: str, role: str, *args: str, **env: str) -> Process:
        return self.stack.start_via(self.network.command(host), None, role, *args, **env)

    def ledger(self, host: str) -> Path:
        return self.stack.logs / f"{host}.jsonl"

    def start_worker(self, host: str) -> Process:
        return self.start(
            host, "worker", "--handlers", "taskforge_partition", LEDGER_FILE=str(self.ledger(host))
        )

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{self.network.gateway}:{self.postgres.port}/postgres"


@pytest.fixture
def network() -> Iterator[PrivateNetwork]:
    try:
        network = PrivateNetwork.create(["api", "w1", "w2", "sch"])
    except NamespacesUnavailable as exc:
        _unavailable(f"cannot build a private network of hosts: {exc}")
    try:
        yield network
    finally:
        network.remove()


@pytest.fixture
def hosts(
    network: PrivateNetwork, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Hosts]:
    servers: list[PrivatePostgres | PrivateRedis] = []
    stack: Stack | None = None
    try:
        postgres = PrivatePostgres.create(
            {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
            networks=(network.gateway_interface,),
        )
        servers.append(postgres)
        redis = PrivateRedis.create(also_bind=(network.gateway,))
        servers.append(redis)
    except ServicesUnavailable as exc:
        for server in servers:
            server.remove()
        _unavailable(f"cannot start private Postgres and Redis: {exc}")
    try:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("POSTGRES_", "REDIS_", "API_TOKEN"))
        }
        env.update(
            PYTHONPATH=os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
            POSTGRES_DSN=f"postgresql://postgres@{network.gateway}:{postgres.port}/postgres",
            REDIS_ADDR=f"{network.gateway}:{redis.port}",
            QUEUE_NAME=QUEUE,
            WORKER_CONCURRENCY=str(CONCURRENCY),
            SCHEDULER_TICK="0.1",
            REPUBLISH_AFTER="2",
            LOG_LEVEL="info",
            LOG_FORMAT="json",
        )
        stack = Stack(dsn=env["POSTGRES_DSN"], env=env, logs=tmp_path)
        yield Hosts(network, postgres, redis, stack)
    finally:
        if stack is not None:
            stack.stop_all()
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                for process in stack.processes:
                    print(f"--- {process.role} (pid {process.pid}) ---\n{process.tail()}")
        for server in servers:
            server.remove()


async def poll(what: str, check: Callable[[], Awaitable[bool]], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


async def states(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT state, count(*) AS n FROM jobs GROUP BY state")
    finally:
        await conn.close()
    return {row["state"]: row["n"] for row in rows}


@dataclass
class Feed:
    """Enqueues jobs at FEED_RATE, their durations and handlers in turn, until stopped."""

    client: httpx.AsyncClient
    seconds: dict[str, float] = field(default_factory=dict)
    """Job id -> how long it sleeps."""
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def enqueue(self, key: str, duration: float, sync: bool) -> None:
        body = {
            "jobType": "partition_sleep_sync" if sync else "partition_sleep",
            "queue": QUEUE,
            "payload": {"seconds": duration},
            "visibilityTimeout": VISIBILITY_TIMEOUT,
            "maxAttempts": 5,
            "idempotencyKey": key,
        }
        response = await self.client.post("/jobs", json=body)
        assert response.status_code == 201, response.text
        self.seconds[response.json()["id"]] = duration

    async def run(self) -> None:
        started = time.monotonic()
        number = 0
        while not self.stop.is_set():
            await self.enqueue(
                f"feed-{number}", DURATIONS[number % len(DURATIONS)], number % 3 == 1
            )
            number += 1
            await asyncio.sleep(max(0.0, started + number / FEED_RATE - time.monotonic()))


async def test_a_worker_cut_off_by_a_partition_stops_its_jobs_and_another_runs_them(
    hosts: Hosts,
) -> None:
    migrated = await run_migrate(hosts.stack.env)
    assert migrated.returncode == 0, migrated.stderr
    api_address = f"{hosts.network.hosts['api'].address}:{free_port()}"
    api = hosts.start("api", "api", HTTP_ADDR=api_address, LOG_LEVEL="warn")
    cut_off, other = hosts.start_worker("w1"), hosts.start_worker("w2")
    hosts.start("sch", "scheduler")
    api_url = f"http://{api_address}"
    await wait_until_healthy(api_url, lambda: api.popen.poll() is None, api.tail, DEADLINE)

    async def workers_ready() -> bool:
        return all("worker serving" in worker.log.read_text() for worker in (cut_off, other))

    await poll("the workers to start", workers_ready)

    async with httpx.AsyncClient(base_url=api_url, timeout=10) as client:
        feed = Feed(client)
        feeding = asyncio.create_task(feed.run())
        try:
            cutting_at, cut_at, healed_at, recovered_at, back_at = await partition(hosts, feed)
        finally:
            feed.stop.set()
            await feeding
        seconds = feed.seconds

    async def all_succeeded() -> bool:
        return await states(hosts.dsn) == {"SUCCEEDED": len(seconds)}

    try:
        await poll("every job to succeed", all_succeeded)
    except AssertionError:
        raise AssertionError(f"jobs by state: {await states(hosts.dsn)}") from None

    held = stranded(hosts, cut_at)
    stopped = [run for run in held if run.outcome == "interrupted"]
    late = [run for run in held if run.outcome == "returned"]
    assert stopped, f"no job was running past its lease at the cut: {held}"
    assert late, f"no job ended during the cut: {held}"
    assert all(run.ended is not None for run in held), held

    # Stopped once the lease ran out: a lease runs from its last renewal's sending, which
    # came before the cut took effect (measured from after it: no later than that plus the
    # lease), and at most a heartbeat interval, the heartbeat's tick (0.25 s) and a round trip
    # before the cut began.
    stopped_after = [run.ended - cut_at for run in stopped if run.ended is not None]
    stopped_from = [run.ended - cutting_at for run in stopped if run.ended is not None]
    assert max(stopped_after) <= VISIBILITY_TIMEOUT + 0.5, stopped_after
    assert min(stopped_from) >= VISIBILITY_TIMEOUT - HEARTBEAT_INTERVAL - 0.25 - 0.5, stopped_from

    # No job ran on both hosts longer than a heartbeat interval.
    overlaps = []
    for run in held:
        again = rerun(hosts, run.job, cut_at)
        assert again is not None and run.ended is not None
        assert again.attempt > run.attempt
        overlaps.append(run.ended - again.started)
    assert max(overlaps) < HEARTBEAT_INTERVAL, overlaps

    # Recovery: the last of the jobs w1 held runs again on w2 within 2x the visibility timeout.
    recovery = recovered_at - cut_at
    assert recovery <= 2 * VISIBILITY_TIMEOUT, recovery

    # Results w1 produced during the cut reached the store after the heal and were refused.
    async def late_results_refused() -> bool:
        log = cut_off.log.read_text()
        return all(f"job {run.job}: settle refused" in log for run in late)

    await poll("w1's late results to be refused", late_results_refused)
    conn = await asyncpg.connect(hosts.dsn)
    try:
        finals = {
            str(row["id"]): row["attempt_count"]
            for row in await conn.fetch(
                "SELECT id, attempt_count FROM jobs WHERE id = ANY($1::uuid[])",
                [run.job for run in held],
            )
        }
    finally:
        await conn.close()
    for run in held:
        again = rerun(hosts, run.job, cut_at)
        assert again is not None
        assert finals[run.job] >= again.attempt > run.attempt  # w2's attempt settled it
    for process in hosts.stack.processes:
        assert process.popen.poll() is None, process.tail()
    print(
        f"partition: w1 cut off {healed_at - cut_at:.1f} s (visibility timeout"
        f" {VISIBILITY_TIMEOUT:g} s) holding {len(held)} jobs: {len(stopped)} stopped"
        f" {min(stopped_after):.2f}-{max(stopped_after):.2f} s after the cut, {len(late)}"
        f" ended during it and refused after the heal; w2 ran the last of them {recovery:.2f} s"
        f" after the cut (limit {2 * VISIBILITY_TIMEOUT:g} s); longest overlap on two hosts"
        f" {max(overlaps):.2f} s (negative: none); w1 ran jobs again"
        f" {back_at - healed_at:.2f} s after the heal; {len(seconds)} jobs, all succeeded"
    )


def stranded(hosts: Hosts, cut_at: float) -> list[Execution]:
    """The attempts w1 was running when it was cut off."""
    return [
        run
        for run in executions(hosts.ledger("w1"))
        if run.started < cut_at and (run.ended is None or run.ended > cut_at)
    ]


def rerun(hosts: Hosts, job: str, cut_at: float) -> Execution | None:
    """The first attempt of `job` w2 started after the cut."""
    later = [
        run for run in executions(hosts.ledger("w2")) if run.job == job and run.started > cut_at
    ]
    return min(later, key=lambda run: run.started) if later else None


async def partition(hosts: Hosts, feed: Feed) -> tuple[float, float, float, float, float]:
    """Cut w1 off while it runs a job that ends within its lease and one that outlives it;
    heal it once w2 runs every job w1 held and a visibility timeout and a half has passed.
    Returns when the cut began and when it had taken effect, when w1 was healed, when the
    last of its jobs started again on w2, and when w1 started a job again after the heal
    (wall clock)."""

    async def both_kinds_running() -> bool:
        now = time.time()
        # A worker can start a job before the feed has read its id from the 201: such a job
        # is counted at the next look.
        left = [
            feed.seconds[run.job] - (now - run.started)
            for run in executions(hosts.ledger("w1"))
            if run.ended is None and run.job in feed.seconds
        ]
        return any(0.8 < s < 1.5 for s in left) and any(s > VISIBILITY_TIMEOUT + 0.5 for s in left)

    await poll("w1 to run a short and a long job at once", both_kinds_running)
    cutting_at = time.time()
    hosts.network.cut("w1")
    cut_at = time.time()

    async def taken_over() -> bool:
        return all(rerun(hosts, run.job, cut_at) for run in stranded(hosts, cut_at))

    await poll("w2 to run every job w1 held at the cut", taken_over, 3 * VISIBILITY_TIMEOUT)
    recovered_at = max(
        again.started
        for run in stranded(hosts, cut_at)
        if (again := rerun(hosts, run.job, cut_at)) is not None
    )
    # Cut off longer than a lease in any case: a set length of the fault, not a wait for a state.
    await asyncio.sleep(max(0.0, cut_at + 1.5 * VISIBILITY_TIMEOUT - time.time()))
    hosts.network.heal("w1")
    healed_at = time.time()

    async def w1_runs_again() -> bool:
        return any(run.started > healed_at for run in executions(hosts.ledger("w1")))

    await poll("w1 to run jobs again after the heal", w1_runs_again)
    back_at = min(run.started for run in executions(hosts.ledger("w1")) if run.started > healed_at)
    return cutting_at, cut_at, healed_at, recovered_at, back_at
