"""The faults, each an async function on a `Run` that injects, heals and records itself.

Worker faults name their victims (the jobs the worker held, or the hints it had just
popped) so recovery is measured per job afterwards; service faults measure recovery as
the time from the heal until a freshly enqueued job succeeds. Service faults hold the
run's service lock, so two of them never overlap; worker faults may overlap them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import httpx
import redis.exceptions

from taskforge.entrypoints.http.routes import READINESS_TIMEOUT
from tests.faults.cluster import QUEUE, REDIS_PREFIX
from tests.faults.harness import (
    REPUBLISH_AFTER,
    REQUEST_DEADLINE,
    UUID_PATTERN,
    VISIBILITY_TIMEOUT,
    Check,
    FaultRecord,
    Run,
)
from tests.faults.proxy import Trap

DEADLINE_MARGIN = 1.5
"""Seconds an answer may arrive after its deadline during a hung-dependency fault: the
event loop noticing the deadline, the way back, a busy machine."""
RECONCILE_WITHIN = 2.0
"""Seconds after the scheduler's first sweep on an empty Redis (the moment it sets the epoch
key again) by which every due PENDING job must have a hint again or have moved on."""


async def _wait_exit(run: Run, slot: str) -> None:
    process = run.cluster.current(slot)
    await asyncio.to_thread(process.popen.wait, 10)


# --- workers -------------------------------------------------------------------------


async def kill_worker_mid_handler(run: Run, slot: str) -> FaultRecord:
    """SIGKILL a worker while its handlers run (seen in the ledger), then start a new one."""
    process = run.cluster.current(slot)
    running = await run.wait_busy(process)
    process.signal(signal.SIGKILL)
    record = run.fault("kill -9 mid-handler", f"{slot} pid {process.pid}", pid=process.pid)
    record.victims = running
    await _wait_exit(run, slot)
    await run.cluster.restart_worker(slot)
    run.heal(record, f"{len(running)} job(s) were running; new worker started")
    if not running:
        record.checks.append(Check("worker was busy", False, "no running handler to interrupt"))
    return record


async def kill_worker_after_pop(run: Run, slot: str, timeout: float = 20.0) -> FaultRecord:
    """SIGKILL a worker right after Redis handed it job ids, before it could claim them.

    The worker's Redis route holds a trap: the first reply carrying a job id is swallowed
    and the worker is killed before a byte of it is delivered. Redis has already removed
    those hints, so the jobs stay PENDING with no hint until the scheduler re-publishes
    them (REPUBLISH_AFTER).
    """
    process = run.cluster.current(slot)
    popped: list[UUID] = []
    sprung = asyncio.Event()

    def spring(matches: list[bytes]) -> None:
        process.signal(signal.SIGKILL)
        popped.extend(UUID(match.decode()) for match in matches)
        sprung.set()

    route = run.proxy[f"redis:{slot}"]
    route.trap = Trap(UUID_PATTERN, spring)
    armed = time.time()
    try:
        await asyncio.wait_for(sprung.wait(), timeout)
    except TimeoutError:
        route.trap = None
        record = run.fault("kill -9 after pop", f"{slot} (trap never sprang)", pid=process.pid)
        record.checks.append(Check("trap sprang", False, f"no hint reached {slot} in {timeout}s"))
        record.recovery = 0.0
        run.heal(record)
        return record
    record = run.fault("kill -9 after pop", f"{slot} pid {process.pid}", pid=process.pid)
    record.injected = process.killed or record.injected
    record.victims = popped
    running = await run.open_executions(process.pid)
    await _wait_exit(run, slot)
    states = await run.states(popped)
    # Only executions that started once the trap was armed: the same worker may have run
    # an earlier attempt of a popped job (a retry) before.
    executed = await run.fetch(
        "SELECT job_id FROM fault_ledger WHERE pid = $1 AND job_id = ANY($2::uuid[])"
        " AND started_at >= $3",
        process.pid,
        popped,
        datetime.fromtimestamp(armed, UTC),
    )
    # A worker's lease owner is host:pid:suffix.
    held = await run.fetch(
        "SELECT id FROM jobs WHERE id = ANY($1::uuid[]) AND state = 'RUNNING'"
        " AND split_part(lease_owner, ':', 2) = $2",
        popped,
        str(process.pid),
    )
    record.checks.append(
        Check(
            "popped jobs were not claimed by the killed worker",
            not executed and not held,
            f"{len(popped)} popped after {record.injected - armed:.2f}s armed; states"
            f" right after the kill: {dict(Counter(states.values()))}",
        )
    )
    await run.cluster.restart_worker(slot)
    run.heal(
        record,
        f"popped {len(popped)} hint(s), {len(running)} handler(s) running; new worker started",
    )
    return record


async def stop_worker(run: Run, slot: str, hold: float | None = None) -> FaultRecord:
    """SIGSTOP a busy worker for longer than its leases last, then SIGCONT it (a zombie).

    Its leases expire and are reaped; other workers re-run the jobs; when it wakes, its late
    heartbeats and settlements must be refused (the fencing checks in the invariants)."""
    hold = hold if hold is not None else VISIBILITY_TIMEOUT * 2 + 1
    process = run.cluster.current(slot)
    running = await run.wait_busy(process)
    process.signal(signal.SIGSTOP)
    record = run.fault("SIGSTOP past lease", f"{slot} pid {process.pid}", pid=process.pid)
    record.victims = running
    await asyncio.sleep(hold)
    process.signal(signal.SIGCONT)
    run.heal(record, f"held {hold:.0f}s with {len(running)} job(s)")
    if not running:
        record.checks.append(Check("worker was busy", False, "no running handler to freeze"))
    return record


# --- Redis ---------------------------------------------------------------------------


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _reconcile(run: Run, record: FaultRecord) -> None:
    """Every job that is PENDING and due once Redis is back must get a hint again (or move
    on) within one scheduler sweep of the scheduler noticing the loss."""
    assert record.healed is not None
    due = [
        row["id"]
        for row in await run.fetch(
            "SELECT id FROM jobs WHERE state = 'PENDING' AND next_run_at <= now()"
        )
    ]
    swept: float | None = None
    deadline = time.time() + 30
    waiting: set[UUID] = set(due)
    while time.time() < deadline:
        if swept is None and await run.redis.exists(f"{REDIS_PREFIX}epoch"):
            swept = time.time()
        hinted = {UUID(_text(raw)) for raw in await run.redis.lrange(QUEUE, 0, -1)}
        moved = {
            row["job_id"]
            for row in await run.fetch(
                "SELECT DISTINCT job_id FROM fault_history"
                " WHERE job_id = ANY($1::uuid[]) AND at > to_timestamp($2)",
                list(waiting),
                record.healed,
            )
        }
        waiting -= hinted | moved
        if swept is not None and not waiting:
            break
        await asyncio.sleep(0.02)
    done = time.time()
    within = swept is not None and not waiting and done - swept <= RECONCILE_WITHIN
    record.checks.append(
        Check(
            "Redis reconciled",
            within,
            f"{len(due)} due PENDING job(s) after the heal; "
            + (
                f"all dispatched again {done - swept:.2f}s after the first sweep"
                f" ({swept - record.healed:.2f}s after the heal)"
                if swept is not None and not waiting
                else f"{len(waiting)} still without a hint; sweep seen: {swept is not None}"
            ),
        )
    )


async def redis_restart(run: Run, down_for: float = 3.0) -> FaultRecord:
    """SHUTDOWN NOSAVE, stay down a while (the API must keep accepting jobs), restart empty."""
    async with run.service_lock:
        before = {p.pid for p in run.cluster.processes if p.alive()}
        record = run.fault("Redis SHUTDOWN NOSAVE", f"redis pid {run.services.redis.pid}")
        # The server closes the connection as it goes.
        with contextlib.suppress(redis.exceptions.ConnectionError):
            await run.redis.shutdown(nosave=True)
        await asyncio.to_thread(run.services.redis.wait_exit)
        statuses = await _hammer(run, down_for, post=True)
        await asyncio.to_thread(run.services.redis.start)
        run.heal(record, f"down {down_for:g}s, restarted empty")
        record.checks.append(
            Check(
                "API accepts jobs while Redis is down",
                statuses.get(201, 0) > 0 and statuses.get(500, 0) == 0,
                _counts(statuses),
            )
        )
        await _reconcile(run, record)
        await run.recovered(record)
        await _reconnected(run, record, before)
    return record


async def redis_flush(run: Run, backlog: float = 1.5) -> FaultRecord:
    """FLUSHALL mid-run: every hint and the epoch key vanish at once.

    So that there are hints to lose, the workers' Redis routes are stalled for `backlog`
    seconds first (the API keeps enqueueing; the hints pile up), then Redis is flushed and
    the workers let through again: those jobs are due and PENDING with no hint anywhere."""
    async with run.service_lock:
        workers = [run.proxy[f"redis:{slot}"] for slot in run.cluster.worker_specs]
        for route in workers:
            route.stall()
        await asyncio.sleep(backlog)
        depth = await run.redis.llen(QUEUE)
        record = run.fault("Redis FLUSHALL", f"redis ({depth} hints queued)")
        await run.redis.flushall()
        for route in workers:
            route.resume()
        run.heal(record)
        await _reconcile(run, record)
        await run.recovered(record)
    return record


async def redis_pause(run: Run, seconds: float = 6.0) -> FaultRecord:
    """CLIENT PAUSE ALL: every command blocks (past the clients' 5 s socket timeout)."""
    async with run.service_lock:
        record = run.fault("Redis CLIENT PAUSE", f"{seconds:g}s")
        await run.redis.client_pause(int(seconds * 1000), all=True)
        statuses = await _hammer(run, seconds, post=True)
        run.heal(record)
        record.checks.append(
            Check("API answers while Redis is paused", statuses.get(500, 0) == 0, _counts(statuses))
        )
        await run.recovered(record)
    return record


# --- Postgres ------------------------------------------------------------------------


async def _hammer(run: Run, seconds: float, *, post: bool) -> Counter[int]:
    """Call the API for `seconds` as a client would during an outage; count the answers.
    A POST that is accepted counts as an accepted job like any other."""
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    known = next(iter(run.accepted()), None)
    async with httpx.AsyncClient(base_url=run.cluster.api_url, timeout=10) as client:
        while time.monotonic() < deadline:
            requests = [client.get("/readyz")]
            if known is not None:
                requests.append(client.get(f"/jobs/{known}"))
            body = None
            if post:
                job = run.load.next_job("probe")
                body = {**job.body, "idempotencyKey": job.key}
                requests.append(client.post("/jobs", json=body))
            answers = await asyncio.gather(*requests, return_exceptions=True)
            for answer in answers:
                if isinstance(answer, httpx.Response):
                    statuses[answer.status_code] += 1
                    run.statuses[answer.status_code] += 1
                    if answer.request.method == "POST" and answer.status_code in (200, 201):
                        job.job_id = str(answer.json()["id"])
                        job.accepted_at = time.time()
                elif isinstance(answer, httpx.TransportError):
                    statuses[0] += 1
                elif isinstance(answer, BaseException):
                    raise answer
            await asyncio.sleep(0.2)
    return statuses


async def _reconnected(run: Run, record: FaultRecord, before: set[int]) -> None:
    """The processes that were up before the fault are still up (no restart), every worker
    among them ran a job after the heal, and the scheduler promoted a retry after it.
    Processes the suite killed meanwhile (overlapping worker faults) are left out."""
    assert record.healed is not None
    deadline = time.monotonic() + 20
    worked: set[int] = set()
    promoted = 0

    def expected() -> set[int]:
        return {p.pid for p in run.cluster.workers() if p.pid in before and p.killed is None}

    failing_sent = False
    while time.monotonic() < deadline:
        rows = await run.fetch(
            "SELECT DISTINCT pid FROM fault_ledger"
            " WHERE started_at > to_timestamp($1) AND pid = ANY($2::int[])",
            record.healed,
            list(expected()),
        )
        worked = {row["pid"] for row in rows}
        [row] = await run.fetch(
            "SELECT count(*) AS n FROM fault_history WHERE at > to_timestamp($1)"
            " AND from_state = 'FAILED' AND to_state = 'PENDING'",
            record.healed,
        )
        promoted = row["n"]
        if worked >= expected() and promoted:
            break
        # The load may have ended by the heal on a slow machine: work of the check's own, a
        # job while a worker has not run one (Redis hands it to the pop blocked longest,
        # an idle worker's) and one that fails once, for the scheduler to promote its retry.
        try:
            if not worked >= expected():
                await run.enqueue("probe")
            if not promoted and not failing_sent:
                await run.enqueue("flaky", fail=[1])
                failing_sent = True
        except AssertionError:
            pass  # not accepted: the check below says what did not happen
        await asyncio.sleep(0.2)
    survivors = {p.pid for p in run.cluster.processes if p.alive() or p.killed is not None}
    workers = expected()
    record.checks.append(
        Check(
            "processes carry on without a restart",
            before <= survivors and worked >= workers and promoted > 0,
            f"{len(before & survivors)}/{len(before)} processes still up; {len(worked)}/"
            f"{len(workers)} workers ran jobs after the heal; the scheduler promoted"
            f" {promoted} retr(y/ies)",
        )
    )


def _counts(statuses: Counter[int]) -> str:
    return ", ".join(
        f"{'no answer' if code == 0 else code}: {n}" for code, n in sorted(statuses.items())
    )


async def postgres_restart(run: Run) -> FaultRecord:
    """`pg_ctl restart -m immediate`: a crash and crash recovery under the running cluster;
    every process must reconnect on its own (same pids)."""
    async with run.service_lock:
        before = {p.pid for p in run.cluster.processes if p.alive()}
        record = run.fault("Postgres restart -m immediate", "postgres")
        watcher = asyncio.create_task(_hammer(run, 2.0, post=False))
        await asyncio.to_thread(run.services.postgres.restart, "immediate")
        run.heal(record)
        statuses = await watcher
        await run.recovered(record)
        await _reconnected(run, record, before)
        record.checks.append(
            Check("API answers 503, never 500", statuses.get(500, 0) == 0, _counts(statuses))
        )
    return record


async def postgres_outage(run: Run, down_for: float = 4.0) -> FaultRecord:
    """`pg_ctl stop -m immediate`, `down_for` seconds down, start again: while it is down the
    API answers 503 (not 500) to reads and writes and /readyz says so; afterwards it and the
    workers and scheduler carry on without a restart."""
    async with run.service_lock:
        before = {p.pid for p in run.cluster.processes if p.alive()}
        record = run.fault("Postgres down (stop -m immediate)", f"{down_for:g}s")
        await asyncio.to_thread(run.services.postgres.stop, "immediate")
        statuses = await _hammer(run, down_for, post=True)
        await asyncio.to_thread(run.services.postgres.start)
        run.heal(record)
        record.checks.append(
            Check(
                "API answers 503 while Postgres is down, never 500",
                statuses.get(503, 0) > 0 and statuses.get(500, 0) == 0,
                _counts(statuses),
            )
        )
        await run.recovered(record)
        await _reconnected(run, record, before)
    return record


# --- hung dependencies: every answer within its deadline ------------------------------


@dataclass(frozen=True, slots=True)
class Timed:
    """One request made while a dependency hangs, and how it was answered."""

    route: str
    status: int
    """0: no answer at all (the client gave up or the connection broke)."""
    seconds: float
    shape_ok: bool
    """A success, or 503 `not_ready` (with Retry-After, except on /readyz)."""


_PROBE_CLIENT_TIMEOUT = REQUEST_DEADLINE + 15
"""Far beyond the deadline, so a late answer is measured rather than cut off."""


def _limit(route: str) -> float:
    return READINESS_TIMEOUT if route == "GET /readyz" else REQUEST_DEADLINE


def _shape_ok(route: str, response: httpx.Response) -> bool:
    if response.status_code < 300:
        return True
    if response.status_code != 503:
        return False
    try:
        code = response.json().get("code")
    except ValueError:
        return False
    return code == "not_ready" and (route == "GET /readyz" or "retry-after" in response.headers)


async def _timed_calls(run: Run, seconds: float, callers: int = 4) -> list[Timed]:
    """`callers` concurrent clients cycle through the API's routes (reads, the probes,
    /stats and /metrics, enqueues) for `seconds`, timing every answer."""
    known = next(iter(run.accepted()), None)
    routes = ["GET /readyz", "POST /jobs", "GET /stats", "GET /metrics", "GET /jobs"]
    if known is not None:
        routes.append("GET /jobs/{id}")
    calls: list[Timed] = []
    deadline = time.monotonic() + seconds

    async def one(client: httpx.AsyncClient, route: str) -> None:
        method, path = route.split(" ")
        job = None
        body = None
        if method == "POST":
            job = run.load.next_job("probe")
            body = {**job.body, "idempotencyKey": job.key}
        elif path == "/jobs/{id}":
            path = f"/jobs/{known}"
        began = time.monotonic()
        try:
            response = await client.request(method, path, json=body)
        except httpx.TransportError:
            calls.append(Timed(route, 0, time.monotonic() - began, False))
            return
        calls.append(
            Timed(route, response.status_code, time.monotonic() - began, _shape_ok(route, response))
        )
        run.statuses[response.status_code] += 1
        if job is not None and response.status_code in (200, 201):
            job.job_id = str(response.json()["id"])
            job.accepted_at = time.time()

    async def caller(start: int) -> None:
        async with httpx.AsyncClient(
            base_url=run.cluster.api_url, timeout=_PROBE_CLIENT_TIMEOUT
        ) as client:
            for route in itertools.islice(itertools.cycle(routes), start, None):
                if time.monotonic() >= deadline:
                    return
                await one(client, route)
                await asyncio.sleep(0.1)

    await asyncio.gather(*(caller(index) for index in range(callers)))
    return calls


def _judge_deadlines(record: FaultRecord, calls: list[Timed]) -> None:
    """The checks of a hung-dependency fault: the fault was felt (/readyz said not ready),
    every answer came within its deadline plus DEADLINE_MARGIN, and each was a success or
    a 503 `not_ready` a client can retry."""
    by_route: dict[str, list[Timed]] = {}
    for call in calls:
        by_route.setdefault(call.route, []).append(call)
    summary = "; ".join(
        f"{route}: {len(timed)} answered in <= {max(t.seconds for t in timed):.2f}s ("
        + _counts(Counter(t.status for t in timed))
        + ")"
        for route, timed in sorted(by_route.items())
    )
    readyz = by_route.get("GET /readyz", [])
    record.checks.append(
        Check(
            "/readyz says not ready during the fault",
            any(call.status == 503 for call in readyz),
            _counts(Counter(call.status for call in readyz)),
        )
    )
    late = [c for c in calls if c.status == 0 or c.seconds > _limit(c.route) + DEADLINE_MARGIN]
    record.checks.append(
        Check(
            f"every answer within its deadline (REQUEST_DEADLINE {REQUEST_DEADLINE:g}s,"
            f" /readyz {READINESS_TIMEOUT:g}s; + {DEADLINE_MARGIN:g}s)",
            bool(calls) and not late,
            (
                "late or unanswered: "
                + ", ".join(f"{c.route} {c.status or 'no answer'} {c.seconds:.2f}s" for c in late)
                + "; "
                if late
                else ""
            )
            + summary,
        )
    )
    wrong = [c for c in calls if c.status != 0 and not c.shape_ok]
    record.checks.append(
        Check(
            "each answer a success or 503 not_ready with Retry-After",
            not wrong,
            ", ".join(f"{c.route} {c.status}" for c in wrong) or f"{len(calls)} answers",
        )
    )


async def redis_freeze(run: Run, seconds: float) -> FaultRecord:
    """SIGSTOP redis-server for `seconds` under load, then SIGCONT: every connection stays
    open and nothing answers. The API must answer every request within its deadline; jobs
    need not progress meanwhile (workers learn of jobs from Redis), but everything accepted
    completes afterwards and the processes carry on without a restart."""
    async with run.service_lock:
        pid = run.services.redis.pid
        assert pid is not None
        before = {p.pid for p in run.cluster.processes if p.alive()}
        os.kill(pid, signal.SIGSTOP)
        record = run.fault("Redis frozen (SIGSTOP)", f"redis pid {pid}, {seconds:g}s")
        calls = asyncio.create_task(_timed_calls(run, seconds))
        try:
            await asyncio.sleep(seconds)
        except BaseException:
            calls.cancel()
            raise
        finally:
            os.kill(pid, signal.SIGCONT)
        run.heal(record)
        # Requests sent late in the fault are measured to their answer, after the heal.
        _judge_deadlines(record, await calls)
        await run.recovered(record)
        await _reconnected(run, record, before)
    return record


async def postgres_blackhole(run: Run, seconds: float) -> FaultRecord:
    """Every Postgres route stops forwarding for `seconds` without closing a connection
    (new connections are accepted and hang too), then lets everything through. The API must
    answer every request within its deadline, /readyz within its own limit; afterwards
    everything accepted completes and the processes carry on without a restart."""
    async with run.service_lock:
        routes = run.proxy.matching("pg:")
        before = {p.pid for p in run.cluster.processes if p.alive()}
        for route in routes:
            route.stall()
        record = run.fault("Postgres black-holed (proxy stall)", f"pg:* {seconds:g}s")
        calls = asyncio.create_task(_timed_calls(run, seconds))
        try:
            await asyncio.sleep(seconds)
        except BaseException:
            calls.cancel()
            raise
        finally:
            for route in routes:
                route.resume()
        run.heal(record)
        _judge_deadlines(record, await calls)
        await run.recovered(record)
        await _reconnected(run, record, before)
    return record


# --- the network (the proxy) ----------------------------------------------------------


async def latency(run: Run, prefix: str, seconds: float, duration: float) -> FaultRecord:
    """Add `seconds` of latency to every chunk on the routes starting with `prefix`."""
    async with run.service_lock:
        routes = run.proxy.matching(prefix)
        record = run.fault("proxy latency", f"{prefix}* +{seconds * 1000:.0f}ms")
        for route in routes:
            route.latency = seconds
        await asyncio.sleep(duration)
        for route in routes:
            route.latency = 0.0
        run.heal(record, f"{duration:g}s")
        await run.recovered(record)
    return record


async def drop_connections(run: Run, prefix: str) -> FaultRecord:
    """Reset every open connection on the routes starting with `prefix`."""
    async with run.service_lock:
        record = run.fault("proxy drop connections", f"{prefix}*")
        dropped = sum(route.drop() for route in run.proxy.matching(prefix))
        run.heal(record, f"{dropped} connection(s) reset")
        # The first requests after the reset meet the dead pooled connections.
        statuses: Counter[int] = Counter()
        for path in ("/stats", "/readyz", "/stats", f"/jobs/{next(iter(run.accepted()))}"):
            answer = await run.http.get(path)
            statuses[answer.status_code] += 1
            run.statuses[answer.status_code] += 1
        record.checks.append(
            Check(
                "API answers right after the reset, never 500",
                statuses.get(500, 0) == 0,
                _counts(statuses),
            )
        )
        await run.recovered(record)
        if record.recovery is not None:
            # The clients retry a command on a dropped connection (redis-py's Retry, the
            # store's reconnecting pool): a fresh job must not wait for a re-publish.
            record.checks.append(
                Check(
                    "a reset connection is ridden over",
                    record.recovery < REPUBLISH_AFTER,
                    f"new job done {record.recovery:.2f}s after the reset"
                    f" (a lost hint waits REPUBLISH_AFTER={REPUBLISH_AFTER:g}s)",
                )
            )
    return record


async def stall(run: Run, prefix: str, seconds: float) -> FaultRecord:
    """Hold all traffic on the routes starting with `prefix` (a partition that neither
    answers nor closes), then let it through."""
    async with run.service_lock:
        routes = run.proxy.matching(prefix)
        record = run.fault("proxy stall", f"{prefix}* {seconds:g}s")
        for route in routes:
            route.stall()
        await asyncio.sleep(seconds)
        for route in routes:
            route.resume()
        run.heal(record)
        await run.recovered(record)
    return record


# --- handlers that outlive their lease -------------------------------------------------


async def slow_handlers(run: Run, heartbeat_slot: str, silent_slot: str) -> FaultRecord:
    """A job that runs 2.5 visibility timeouts on a worker with heartbeats (must run once),
    and the same on a worker with WORKER_HEARTBEAT=false (its attempt is cut off at the
    visibility timeout and the job runs again)."""
    seconds = VISIBILITY_TIMEOUT * 2.5
    queues = run.cluster.worker_specs
    kept = await run.enqueue(
        "slow", queue=queues[heartbeat_slot].queues, first_sleep=seconds, sleep=0
    )
    lost = await run.enqueue("slow", queue=queues[silent_slot].queues, first_sleep=seconds, sleep=0)
    record = run.fault(
        "handler outlives lease", f"{seconds:g}s handler, vt {VISIBILITY_TIMEOUT:g}s"
    )
    await run.wait_state(kept, {"SUCCEEDED"}, seconds + 30)
    await run.wait_state(lost, {"SUCCEEDED"}, seconds + 30)
    run.heal(record)
    runs = {
        job_id: await run.fetch(
            "SELECT attempt, outcome, pid FROM fault_ledger WHERE job_id = $1 ORDER BY started_at",
            job_id,
        )
        for job_id in (kept, lost)
    }
    kept_runs = [(r["attempt"], r["outcome"]) for r in runs[kept]]
    lost_runs = [(r["attempt"], r["outcome"]) for r in runs[lost]]
    record.checks.append(
        Check(
            "with heartbeats: one execution, never re-run",
            kept_runs == [(1, "returned")],
            f"executions {kept_runs}",
        )
    )
    record.checks.append(
        Check(
            "without heartbeats: cut off at the visibility timeout and re-run",
            len(lost_runs) == 2
            and lost_runs[0][1] == "interrupted"
            and lost_runs[1][1] == "returned",
            f"executions {lost_runs}",
        )
    )
    record.recovery = 0.0
    record.basis = "not a crash: checked by execution counts"
    return record
