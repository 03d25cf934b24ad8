"""Redis behind Sentinel, and a failover under load that loses nothing.

The test starts its own Redis master, a replica and three Sentinels (quorum 2, the master
counted down after 1 s without an answer), points every role at the Sentinels
(REDIS_SENTINELS, REDIS_SENTINEL_MASTER), enqueues through the API without pause, and kills
the master with SIGKILL. The API keeps accepting (201, or 503 then accepted on a retry with
the same idempotency key), the workers follow the Sentinels to the promoted replica, and
every accepted job succeeds: hints the dead master took with it are recovered from Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
import redis

from tests.servers import PrivateRedis, PrivateSentinel, ServicesUnavailable

from .conftest import Process, Stack

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

MASTER_NAME = "taskforge"
SENTINELS = 3
SETTLE_TIMEOUT = 60.0
"""Longest wait for the Sentinels to know each other and the replica, or to fail over."""
DRAIN_TIMEOUT = 60.0
JOBS_BEFORE_KILL = 30
JOBS_AFTER_PROMOTION = 30


@dataclass
class SentinelCluster:
    master: PrivateRedis
    replica: PrivateRedis
    sentinels: list[PrivateSentinel]

    @property
    def addresses(self) -> str:
        return ",".join(sentinel.address for sentinel in self.sentinels)

    def master_port(self) -> int | None:
        """The master's port as the first Sentinel that answers names it."""
        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port, socket_timeout=1, decode_responses=True)
            with contextlib.closing(client), contextlib.suppress(redis.RedisError):
                address = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(address[1]) if isinstance(address, tuple | list) else None
        return None

    def settled(self) -> bool:
        """Every Sentinel sees the master up, the replica, and the two other Sentinels."""
        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port, socket_timeout=1, decode_responses=True)
            with contextlib.closing(client):
                try:
                    state = dict(client.sentinel_master(MASTER_NAME))  # type: ignore[arg-type]
                except redis.RedisError:
                    return False
            if (
                int(state["num-slaves"]) < 1
                or int(state["num-other-sentinels"]) < SENTINELS - 1
                or state["is_sdown"]
            ):
                return False
        return True


@pytest.fixture
def sentinel_cluster() -> Iterator[SentinelCluster]:
    servers: list[PrivateRedis | PrivateSentinel] = []
    try:
        master = PrivateRedis.create()
        servers.append(master)
        replica = PrivateRedis.create(replica_of=master.port)
        servers.append(replica)
        sentinels = []
        for _ in range(SENTINELS):
            sentinel = PrivateSentinel.create(
                master=MASTER_NAME, master_port=master.port, quorum=2, down_after_ms=1000
            )
            servers.append(sentinel)
            sentinels.append(sentinel)
        cluster = SentinelCluster(master, replica, sentinels)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while not cluster.settled():
            if time.monotonic() > deadline:
                tails = "\n".join(sentinel.tail() for sentinel in sentinels)
                raise AssertionError(f"the Sentinels never saw the whole cluster:\n{tails}")
            time.sleep(0.1)
        yield cluster
    except ServicesUnavailable as exc:
        pytest.fail(f"cannot start a private Redis Sentinel cluster: {exc}")
    finally:
        for server in reversed(servers):
            server.remove()


@dataclass
class Load:
    """Enqueues `noop` jobs one after another, each with its own idempotency key; a 503 is
    retried with the same key until the job is accepted."""

    stack: Stack
    accepted: dict[str, float] = field(default_factory=dict)
    """Job id -> when (monotonic) it was accepted."""
    unavailable: int = 0
    refused: list[str] = field(default_factory=list)
    """Answers that were neither an acceptance nor a 503."""
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with self.stack.client() as client:
            number = 0
            while not self.stop.is_set():
                number += 1
                await self._enqueue(client, f"failover-{number}")
                await asyncio.sleep(0.01)  # pacing: a steady stream, not a flood

    async def _enqueue(self, client: httpx.AsyncClient, key: str) -> None:
        body = {"jobType": "noop", "queue": self.stack.env["QUEUE_NAME"], "idempotencyKey": key}
        while True:
            response = await client.post("/jobs", json=body)
            if response.status_code in (200, 201):
                self.accepted[response.json()["id"]] = time.monotonic()
                return
            if response.status_code != 503:
                self.refused.append(f"{response.status_code} {response.text}")
                return
            self.unavailable += 1
            await asyncio.sleep(0.05)

    def accepted_since(self, moment: float) -> int:
        return sum(1 for at in self.accepted.values() if at >= moment)


