"""POST /jobs, GET /jobs/{id}, GET /jobs and GET /queues/{q}/jobs: the happy paths,
idempotency, delayed jobs and pagination."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest

from tests.integration.http.conftest import JobFactory, assert_error

JOB_FIELDS = {
    "id",
    "queue",
    "jobType",
    "payload",
    "state",
    "idempotencyKey",
    "uniqueKey",
    "attemptCount",
    "retryCount",
    "snoozes",
    "handBacks",
    "unknownTypeSince",
    "maxAttempts",
    "initialDelay",
    "backoff",
    "maxDelay",
    "jitter",
    "visibilityTimeout",
    "timeout",
    "priority",
    "nextRunAt",
    "lastError",
    "reason",
    "leaseOwner",
    "leaseExpiresAt",
    "createdAt",
    "updatedAt",
    "startedAt",
    "finishedAt",
}


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"{value} has no UTC offset"
    return parsed


async def test_enqueue_returns_201_with_the_pending_job(
    client: httpx.AsyncClient, queue_name: str
) -> None:
    response = await client.post(
        "/jobs",
        json={"jobType": "email", "payload": {"to": "a@b.com"}, "idempotencyKey": "abc-123"},
    )

    assert response.status_code == 201
    job = response.json()
    assert set(job) == JOB_FIELDS
    UUID(job["id"])
    assert job["queue"] == queue_name
    assert job["jobType"] == "email"
    assert job["payload"] == {"to": "a@b.com"}
    assert job["state"] == "PENDING"
    assert job["idempotencyKey"] == "abc-123"
    assert (job["attemptCount"], job["retryCount"]) == (0, 0)


async def test_enqueue_applies_the_default_retry_policy(create_job: JobFactory) -> None:
    job = await create_job()

    assert job["payload"] == {}
    assert (job["maxAttempts"], job["initialDelay"], job["backoff"]) == (3, 1.0, 2.0)
    assert (job["maxDelay"], job["jitter"], job["visibilityTimeout"]) == (300.0, False, 30.0)


async def test_enqueue_keeps_every_policy_field_given(
    create_job: JobFactory, queue_name: str
) -> None:
    job = await create_job(
        maxAttempts=7,
        initialDelay=0.5,
        backoff=3,
        maxDelay=60,
        jitter=True,
        visibilityTimeout=120,
        queue=f"{queue_name}.high",
    )

    assert (job["maxAttempts"], job["initialDelay"], job["backoff"]) == (7, 0.5, 3.0)
    assert (job["maxDelay"], job["jitter"], job["visibilityTimeout"]) == (60.0, True, 120.0)
    assert job["queue"] == f"{queue_name}.high"


async def test_enqueue_keeps_the_priority_given_and_defaults_to_five(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    urgent = await create_job(priority=0)
    ordinary = await create_job()

    assert (urgent["priority"], ordinary["priority"]) == (0, 5)
    assert (await client.get(f"/jobs/{urgent['id']}")).json()["priority"] == 0
    listed = (await client.get("/jobs")).json()["items"]
    assert {item["id"]: item["priority"] for item in listed} == {
        urgent["id"]: 0,
        ordinary["id"]: 5,
    }


async def test_reused_idempotency_key_returns_200_with_the_same_job(
    client: httpx.AsyncClient,
) -> None:
    body = {"jobType": "email", "payload": {"n": 1}, "idempotencyKey": "same-key"}
    first = await client.post("/jobs", json=body)
    second = await client.post("/jobs", json={**body, "payload": {"n": 2}})

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["payload"] == {"n": 1}
    listed = await client.get("/jobs")
    assert listed.json()["total"] == 1


async def test_timestamps_are_iso_8601_utc(create_job: JobFactory) -> None:
    job = await create_job()

    for field in ("createdAt", "updatedAt", "nextRunAt"):
        assert parse_time(job[field]).utcoffset() == timedelta(0)
    assert job["startedAt"] is None
    assert job["finishedAt"] is None


async def test_delay_creates_a_job_due_later(create_job: JobFactory) -> None:
    job = await create_job(delay=120)

    due_in = parse_time(job["nextRunAt"]) - parse_time(job["createdAt"])
    assert timedelta(seconds=119) <= due_in <= timedelta(seconds=121)
    assert job["state"] == "PENDING"


async def test_run_at_creates_a_job_due_at_that_time(create_job: JobFactory) -> None:
    run_at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)

    job = await create_job(runAt=run_at.isoformat())

    assert parse_time(job["nextRunAt"]) == run_at


async def test_run_at_without_an_offset_is_read_as_utc(create_job: JobFactory) -> None:
    job = await create_job(runAt="2031-05-06T07:08:09")

    assert parse_time(job["nextRunAt"]) == datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("run_at", "due"),
    [
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),  # the earliest allowed
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),  # the latest
        ("9999-12-31T23:59:59+14:00", datetime(9999, 12, 31, 9, 59, 59, tzinfo=UTC)),
        ("2031-05-06T07:08:09-02:00", datetime(2031, 5, 6, 9, 8, 9, tzinfo=UTC)),
    ],
)
async def test_run_at_is_kept_in_utc_up_to_the_ends_of_its_range(
    create_job: JobFactory, run_at: str, due: datetime
) -> None:
    job = await create_job(runAt=run_at)

    assert job["nextRunAt"] in (due.isoformat(), due.isoformat().replace("+00:00", "Z"))


async def test_a_job_is_found_by_id(client: httpx.AsyncClient, create_job: JobFactory) -> None:
    job = await create_job(payload={"k": [1, 2, 3]})

    response = await client.get(f"/jobs/{job['id']}")

    assert response.status_code == 200
    assert response.json() == {**job, "errors": [], "result": None}


async def test_a_job_id_may_be_written_in_upper_case(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    job = await create_job()

    response = await client.get(f"/jobs/{job['id'].upper()}")

    assert response.status_code == 200
    assert response.json()["id"] == job["id"]


async def test_an_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    job_id = "01900000-0000-7000-8000-000000000000"

    body = assert_error(await client.get(f"/jobs/{job_id}"), 404, "not_found")

    assert job_id in body["message"]


async def test_list_is_an_envelope_newest_first(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    created = [await create_job(payload={"n": n}) for n in range(3)]

    response = await client.get("/jobs")

    assert response.status_code == 200
    page = response.json()
    assert set(page) == {"items", "limit", "offset", "total"}
    assert [item["id"] for item in page["items"]] == [job["id"] for job in reversed(created)]
    assert (page["limit"], page["offset"], page["total"]) == (50, 0, 3)


async def test_pages_are_stable_and_cover_every_job_once(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    created = [(await create_job())["id"] for _ in range(7)]

    seen: list[str] = []
    for offset in range(0, 9, 3):
        page = (await client.get("/jobs", params={"limit": 3, "offset": offset})).json()
        assert (page["limit"], page["offset"], page["total"]) == (3, offset, 7)
        seen += [item["id"] for item in page["items"]]

    assert seen == list(reversed(created))


@pytest.mark.parametrize(
    ("params", "limit", "offset"),
    [
        ({"limit": 500}, 200, 0),  # above the hard max: clamped
        ({"limit": 200}, 200, 0),  # exactly the max
        ({"offset": -5}, 50, 0),  # negative offset: normalized to 0
        ({"limit": 1, "offset": 2}, 1, 2),
        ({}, 50, 0),  # defaults
    ],
)
async def test_page_window_is_normalized(
    client: httpx.AsyncClient, params: dict[str, Any], limit: int, offset: int
) -> None:
    for path in ("/jobs", "/dlq"):
        page = (await client.get(path, params=params)).json()

        assert (page["limit"], page["offset"]) == (limit, offset), path


async def test_offset_beyond_the_end_gives_an_empty_page(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    await create_job()

    page = (await client.get("/jobs", params={"offset": 10})).json()

    assert (page["items"], page["total"]) == ([], 1)


async def test_queue_listing_shows_only_that_queue(
    client: httpx.AsyncClient, create_job: JobFactory, queue_name: str
) -> None:
    mine = await create_job()
    await create_job(queue=f"{queue_name}-elsewhere")

    page = (await client.get(f"/queues/{queue_name}/jobs")).json()

    assert [item["id"] for item in page["items"]] == [mine["id"]]
    assert page["total"] == 1


async def test_queue_listing_accepts_a_name_with_a_colon_like_the_spec_default(
    client: httpx.AsyncClient, create_job: JobFactory, queue_name: str
) -> None:
    # The spec's default is `jobs:ready`; a name of this run's own (its Redis list is
    # removed with the run's keys) with the same colon in the path.
    queue = f"{queue_name}:ready"
    job = await create_job(queue=queue)

    response = await client.get(f"/queues/{queue}/jobs", params={"status": "PENDING"})

    assert response.status_code == 200
    assert [item["id"] for item in response.json()["items"]] == [job["id"]]


@pytest.mark.parametrize("status", ["CANCELLED", "cancelled", "Cancelled"])
async def test_status_filter_is_case_insensitive(
    client: httpx.AsyncClient, create_job: JobFactory, queue_name: str, status: str
) -> None:
    cancelled = await create_job()
    await create_job()
    await client.post(f"/jobs/{cancelled['id']}/cancel")

    for path in (f"/queues/{queue_name}/jobs", "/jobs"):
        page = (await client.get(path, params={"status": status})).json()

        assert [item["id"] for item in page["items"]] == [cancelled["id"]], path
        assert page["total"] == 1


async def test_jobs_list_filters_by_queue_parameter(
    client: httpx.AsyncClient, create_job: JobFactory, queue_name: str
) -> None:
    other = await create_job(queue=f"{queue_name}-reports")
    await create_job()

    page = (await client.get("/jobs", params={"queue": f"{queue_name}-reports"})).json()

    assert [item["id"] for item in page["items"]] == [other["id"]]
