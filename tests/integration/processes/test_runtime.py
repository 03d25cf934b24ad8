"""The runtime's promises, shown with real processes on Postgres and Redis."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time

import httpx
import pytest
from redis.asyncio import Redis

from tests.support import free_port

from .conftest import Stack

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_spec_flow_runs_across_separate_processes(stack: Stack) -> None:
    await stack.start_api()
    stack.start_worker()
    stack.start_worker()
    stack.start_scheduler()

    ok = await stack.enqueue(
        "email", payload={"to": "a@b.com"}, idempotencyKey=stack.env["QUEUE_NAME"]
    )
    failing = await stack.enqueue("fail", initialDelay=0.1, maxAttempts=3)

    done = await stack.wait_for(ok, "SUCCEEDED")
    dead = await stack.wait_for(failing, "DLQ")
    assert done["attempt_count"] == 1
    assert (dead["attempt_count"], dead["retry_count"]) == (3, 2)

    async with stack.client() as client:
        entry = (await client.get(f"/dlq/{failing}")).json()
        assert entry["attempts"] == 3
        replay = await client.post(f"/dlq/{failing}/replay")
        assert replay.status_code == 200
    replayed = await stack.wait_for(failing, "DLQ")  # fails again, three more attempts
    assert replayed["attempt_count"] == 3


async def test_killed_worker_job_is_rerun_after_its_lease_expires(stack: Stack) -> None:
    await stack.start_api()
    stack.start_scheduler()
    doomed = stack.start_worker("--concurrency", "1")
    # Long enough to be killed mid-run however late the ledger row is seen.
    job_id = await stack.enqueue("ledger_sleep", payload={"seconds": 3}, visibilityTimeout=2)
    await stack.wait_for_ledger(job_id, 1)

    doomed.signal(signal.SIGKILL)
    doomed.wait(10)
    stack.start_worker()

    done = await stack.wait_for(job_id, "SUCCEEDED")
    runs = await stack.ledger(job_id)
    assert done["attempt_count"] == 2
    assert runs[0]["pid"] == doomed.pid
    assert runs[-1]["outcome"] == "returned" and runs[-1]["pid"] != doomed.pid


async def test_paused_worker_cannot_settle_a_job_another_worker_owns(stack: Stack) -> None:
    await stack.start_api()
    stack.start_scheduler()
    zombie = stack.start_worker("--concurrency", "1")
    # The second worker renews its 2 s lease every 0.67 s: a busy machine does not lose it.
    job_id = await stack.enqueue("ledger_sleep", payload={"seconds": 2}, visibilityTimeout=2)
    await stack.wait_for_ledger(job_id, 1)

    zombie.signal(signal.SIGSTOP)
    stack.start_worker()
    second_run = (await stack.wait_for_ledger(job_id, 2))[1]
    zombie.signal(signal.SIGCONT)  # wakes with an expired lease and an overdue handler

    done = await stack.wait_for(job_id, "SUCCEEDED")
    runs = await stack.ledger(job_id)
    first, second = runs[0], next(r for r in runs if r["started_at"] == second_run["started_at"])
    assert first["pid"] == zombie.pid and second["pid"] != zombie.pid
    assert second["outcome"] == "returned"
    # The job was settled by the second worker: it finished after that run ended.
    assert done["finished_at"] >= second["ended_at"]
    assert done["attempt_count"] == 2


async def test_sigterm_finishes_running_jobs_and_exits_cleanly(stack: Stack) -> None:
    await stack.start_api()
    worker = stack.start_worker("--concurrency", "4", WORKER_SHUTDOWN_GRACE="20")
    ids = [await stack.enqueue("ledger_sleep", payload={"seconds": 1}) for _ in range(6)]
    for job_id in ids[:4]:
        await stack.wait_for_ledger(job_id, 1)

    began = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert time.monotonic() - began < 10

    for job_id in ids[:4]:
        assert (await stack.job(job_id))["state"] == "SUCCEEDED"
    stack.start_worker()
    for job_id in ids:
        assert (await stack.wait_for(job_id, "SUCCEEDED"))["attempt_count"] == 1


async def test_sigterm_hands_back_jobs_that_outlive_the_grace_period(stack: Stack) -> None:
    await stack.start_api()
    worker = stack.start_worker("--concurrency", "2", WORKER_SHUTDOWN_GRACE="0.5")
    ids = [await stack.enqueue("ledger_sleep", payload={"seconds": 30}) for _ in range(2)]
    for job_id in ids:
        await stack.wait_for_ledger(job_id, 1)

    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0

    for job_id in ids:
        job = await stack.job(job_id)
        assert (job["state"], job["attempt_count"]) == ("PENDING", 0)
        assert (await stack.ledger(job_id))[0]["outcome"] == "interrupted"


async def test_sigterm_exits_even_when_a_handler_ignores_its_cancellation(stack: Stack) -> None:
    await stack.start_api()
    worker = stack.start_worker("--concurrency", "2", WORKER_SHUTDOWN_GRACE="0.5")
    stubborn = await stack.enqueue("ledger_stubborn")
    await stack.wait_for_ledger(stubborn, 1)

    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0  # the event loop's own close would wait for it for ever

    job = await stack.job(stubborn)
    assert (job["state"], job["attempt_count"]) == ("PENDING", 0)


async def test_cancelling_a_running_job_interrupts_it_within_a_heartbeat(stack: Stack) -> None:
    await stack.start_api()
    stack.start_worker("--concurrency", "1")
    job_id = await stack.enqueue("ledger_sleep", payload={"seconds": 60}, visibilityTimeout=3)
    await stack.wait_for_ledger(job_id, 1)

    began = time.monotonic()
    async with stack.client() as client:
        response = await client.post(f"/jobs/{job_id}/cancel", json={"reason": "user requested"})
    assert response.status_code == 200

    deadline = time.monotonic() + 10
    while (await stack.ledger(job_id))[0]["outcome"] != "interrupted":
        assert time.monotonic() < deadline, "the handler was never interrupted"
        await asyncio.sleep(0.05)
    assert time.monotonic() - began < 3  # one heartbeat is visibilityTimeout/3 = 1 s
    follow_up = await stack.enqueue("noop")  # the only slot is free again
    await stack.wait_for(follow_up, "SUCCEEDED", timeout=10)
    assert (await stack.job(job_id))["state"] == "CANCELLED"


async def test_two_workers_share_one_rate_limit(stack: Stack) -> None:
    await stack.start_api()
    metrics_port = free_port()
    env = {"RATE_LIMIT_PER_SEC": "5"}
    stack.start_worker(**env, METRICS_ADDR=f"127.0.0.1:{metrics_port}")
    stack.start_worker(**env)
    ids = [await stack.enqueue("ledger_sleep", payload={"seconds": 0}) for _ in range(25)]

    for job_id in ids:
        await stack.wait_for(job_id, "SUCCEEDED")
    starts = sorted([(await stack.ledger(job_id))[0]["started_at"] for job_id in ids])

    window = 2.0
    for first in starts:
        in_window = sum(1 for t in starts if 0 <= (t - first).total_seconds() < window)
        assert in_window <= 5 * window + 5  # the rate, plus one burst of 5 permits
    assert (starts[-1] - starts[0]).total_seconds() >= 3.0  # 25 jobs at 5/s after a burst
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    throttled = [
        line
        for line in text.splitlines()
        if line.startswith("taskforge_worker_rate_throttled_total{")
    ]
    assert throttled and float(throttled[0].rsplit(" ", 1)[1]) > 0


async def test_a_queue_listed_in_queue_rate_limits_takes_its_own_rate(stack: Stack) -> None:
    await stack.start_api()
    queue = stack.env["QUEUE_NAME"]
    stack.start_worker(RATE_LIMIT_PER_SEC="50", QUEUE_RATE_LIMITS=f"other=0, {queue}=2")
    ids = [await stack.enqueue("ledger_sleep", payload={"seconds": 0}) for _ in range(8)]

    for job_id in ids:
        await stack.wait_for(job_id, "SUCCEEDED")
    starts = sorted([(await stack.ledger(job_id))[0]["started_at"] for job_id in ids])

    # A burst of 2, then 2 a second: 3 s for the other 6 (at RATE_LIMIT_PER_SEC, 0.1 s).
    assert (starts[-1] - starts[0]).total_seconds() >= 2.5


async def test_a_worker_with_a_scheduler_of_its_own_retries_and_runs_delayed_jobs(
    stack: Stack,
) -> None:
    """RQ's `rq worker --with-scheduler`: one process, no `taskforge scheduler` beside it."""
    await stack.start_api()
    stack.start_worker("--with-scheduler", SCHEDULER_TICK="0.1")

    delayed = await stack.enqueue("noop", delay=0.5)
    failing = await stack.enqueue("fail", initialDelay=0.1, maxAttempts=2)

    assert (await stack.wait_for(delayed, "SUCCEEDED"))["attempt_count"] == 1
    assert (await stack.wait_for(failing, "DLQ"))["attempt_count"] == 2  # retried once