async def job_states(dsn: str, ids: list[str]) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT state, count(*) AS n FROM jobs WHERE id = ANY($1::uuid[]) GROUP BY state", ids
        )
    finally:
        await conn.close()
    return {row["state"]: row["n"] for row in rows}


def logged_at(process: Process, message: str) -> datetime:
    """When `process` last logged a line containing `message` (its JSON log's time)."""
    line = next(line for line in reversed(process.log.read_text().splitlines()) if message in line)
    return datetime.fromisoformat(json.loads(line)["time"])


async def poll(condition_name: str, check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition_name}")
        await asyncio.sleep(0.05)


async def test_every_role_follows_a_sentinel_failover_and_no_accepted_job_is_lost(
    stack: Stack, sentinel_cluster: SentinelCluster
) -> None:
    cluster = sentinel_cluster
    for variable in ("REDIS_ADDR", "REDIS_PASSWORD"):
        stack.env.pop(variable, None)
    # Hints the dead master took with it are republished after this long (default 30 s).
    stack.env.update(
        REDIS_SENTINELS=cluster.addresses,
        REDIS_SENTINEL_MASTER=MASTER_NAME,
        REPUBLISH_AFTER="3",
        WORKER_CONCURRENCY="8",
    )
    await stack.start_api()
    workers = [stack.start_worker(), stack.start_worker()]
    stack.start_scheduler()
    load = Load(stack)
    loader = asyncio.create_task(load.run())
    try:

        async def some_succeeded() -> bool:
            states = await job_states(stack.dsn, list(load.accepted))
            return states.get("SUCCEEDED", 0) >= JOBS_BEFORE_KILL

        await poll("jobs to succeed before the kill", some_succeeded, DRAIN_TIMEOUT)
        assert cluster.master.pid is not None
        os.kill(cluster.master.pid, signal.SIGKILL)
        killed_at, killed_wall = time.monotonic(), datetime.now(UTC)

        async def promoted() -> bool:
            return await asyncio.to_thread(cluster.master_port) == cluster.replica.port

        await poll("the Sentinels to promote the replica", promoted, SETTLE_TIMEOUT)
        promoted_after = time.monotonic() - killed_at

        async def accepted_after_promotion() -> bool:
            return load.accepted_since(killed_at + promoted_after) >= JOBS_AFTER_PROMOTION

        await poll("enqueues after the promotion", accepted_after_promotion, DRAIN_TIMEOUT)
    finally:
        load.stop.set()
        await loader

    ids = list(load.accepted)

    async def all_succeeded() -> bool:
        return await job_states(stack.dsn, ids) == {"SUCCEEDED": len(ids)}

    try:
        await poll("every accepted job to succeed", all_succeeded, DRAIN_TIMEOUT)
    except AssertionError:
        raise AssertionError(f"not all succeeded: {await job_states(stack.dsn, ids)}") from None
    assert load.refused == []

    conn = await asyncpg.connect(stack.dsn)
    try:
        first_start = await conn.fetchval(
            "SELECT min(started_at) FROM jobs WHERE id = ANY($1::uuid[]) AND started_at > $2",
            ids,
            killed_wall,
        )
    finally:
        await conn.close()
    first_job_after = (first_start - killed_wall).total_seconds()
    # The workers found the promoted replica: each left Postgres-only dispatch for hints
    # again, and the hints on the new master are all consumed.
    for worker in workers:

        async def back_to_hints(worker: Process = worker) -> bool:
            log = worker.log.read_text()
            return "back to hints" in log.partition("claiming due jobs from the store")[2]

        await poll(f"worker {worker.pid} to use the promoted replica", back_to_hints, DRAIN_TIMEOUT)
    hints_again_after = max(
        (logged_at(worker, "back to hints") - killed_wall).total_seconds() for worker in workers
    )
    print(
        f"Sentinel failover: {len(ids)} jobs accepted, {load.unavailable} enqueues answered 503"
        f" and retried; replica promoted {promoted_after:.1f} s after the kill, first job"
        f" started {first_job_after:.2f} s after it, every worker on hints from the new"
        f" master {hints_again_after:.1f} s after it"
    )
    new_master = redis.Redis(port=cluster.replica.port, socket_timeout=2)

    async def hints_drained() -> bool:
        return await asyncio.to_thread(new_master.llen, stack.env["QUEUE_NAME"]) == 0

    with contextlib.closing(new_master):
        await poll("the promoted replica's hints to be consumed", hints_drained, DRAIN_TIMEOUT)
    for process in stack.processes:
        assert process.popen.poll() is None, process.tail()
