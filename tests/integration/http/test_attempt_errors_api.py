"""A job's time limit (`timeout`) and the errors of its failed attempts (`errors`) through
the API, on each backend: POST /jobs and batch items take the timeout, GET /jobs/{id}
shows both, lists leave the errors out."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from taskforge.application.handlers import HandlerRegistry, JobContext
from tests.integration.http.conftest import JobFactory, Roles, assert_error

DEADLINE = 20.0
FAST = {"metrics_flush_interval": 0.05, "scheduler_tick": 0.02}


@pytest.fixture
def handlers() -> HandlerRegistry:
    registry = HandlerRegistry()

    def charge(payload: dict[str, Any]) -> None:
        raise RuntimeError(f"card declined for {payload.get('customer')}")

    @registry.handler("charge")
    async def charge_handler(ctx: JobContext) -> None:
        charge(ctx.payload)

    return registry


async def settled(client: httpx.AsyncClient, job_id: str, state: str) -> dict[str, Any]:
    give_up = time.monotonic() + DEADLINE
    while True:
        job: dict[str, Any] = (await client.get(f"/jobs/{job_id}")).json()
        if job["state"] == state:
            return job
        assert time.monotonic() < give_up, f"job never reached {state}: {job}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("overrides", [FAST])
async def test_get_job_shows_each_failed_attempt_with_its_traceback(
    client: httpx.AsyncClient, create_job: JobFactory, roles: Roles
) -> None:
    roles.start()
    job = await create_job(
        jobType="charge", payload={"customer": "c-7"}, maxAttempts=2, initialDelay=0
    )

    dead = await settled(client, job["id"], "DLQ")

    assert [set(error) for error in dead["errors"]] == [{"attempt", "at", "error", "traceback"}] * 2
    assert [error["attempt"] for error in dead["errors"]] == [1, 2]
    last = dead["errors"][-1]
    assert last["error"] == dead["lastError"] == "RuntimeError: card declined for c-7"
    assert "in charge" in last["traceback"]
    assert last["at"].endswith(("Z", "+00:00"))
    listed = (await client.get("/jobs")).json()["items"]
    assert [item["id"] for item in listed] == [job["id"]]
    assert "errors" not in listed[0]


async def test_a_new_job_has_no_errors(client: httpx.AsyncClient, create_job: JobFactory) -> None:
    job = await create_job()

    assert "errors" not in job  # the enqueue answer is the list shape
    assert (await client.get(f"/jobs/{job['id']}")).json()["errors"] == []


async def test_timeout_is_stored_and_shown(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    job = await create_job(timeout=2.5)
    batch = await client.post("/jobs/batch", json={"jobs": [{"jobType": "email", "timeout": 60}]})
    [item] = batch.json()["items"]

    assert job["timeout"] == 2.5
    assert (await client.get(f"/jobs/{job['id']}")).json()["timeout"] == 2.5
    assert (await client.get(f"/jobs/{item['id']}")).json()["timeout"] == 60
    assert (await client.get("/jobs")).json()["items"][0]["timeout"] in (2.5, 60)


async def test_without_a_timeout_a_job_has_no_limit(create_job: JobFactory) -> None:
    assert (await create_job())["timeout"] == 0


@pytest.mark.parametrize("overrides", [{"job_timeout": 30.0}])
async def test_job_timeout_is_the_default_a_job_can_override(create_job: JobFactory) -> None:
    assert (await create_job())["timeout"] == 30
    assert (await create_job(timeout=0))["timeout"] == 0
    assert (await create_job(timeout=5))["timeout"] == 5


@pytest.mark.parametrize("timeout", [-1, "5", 1e12, True])
async def test_an_invalid_timeout_is_400_naming_it(
    client: httpx.AsyncClient, timeout: object
) -> None:
    single = await client.post("/jobs", json={"jobType": "email", "timeout": timeout})
    batch = await client.post(
        "/jobs/batch",
        json={"jobs": [{"jobType": "email"}, {"jobType": "email", "timeout": timeout}]},
    )

    assert_error(single, 400, "validation_error", "timeout")
    assert_error(batch, 400, "validation_error", "jobs[1].timeout")
    assert (await client.get("/jobs")).json()["total"] == 0
