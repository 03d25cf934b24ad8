"""A job's `result` through the API, on each backend: GET /jobs/{id} shows what the handler
returned, lists leave it out, and a result that cannot be stored dead-letters the job."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from taskforge.application.handlers import HandlerRegistry, JobContext
from taskforge.domain.result import RESULT_REFUSED_REASON
from tests.integration.http.conftest import JobFactory, Roles

DEADLINE = 20.0
FAST = {"metrics_flush_interval": 0.05, "scheduler_tick": 0.02}


@pytest.fixture
def handlers() -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.handler("invoice")
    async def invoice(ctx: JobContext) -> dict[str, Any]:
        return {"invoice": ctx.payload["order"], "lines": [{"sku": "a-1", "total": 12.5}]}

    @registry.handler("export")
    async def export(ctx: JobContext) -> str:
        return "x" * int(ctx.payload["size"])

    @registry.handler("noop")
    async def noop(ctx: JobContext) -> None:
        return None

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
async def test_get_job_shows_the_result_and_lists_leave_it_out(
    client: httpx.AsyncClient, create_job: JobFactory, roles: Roles
) -> None:
    job = await create_job(jobType="invoice", payload={"order": "o-17"})
    pending = (await client.get(f"/jobs/{job['id']}")).json()
    roles.start()

    done = await settled(client, job["id"], "SUCCEEDED")

    assert "result" not in job  # the enqueue answer is the list shape
    assert pending["result"] is None
    assert done["result"] == {"invoice": "o-17", "lines": [{"sku": "a-1", "total": 12.5}]}
    listed = (await client.get("/jobs", params={"status": "succeeded"})).json()["items"]
    assert [item["id"] for item in listed] == [job["id"]]
    assert "result" not in listed[0]


@pytest.mark.parametrize("overrides", [FAST])
async def test_a_handler_returning_none_leaves_the_result_null(
    client: httpx.AsyncClient, create_job: JobFactory, roles: Roles
) -> None:
    roles.start()
    job = await create_job(jobType="noop")

    done = await settled(client, job["id"], "SUCCEEDED")

    assert done["result"] is None


@pytest.mark.parametrize("overrides", [{**FAST, "max_result_bytes": 1024}])
async def test_a_result_over_max_result_bytes_dead_letters_the_job_at_once(
    client: httpx.AsyncClient, create_job: JobFactory, roles: Roles
) -> None:
    roles.start()
    job = await create_job(jobType="export", payload={"size": 2000}, maxAttempts=5)
    fits = await create_job(jobType="export", payload={"size": 1022})  # 1024 bytes as JSON

    dead = await settled(client, job["id"], "DLQ")
    done = await settled(client, fits["id"], "SUCCEEDED")

    assert (dead["attemptCount"], dead["reason"], dead["result"]) == (
        1,
        RESULT_REFUSED_REASON,
        None,
    )
    assert (
        dead["lastError"] == "result refused: too large: over 1024 bytes (MAX_RESULT_BYTES) as JSON"
    )
    entry = (await client.get(f"/dlq/{job['id']}")).json()
    assert (entry["reason"], entry["lastError"]) == (RESULT_REFUSED_REASON, dead["lastError"])
    assert done["result"] == "x" * 1022
