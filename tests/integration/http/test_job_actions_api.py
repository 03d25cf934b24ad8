"""Operator actions over HTTP: cancel, move to DLQ, retry, replay, and the DLQ endpoints.
Illegal transitions are 409 `invalid_state_transition` naming the current state."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.http.conftest import JobFactory, assert_error

NO_BODY: dict[str, Any] = {}
EMPTY_BODY: dict[str, Any] = {"content": b"", "headers": {"content-type": "application/json"}}
EMPTY_OBJECT: dict[str, Any] = {"json": {}}
WITH_REASON: dict[str, Any] = {"json": {"reason": "user requested"}}

BODIES = pytest.mark.parametrize(
    ("body", "reason"),
    [
        (NO_BODY, None),
        (EMPTY_BODY, None),
        (EMPTY_OBJECT, None),
        (WITH_REASON, "user requested"),
    ],
    ids=["no-body", "empty-body", "empty-object", "with-reason"],
)


@BODIES
async def test_cancel_accepts_every_optional_body_form(
    client: httpx.AsyncClient, create_job: JobFactory, body: dict[str, Any], reason: str | None
) -> None:
    job = await create_job()

    response = await client.post(f"/jobs/{job['id']}/cancel", **body)

    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["state"] == "CANCELLED"
    assert cancelled["reason"] == reason
    assert cancelled["finishedAt"] is not None
    assert (await client.get(f"/jobs/{job['id']}")).json()["state"] == "CANCELLED"


@BODIES
async def test_dlq_accepts_every_optional_body_form(
    client: httpx.AsyncClient, create_job: JobFactory, body: dict[str, Any], reason: str | None
) -> None:
    job = await create_job(payload={"to": "a@b.com"})

    response = await client.post(f"/jobs/{job['id']}/dlq", **body)

    assert response.status_code == 200, response.text
    assert response.json()["state"] == "DLQ"
    entry = (await client.get(f"/dlq/{job['id']}")).json()
    assert entry["jobId"] == job["id"]
    assert entry["payload"] == {"to": "a@b.com"}
    assert entry["attempts"] == 0
    if reason is not None:
        assert entry["reason"] == reason
    else:
        assert entry["reason"]


async def test_a_json_null_body_counts_as_no_reason(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    job = await create_job()

    response = await client.post(f"/jobs/{job['id']}/cancel", content=b"null")

    assert response.status_code == 200
    assert response.json()["reason"] is None


async def test_a_dead_letter_has_the_spec_fields(
    client: httpx.AsyncClient, create_job: JobFactory, queue_name: str
) -> None:
    job = await create_job(jobType="report")
    await client.post(f"/jobs/{job['id']}/dlq", json={"reason": "bad input"})

    entry = (await client.get(f"/dlq/{job['id']}")).json()

    assert set(entry) == {
        "jobId",
        "queue",
        "jobType",
        "payload",
        "reason",
        "lastError",
        "attempts",
        "failedAt",
        "createdAt",
        "updatedAt",
    }
    assert (entry["queue"], entry["jobType"], entry["reason"]) == (
        queue_name,
        "report",
        "bad input",
    )


async def test_dlq_list_is_an_envelope_newest_first(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    ids = [(await create_job())["id"] for _ in range(3)]
    for job_id in ids:
        await client.post(f"/jobs/{job_id}/dlq")

    first = (await client.get("/dlq", params={"limit": 2})).json()
    second = (await client.get("/dlq", params={"limit": 2, "offset": 2})).json()

    assert set(first) == {"items", "limit", "offset", "total"}
    assert (first["limit"], first["offset"], first["total"]) == (2, 0, 3)
    listed = [entry["jobId"] for entry in first["items"] + second["items"]]
    assert listed == list(reversed(ids))


async def test_replay_re_enqueues_and_removes_the_dead_letter(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    job = await create_job()
    await client.post(f"/jobs/{job['id']}/dlq")

    response = await client.post(f"/dlq/{job['id']}/replay")

    assert response.status_code == 200
    replayed = response.json()
    assert replayed["id"] == job["id"]
    assert (replayed["state"], replayed["attemptCount"], replayed["retryCount"]) == (
        "PENDING",
        0,
        0,
    )
    assert_error(await client.get(f"/dlq/{job['id']}"), 404, "not_found")
    assert (await client.get("/dlq")).json()["total"] == 0


async def test_replay_of_a_job_not_in_dlq_is_404(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    job = await create_job()

    body = assert_error(await client.post(f"/dlq/{job['id']}/replay"), 404, "not_found")

    assert job["id"] in body["message"]


@pytest.mark.parametrize("parked_by", ["cancel", "dlq"])
async def test_retry_moves_a_parked_job_back_to_pending(
    client: httpx.AsyncClient, create_job: JobFactory, parked_by: str
) -> None:
    job = await create_job()
    await client.post(f"/jobs/{job['id']}/{parked_by}")

    response = await client.post(f"/jobs/{job['id']}/retry")

    assert response.status_code == 200
    assert response.json()["state"] == "PENDING"
    assert response.json()["reason"] is None


async def test_retry_of_a_dead_letter_removes_it_from_dlq(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    job = await create_job()
    await client.post(f"/jobs/{job['id']}/dlq")

    await client.post(f"/jobs/{job['id']}/retry")

    assert_error(await client.get(f"/dlq/{job['id']}"), 404, "not_found")


@pytest.mark.parametrize(
    ("setup", "action", "state"),
    [
        ([], "retry", "PENDING"),  # nothing to retry yet
        (["cancel"], "cancel", "CANCELLED"),  # cancelling twice
        (["cancel"], "dlq", "CANCELLED"),  # only a retry leaves CANCELLED
        (["dlq"], "cancel", "DLQ"),  # only replay or retry leave DLQ
        (["dlq"], "dlq", "DLQ"),
    ],
)
async def test_illegal_transition_is_409_naming_the_current_state(
    client: httpx.AsyncClient,
    create_job: JobFactory,
    setup: list[str],
    action: str,
    state: str,
) -> None:
    job = await create_job()
    for step in setup:
        assert (await client.post(f"/jobs/{job['id']}/{step}")).status_code == 200

    response = await client.post(f"/jobs/{job['id']}/{action}")

    body = assert_error(response, 409, "invalid_state_transition")
    assert body["details"]["state"] == state
    assert state in body["message"]
    assert (await client.get(f"/jobs/{job['id']}")).json()["state"] == state


@pytest.mark.parametrize("action", ["cancel", "dlq", "retry"])
async def test_action_on_an_unknown_job_is_404(client: httpx.AsyncClient, action: str) -> None:
    job_id = "01900000-0000-7000-8000-000000000001"

    assert_error(await client.post(f"/jobs/{job_id}/{action}"), 404, "not_found")


async def test_unknown_dead_letter_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/dlq/01900000-0000-7000-8000-000000000002"), 404, "not_found")
