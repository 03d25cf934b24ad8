"""Rolling deploys and snoozes with real processes on Postgres and Redis: a worker of the
previous release hands back the job types only the next release knows (without using an
attempt) until a worker of the next release runs them; a handler's Snooze brings the job
back later without using an attempt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from .conftest import DEADLINE, Stack

pytestmark = pytest.mark.slow


async def _until(read: Callable[[], Awaitable[Any]], holds: Callable[[Any], bool]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        value = await read()
        if holds(value):
            return value
        assert time.monotonic() < deadline, f"never got there: {value}"
        await asyncio.sleep(0.05)


async def _workers(stack: Stack) -> list[dict[str, Any]]:
    async with stack.client() as client:
        response = await client.get("/workers")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_a_previous_release_worker_hands_new_job_types_to_the_next_release(
    stack: Stack,
) -> None:
    """Also shows the next release's snoozing handler on real processes: each process takes
    seconds to start on a busy machine, so one cluster serves both."""
    await stack.start_api()
    stack.start_scheduler()
    previous = stack.start("worker", "--demo-handlers")
    job_id = await stack.enqueue("report-v2")

    handed_back = await _until(lambda: stack.job(job_id), lambda job: job["hand_backs"] >= 2)
    assert handed_back["state"] in {"PENDING", "RUNNING"}
    assert handed_back["unknown_type_since"] is not None  # the grace (300 s) runs

    following = stack.start("worker", "--handlers", "taskforge_rollout", "--demo-handlers")
    # Workers of earlier tests in the same database may still be listed (seen within 30 s).
    listed = await _until(
        lambda: _workers(stack),
        lambda items: {previous.pid, following.pid} <= {worker["pid"] for worker in items},
    )
    by_pid = {worker["pid"]: worker for worker in listed}
    assert "report-v2" not in by_pid[previous.pid]["jobTypes"]
    assert "report-v2" in by_pid[following.pid]["jobTypes"]

    done = await stack.wait_for(job_id, "SUCCEEDED", "DLQ")
    assert done["state"] == "SUCCEEDED"
    assert done["attempt_count"] == 1  # every hand-back gave its attempt back
    assert done["hand_backs"] >= 2

    snoozing = await stack.enqueue("wait-for-export", maxAttempts=1)
    woke = await stack.wait_for(snoozing, "SUCCEEDED", "DLQ")
    assert (woke["state"], woke["snoozes"], woke["attempt_count"]) == ("SUCCEEDED", 2, 1)
