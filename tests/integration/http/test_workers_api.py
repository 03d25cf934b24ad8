"""Workers and attempts that do not count, over HTTP: GET /workers, and the `snoozes`,
`handBacks` and `unknownTypeSince` of a job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from taskforge.application.handlers import HandlerRegistry, JobContext, Snooze
from tests.integration.http.conftest import JobFactory, Roles

DEADLINE = 10.0


@pytest.fixture
def handlers() -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.handler("poll")
    async def poll(ctx: JobContext) -> None:
        raise Snooze(3600)

    @registry.handler("email")
    async def email(ctx: JobContext) -> None:
        return None

    return registry


async def _until(
    client: httpx.AsyncClient, path: str, holds: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    while True:
        response = await client.get(path)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if holds(body):
            return body
        assert time.monotonic() < deadline, f"{path} never got there: {body}"
        await asyncio.sleep(0.02)


async def test_no_workers_are_listed_while_none_runs(client: httpx.AsyncClient) -> None:
    response = await client.get("/workers")

    assert response.status_code == 200
    assert response.json() == {"items": []}


async def test_a_running_worker_is_listed_with_its_queues_and_job_types(
    client: httpx.AsyncClient, roles: Roles, queue_name: str
) -> None:
    roles.start()

    body = await _until(client, "/workers", lambda body: bool(body["items"]))

    [worker] = body["items"]
    assert set(worker) == {
        "workerId",
        "host",
        "pid",
        "queues",
        "jobTypes",
        "concurrency",
        "busySlots",
        "startedAt",
        "heartbeatAt",
    }
    assert worker["queues"] == [queue_name]
    assert worker["jobTypes"] == ["email", "poll"]
    assert worker["workerId"].startswith(f"{worker['host']}:{worker['pid']}:")
    assert worker["busySlots"] == 0


async def test_a_new_job_has_not_snoozed_nor_been_handed_back(create_job: JobFactory) -> None:
    job = await create_job()

    assert (job["snoozes"], job["handBacks"], job["unknownTypeSince"]) == (0, 0, None)


async def test_a_snoozed_job_shows_its_snooze_and_no_attempt_used(
    client: httpx.AsyncClient, create_job: JobFactory, roles: Roles
) -> None:
    job = await create_job(jobType="poll")
    roles.start()

    snoozed = await _until(client, f"/jobs/{job['id']}", lambda body: body["snoozes"] == 1)

    assert (snoozed["state"], snoozed["attemptCount"], snoozed["handBacks"]) == ("PENDING", 0, 0)


async def test_a_job_no_worker_has_a_handler_for_is_handed_back_not_dead_lettered(
    client: httpx.AsyncClient, create_job: JobFactory, roles: Roles
) -> None:
    job = await create_job(jobType="from-the-next-release")
    roles.start()

    back = await _until(client, f"/jobs/{job['id']}", lambda body: body["handBacks"] >= 1)

    assert back["state"] in {"PENDING", "RUNNING"}
    assert back["unknownTypeSince"] is not None
    assert back["lastError"] is None