async def test_retries_follow_the_backoff_policy(stack: Stack) -> None:
    await stack.start_api()
    stack.start_worker()
    stack.start_scheduler(SCHEDULER_TICK="0.05")
    # A delayed job only the scheduler publishes: its first sweep (over what earlier tests
    # left in the database) is done before the gaps are timed.
    ticking = await stack.enqueue("noop", delay=0.05)
    await stack.wait_for(ticking, "SUCCEEDED")
    job_id = await stack.enqueue(
        "ledger_fail", initialDelay=0.5, backoff=2, maxDelay=1.5, maxAttempts=4
    )

    await stack.wait_for(job_id, "DLQ")
    starts = [run["started_at"] for run in await stack.ledger(job_id)]

    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(starts)]
    expected = [0.5, 1.0, 1.5]  # 0.5 * 2^n, capped at maxDelay 1.5
    assert len(gaps) == 3
    for gap, wanted in zip(gaps, expected, strict=True):
        assert wanted <= gap < wanted + 0.5  # the scheduler tick plus dispatch


async def test_jobs_survive_losing_every_redis_hint(stack: Stack, redis_url: str) -> None:
    await stack.start_api()
    ids = [await stack.enqueue("noop") for _ in range(20)]
    redis = Redis.from_url(redis_url)
    try:
        # What a Redis restart or FLUSHALL does to TaskForge: the list and the epoch are gone.
        await redis.delete(stack.env["QUEUE_NAME"], stack.env["TASKFORGE_REDIS_PREFIX"] + "epoch")
    finally:
        await redis.aclose()

    stack.start_scheduler()
    stack.start_worker()

    for job_id in ids:
        await stack.wait_for(job_id, "SUCCEEDED")


async def test_a_second_signal_exits_at_once_and_the_lease_is_recovered(stack: Stack) -> None:
    await stack.start_api()
    stack.start_scheduler()
    worker = stack.start_worker("--concurrency", "1", WORKER_SHUTDOWN_GRACE="60")
    # A lease renewed every second that runs 3 s: still held when the state is read below.
    job_id = await stack.enqueue("ledger_sleep", payload={"seconds": 30}, visibilityTimeout=3)
    await stack.wait_for_ledger(job_id, 1)

    worker.signal(signal.SIGTERM)  # graceful: would wait up to 60 s for the job
    await asyncio.sleep(0.2)
    began = time.monotonic()
    worker.signal(signal.SIGTERM)  # forced
    assert worker.wait(10) == 143  # 128 + SIGTERM
    assert time.monotonic() - began < 5

    assert (await stack.job(job_id))["state"] == "RUNNING"  # its lease was left behind
    stack.start_worker()
    requeued = await stack.wait_for(job_id, "RUNNING", "PENDING")
    runs = await stack.wait_for_ledger(job_id, 2)
    assert runs[1]["pid"] != worker.pid
    assert requeued["attempt_count"] >= 1
