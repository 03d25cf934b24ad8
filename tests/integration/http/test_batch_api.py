"""POST /jobs/batch: many jobs in one request, all or nothing, answered in order."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.http.conftest import assert_error


async def test_batch_creates_every_job_in_request_order(
    client: httpx.AsyncClient, queue_name: str
) -> None:
    jobs = [{"jobType": "email", "payload": {"n": n}} for n in range(5)]

    response = await client.post("/jobs/batch", json={"jobs": jobs})

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["created"], body["existing"]) == (5, 0)
    for n, item in enumerate(body["items"]):
        assert (item["status"], item["state"]) == ("created", "PENDING")
        job = (await client.get(f"/jobs/{item['id']}")).json()
        assert (job["payload"], job["queue"]) == ({"n": n}, queue_name)


async def test_batch_honours_idempotency_keys_per_item(client: httpx.AsyncClient) -> None:
    first = (await client.post("/jobs", json={"jobType": "email", "idempotencyKey": "k1"})).json()

    response = await client.post(
        "/jobs/batch",
        json={
            "jobs": [
                {"jobType": "email", "idempotencyKey": "k1"},
                {"jobType": "email", "idempotencyKey": "k2"},
                {"jobType": "email", "idempotencyKey": "k2"},
            ]
        },
    )

    assert response.status_code == 201
    items = response.json()["items"]
    assert [item["status"] for item in items] == ["existing", "created", "existing"]
    assert items[0]["id"] == first["id"]
    assert items[1]["id"] == items[2]["id"]


async def test_batch_of_known_keys_only_answers_200(client: httpx.AsyncClient) -> None:
    await client.post("/jobs", json={"jobType": "email", "idempotencyKey": "again"})

    response = await client.post(
        "/jobs/batch", json={"jobs": [{"jobType": "email", "idempotencyKey": "again"}]}
    )

    assert response.status_code == 200
    assert response.json()["existing"] == 1


@pytest.mark.parametrize(
    ("bad_item", "field"),
    [
        ({"jobType": "email", "maxAttempts": "three"}, "jobs[2].maxAttempts"),  # wrong type
        ({"jobType": "email", "bogus": 1}, "jobs[2].bogus"),  # unknown field
        ({"jobType": "email", "priority": 10}, "jobs[2].priority"),  # out of range
        ({"payload": {}}, "jobs[2].jobType"),  # missing field
        ({"jobType": "has space"}, "jobs[2].jobType"),  # breaks a domain rule
        ({"jobType": "email", "initialDelay": 10, "maxDelay": 1}, "jobs[2].maxDelay"),
        # Due times outside 1970-9999 UTC: Postgres stored these (some as -infinity) and
        # answered 500.
        ({"jobType": "email", "runAt": "0001-01-01T00:00:00Z"}, "jobs[2].runAt"),
        ({"jobType": "email", "runAt": "9999-12-31T23:59:59.999999Z"}, "jobs[2].runAt"),
        ({"jobType": "email", "runAt": "9999-12-31T23:59:59-14:00"}, "jobs[2].runAt"),
    ],
)
async def test_a_bad_item_is_named_by_index_and_nothing_is_stored(
    client: httpx.AsyncClient, bad_item: dict[str, Any], field: str
) -> None:
    good = {"jobType": "email"}

    response = await client.post("/jobs/batch", json={"jobs": [good, good, bad_item, good]})

    body = assert_error(response, 400, "validation_error", field)
    assert body["message"].startswith(field)
    assert body["details"]["index"] == 2
    assert (await client.get("/jobs")).json()["total"] == 0


@pytest.mark.parametrize("count", [0, 1001])
async def test_batch_size_must_be_1_to_1000(client: httpx.AsyncClient, count: int) -> None:
    response = await client.post("/jobs/batch", json={"jobs": [{"jobType": "noop"}] * count})

    assert_error(response, 400, "validation_error", "jobs")


async def test_batch_keeps_the_priority_of_each_item(client: httpx.AsyncClient) -> None:
    body = {"jobs": [{"jobType": "email", "priority": 0}, {"jobType": "email"}]}

    response = await client.post("/jobs/batch", json=body)

    assert response.status_code == 201, response.text
    ids = [item["id"] for item in response.json()["items"]]
    priorities = [(await client.get(f"/jobs/{job_id}")).json()["priority"] for job_id in ids]
    assert priorities == [0, 5]
