"""Queues over HTTP: GET /queues, pausing and resuming a queue, and unique jobs
(`uniqueKey` on POST /jobs and /jobs/batch)."""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

import httpx
import pytest
from dishka import AsyncContainer

from taskforge.application.ports import ReadyQueue
from taskforge.domain.job import ReadyHint
from tests.integration.http.conftest import JobFactory, assert_error


async def _queue(client: httpx.AsyncClient, name: str) -> dict[str, object]:
    response = await client.get("/queues")
    assert response.status_code == 200, response.text
    return next(item for item in response.json()["items"] if item["queue"] == name)


async def test_queues_lists_each_queue_with_its_counts_and_pause(
    client: httpx.AsyncClient, create_job: JobFactory, queue_name: str
) -> None:
    await create_job()
    await create_job()

    listed = await _queue(client, queue_name)

    assert listed["paused"] is False
    assert listed["pausedAt"] is None
    assert listed["total"] == 2
    assert listed["states"] == {
        "PENDING": 2,
        "RUNNING": 0,
        "SUCCEEDED": 0,
        "FAILED": 0,
        "DLQ": 0,
        "CANCELLED": 0,
    }


async def test_pause_and_resume_show_in_the_queue_list_and_are_idempotent(
    client: httpx.AsyncClient, queue_name: str
) -> None:
    paused = await client.post(f"/queues/{queue_name}-new/pause")
    again = await client.post(f"/queues/{queue_name}-new/pause")

    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    assert again.json()["pausedAt"] == paused.json()["pausedAt"]
    listed = await _queue(client, f"{queue_name}-new")
    assert (listed["paused"], listed["total"]) == (True, 0)

    for _ in range(2):
        resumed = await client.post(f"/queues/{queue_name}-new/resume")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json() == {"queue": f"{queue_name}-new", "paused": False, "pausedAt": None}
    assert all(
        item["queue"] != f"{queue_name}-new"
        for item in (await client.get("/queues")).json()["items"]
    )


@pytest.mark.parametrize("action", ["pause", "resume"])
async def test_a_bad_queue_name_is_refused(client: httpx.AsyncClient, action: str) -> None:
    response = await client.post(f"/queues/taskforge:internal/{action}")

    assert_error(response, 400, "validation_error", "queue")


async def test_enqueueing_into_a_paused_queue_still_works(
    client: httpx.AsyncClient, create_job: JobFactory, queue_name: str
) -> None:
    await client.post(f"/queues/{queue_name}/pause")

    job = await create_job()

    assert job["state"] == "PENDING"


async def test_resume_publishes_the_hints_of_the_queues_due_jobs(
    client: httpx.AsyncClient,
    container: AsyncContainer,
    create_job: JobFactory,
    queue_name: str,
) -> None:
    ready_queue = await container.get(ReadyQueue)
    await client.post(f"/queues/{queue_name}/pause")
    job = await create_job()
    # A worker popped the enqueue's hint and dropped it: the queue was paused.
    dropped = await _pop_within(ready_queue, queue_name, deadline=5.0)
    assert [hint.job_id for hint in dropped] == [UUID(job["id"])]

    await client.post(f"/queues/{queue_name}/resume")

    published = await _pop_within(ready_queue, queue_name, deadline=5.0)
    assert [hint.job_id for hint in published] == [UUID(job["id"])]


async def _pop_within(ready_queue: ReadyQueue, queue: str, deadline: float) -> list[ReadyHint]:
    """The hints of `queue` once one arrives (they are pushed in the background)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if hints := await ready_queue.pop([queue], 100, 0.1):
            return hints
        await asyncio.sleep(0)
    return []


async def test_a_unique_key_returns_the_unfinished_job_until_it_finished(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    body = {"jobType": "email", "uniqueKey": "report:7"}
    first = await client.post("/jobs", json=body)
    second = await client.post("/jobs", json=body)

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    assert first.json()["uniqueKey"] == "report:7"
    assert (await client.get(f"/jobs/{first.json()['id']}")).json()["uniqueKey"] == "report:7"

    await client.post(f"/jobs/{first.json()['id']}/cancel")
    third = await client.post("/jobs", json=body)

    assert third.status_code == 201
    assert third.json()["id"] != first.json()["id"]


async def test_a_batch_answers_existing_for_a_held_unique_key(client: httpx.AsyncClient) -> None:
    held = (await client.post("/jobs", json={"jobType": "email", "uniqueKey": "u"})).json()

    response = await client.post(
        "/jobs/batch",
        json={"jobs": [{"jobType": "email", "uniqueKey": "u"}, {"jobType": "email"}]},
    )

    assert response.status_code == 201, response.text
    items = response.json()["items"]
    assert [item["status"] for item in items] == ["existing", "created"]
    assert items[0]["id"] == held["id"]


async def test_retrying_a_job_whose_unique_key_is_held_again_is_a_conflict(
    client: httpx.AsyncClient,
) -> None:
    body = {"jobType": "email", "uniqueKey": "nightly"}
    first = (await client.post("/jobs", json=body)).json()
    await client.post(f"/jobs/{first['id']}/cancel")
    holder = (await client.post("/jobs", json=body)).json()

    response = await client.post(f"/jobs/{first['id']}/retry")

    error = assert_error(response, 409, "invalid_state_transition")
    assert error["details"]["heldBy"] == holder["id"]
    assert error["details"]["uniqueKey"] == "nightly"
    assert error["details"]["state"] == "CANCELLED"


@pytest.mark.parametrize("bad", ["", "x" * 256, "tab\tkey"])
async def test_a_bad_unique_key_is_refused(client: httpx.AsyncClient, bad: str) -> None:
    response = await client.post("/jobs", json={"jobType": "email", "uniqueKey": bad})

    assert_error(response, 400, "validation_error", "uniqueKey")
