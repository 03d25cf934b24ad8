"""Bad input: every rejection is the error shape with a stable code, naming the input."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.integration.http.conftest import JobFactory, assert_error

JSON = {"content-type": "application/json"}
UNKNOWN_ID = "01900000-0000-7000-8000-000000000003"
FULL_WIDTH_ID = "\uff10" + UNKNOWN_ID[1:]  # a full-width zero first


def levels(count: int) -> dict[str, Any]:
    """A payload `count` levels deep: the object, then lists inside lists."""
    value: list[Any] = []
    for _ in range(count - 2):
        value = [value]
    return {"a": value}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"jobType": "email", "bogus": 1}, "bogus"),  # unknown field: named, not "data"
        ({"payload": {}}, "jobType"),  # the one required field
        ({"jobType": "email", "maxAttempts": "3"}, "maxAttempts"),  # wrong type
        ({"jobType": "email", "maxAttempts": 2.5}, "maxAttempts"),
        ({"jobType": "email", "maxAttempts": 0}, "maxAttempts"),
        ({"jobType": "email", "maxAttempts": 1001}, "maxAttempts"),
        ({"jobType": "email", "payload": [1, 2]}, "payload"),  # payload not an object
        ({"jobType": "email", "payload": "text"}, "payload"),
        ({"jobType": "email", "payload": None}, "payload"),
        ({"jobType": "email", "payload": {"k": "a\u0000b"}}, "payload"),
        # Past MAX_PAYLOAD_DEPTH. Much deeper (about 980 levels, which the body parser still
        # takes), a stored payload made every answer holding it a 500, GET /jobs for everyone.
        ({"jobType": "email", "payload": levels(129)}, "payload"),
        # 24 KB as sent, 1 MB more once its numbers are written out in full as stored.
        ({"jobType": "email", "payload": {"n": [1e308] * 3405}}, "payload"),
        ({"jobType": ""}, "jobType"),
        ({"jobType": "has space"}, "jobType"),
        ({"jobType": "x" * 129}, "jobType"),
        ({"jobType": 5}, "jobType"),
        ({"jobType": "email", "queue": "taskforge:internal"}, "queue"),  # reserved prefix
        ({"jobType": "email", "queue": "a/b"}, "queue"),
        ({"jobType": "email", "idempotencyKey": ""}, "idempotencyKey"),
        ({"jobType": "email", "idempotencyKey": "k" * 256}, "idempotencyKey"),
        ({"jobType": "email", "idempotencyKey": "line\nbreak"}, "idempotencyKey"),
        ({"jobType": "email", "initialDelay": -1}, "initialDelay"),
        ({"jobType": "email", "backoff": 0.5}, "backoff"),
        ({"jobType": "email", "initialDelay": 10, "maxDelay": 5}, "maxDelay"),
        ({"jobType": "email", "maxDelay": 1e12}, "maxDelay"),
        ({"jobType": "email", "jitter": "yes"}, "jitter"),
        ({"jobType": "email", "visibilityTimeout": 0}, "visibilityTimeout"),
        ({"jobType": "email", "visibilityTimeout": 43201}, "visibilityTimeout"),
        ({"jobType": "email", "priority": -1}, "priority"),  # 0 (highest) to 9 (lowest)
        ({"jobType": "email", "priority": 10}, "priority"),
        ({"jobType": "email", "priority": "high"}, "priority"),
        ({"jobType": "email", "priority": 2.5}, "priority"),
        ({"jobType": "email", "priority": True}, "priority"),
        ({"jobType": "email", "delay": -1}, "delay"),
        ({"jobType": "email", "delay": 1e12}, "delay"),
        ({"jobType": "email", "runAt": "tomorrow"}, "runAt"),
        ({"jobType": "email", "runAt": "2030-01-01T00:00:00Z", "delay": 5}, "runAt"),
        # Due times outside 1970-01-01T00:00:00Z..9999-12-31T23:59:59Z:
        ({"jobType": "email", "runAt": "0001-01-01T00:00:00Z"}, "runAt"),  # was -infinity
        ({"jobType": "email", "runAt": "1969-12-31T23:59:59Z"}, "runAt"),
        ({"jobType": "email", "runAt": "1970-01-01T00:00:00+00:01"}, "runAt"),  # 1969 in UTC
        ({"jobType": "email", "runAt": "9999-12-31T23:59:59.5Z"}, "runAt"),
        ({"jobType": "email", "runAt": "9999-12-31T23:59:59-14:00"}, "runAt"),  # was a 500
        ({"jobType": "email", "runAt": "0001-01-01T00:00:00+14:00"}, "runAt"),
    ],
)
async def test_invalid_job_is_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/jobs", json=body)

    assert_error(response, 400, "validation_error", field)
    assert (await client.get("/jobs")).json()["total"] == 0


async def test_a_payload_at_the_depth_bound_is_stored_and_answered(
    client: httpx.AsyncClient,
) -> None:
    deepest = levels(128)

    created = await client.post("/jobs", json={"jobType": "email", "payload": deepest})

    assert created.status_code == 201
    job = await client.get(f"/jobs/{created.json()['id']}")
    assert job.json()["payload"] == deepest
    listed = await client.get("/jobs")
    assert [each["payload"] for each in listed.json()["items"]] == [deepest]


@pytest.mark.parametrize("delay", [b'"5"', b"-1", b"1e12", b"1e400"], ids=bytes.decode)
async def test_a_bad_delay_without_a_run_at_is_not_told_about_run_at(
    client: httpx.AsyncClient, delay: bytes
) -> None:
    content = b'{"jobType": "email", "delay": ' + delay + b"}"

    response = await client.post("/jobs", content=content, headers=JSON)

    body = assert_error(response, 400, "validation_error", "delay")
    assert body["message"] == "delay: must be a number of seconds from 0 to 315360000"


@pytest.mark.parametrize(
    ("path", "content", "field"),
    [
        ("/jobs", b'{"jobType": "email", "payload": {"n": 1e400}}', "payload"),
        ("/jobs", b'{"jobType": "email", "payload": {"n": [1, {"m": -1e400}]}}', "payload"),
        (
            "/jobs/batch",
            b'{"jobs": [{"jobType": "email", "payload": {"n": 1e400}}]}',
            "jobs[0].payload",
        ),
    ],
    ids=["payload", "nested", "batch"],
)
async def test_a_number_out_of_range_in_a_payload_is_named_in_the_message(
    client: httpx.AsyncClient, path: str, content: bytes, field: str
) -> None:
    response = await client.post(path, content=content, headers=JSON)

    body = assert_error(response, 400, "validation_error", field)
    assert body["details"]["problem"] == "Number out of range"
    assert body["message"] == (
        f"{field}: must not hold a number out of a 64-bit float's range "
        "(about ±1.8e308); send such numbers as strings"
    )


async def test_unknown_field_message_lists_the_allowed_fields(client: httpx.AsyncClient) -> None:
    response = await client.post("/jobs", json={"jobType": "email", "job_type": "email"})

    body = assert_error(response, 400, "validation_error", "job_type")
    assert "jobType" in body["message"]
    assert "maxAttempts" in body["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # the domain names fields in snake_case; the API answers in its own camelCase
        (
            {"jobType": "email", "initialDelay": 10, "maxDelay": 5},
            "maxDelay: must be >= initialDelay",
        ),
        (
            {"jobType": "email", "runAt": "2030-01-01T00:00:00Z", "delay": 5},
            "runAt: give runAt or delay, not both",
        ),
        (
            {"jobType": "email", "idempotencyKey": "line\nbreak"},
            "idempotencyKey: must contain printable characters only",
        ),
    ],
)
async def test_domain_errors_name_fields_as_the_api_spells_them(
    client: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    single = (await client.post("/jobs", json=body)).json()
    batch = (await client.post("/jobs/batch", json={"jobs": [{"jobType": "ok"}, body]})).json()

    assert single["message"].startswith(message)
    assert batch["message"].startswith(f"jobs[1].{message}")


@pytest.mark.parametrize(
    "content",
    [
        b"{bad json",
        b'{"jobType": "email",}',
        b'{"jobType": "\\ud800"}',  # a lone surrogate is not text
        b"[" * 100_000 + b"]" * 100_000,  # nested beyond any parser's depth
    ],
    ids=["malformed", "trailing-comma", "lone-surrogate", "too-deep"],
)
async def test_malformed_json_is_400_naming_the_body(
    client: httpx.AsyncClient, content: bytes
) -> None:
    response = await client.post("/jobs", content=content, headers=JSON)

    assert_error(response, 400, "validation_error", "body")


async def test_a_lone_surrogate_is_named_as_such(client: httpx.AsyncClient) -> None:
    content = b'{"jobType": "email", "payload": {"to": "\\ud800"}}'

    response = await client.post("/jobs", content=content, headers=JSON)

    body = assert_error(response, 400, "validation_error", "body")
    assert body["message"] == "body: malformed JSON (a lone UTF-16 surrogate \\ud800 at byte 40)"


async def test_escaped_text_that_reads_as_a_surrogate_leaves_the_real_mistake_named(
    client: httpx.AsyncClient,
) -> None:
    # "C:\\ud800" is a backslash and the letters ud800, not an escape.
    content = b'{"jobType": "email", "payload": {"path": "C:\\\\ud800"},}'

    response = await client.post("/jobs", content=content, headers=JSON)

    body = assert_error(response, 400, "validation_error", "body")
    assert "trailing comma" in body["message"]


@pytest.mark.parametrize("content", [b"", b"   ", b"null", b"[]", b'"email"', b"42"], ids=repr)
async def test_post_jobs_without_a_json_object_is_400(
    client: httpx.AsyncClient, content: bytes
) -> None:
    response = await client.post("/jobs", content=content, headers=JSON)

    assert_error(response, 400, "validation_error", "body")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x"]
)
async def test_a_body_declared_as_not_json_is_415(
    client: httpx.AsyncClient, content_type: str
) -> None:
    response = await client.post(
        "/jobs", content=b'{"jobType": "email"}', headers={"content-type": content_type}
    )

    assert_error(response, 415, "validation_error", "Content-Type")


@pytest.mark.parametrize("encoding", ["gzip", "br", "GZIP", "identity, deflate"])
async def test_a_compressed_body_is_415_naming_the_encoding(
    client: httpx.AsyncClient, encoding: str
) -> None:
    headers = {**JSON, "content-encoding": encoding}

    response = await client.post(
        "/jobs", content=gzip.compress(b'{"jobType": "email"}'), headers=headers
    )

    body = assert_error(response, 415, "validation_error", "Content-Encoding")
    assert body["message"] == (
        f"Content-Encoding {encoding!r} is not supported: send the body uncompressed"
    )
    assert response.headers["accept-encoding"] == "identity"  # RFC 9110 15.5.16
    assert (await client.get("/jobs")).json()["total"] == 0


@pytest.mark.parametrize("encoding", ["identity", "Identity", ""])
async def test_an_identity_content_encoding_is_accepted(
    client: httpx.AsyncClient, encoding: str
) -> None:
    headers = {**JSON, "content-encoding": encoding}

    response = await client.post("/jobs", content=b'{"jobType": "email"}', headers=headers)

    assert response.status_code == 201, response.text


async def test_curl_default_form_content_type_is_read_as_json(client: httpx.AsyncClient) -> None:
    # What `curl -X POST .../jobs -d '{"jobType":"email"}'` sends.
    headers = {"content-type": "application/x-www-form-urlencoded"}

    created = await client.post("/jobs", content=b'{"jobType": "email"}', headers=headers)
    not_json = await client.post("/jobs", content=b"jobType=email", headers=headers)

    assert created.status_code == 201, created.text
    assert_error(not_json, 400, "validation_error", "body")


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/vnd.api+json", None],
)
async def test_json_content_types_and_a_missing_one_are_accepted(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}

    response = await client.post("/jobs", content=b'{"jobType": "email"}', headers=headers)

    assert response.status_code == 201


@pytest.mark.parametrize("action", ["cancel", "dlq"])
@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"reason": 5}', "reason"),
        (b'{"reason": "' + b"r" * 1001 + b'"}', "reason"),
        (b'{"reason": "a\\u0000b"}', "reason"),
        (b'{"why": "x"}', "why"),
        (b"[]", "body"),
        (b"{oops", "body"),
    ],
)
async def test_invalid_reason_body_is_400_and_changes_nothing(
    client: httpx.AsyncClient, create_job: JobFactory, action: str, content: bytes, field: str
) -> None:
    job = await create_job()

    response = await client.post(f"/jobs/{job['id']}/{action}", content=content, headers=JSON)

    assert_error(response, 400, "validation_error", field)
    assert (await client.get(f"/jobs/{job['id']}")).json()["state"] == "PENDING"


Arrange = Callable[[httpx.AsyncClient, str], Awaitable[tuple[str, str]]]
"""Readies an action that takes no body to change something (on the given queue name):
the action's path, and the path of the resource that shows the change."""


async def _posted(client: httpx.AsyncClient, path: str, json: Any = None) -> dict[str, Any]:
    response = await client.post(path, json=json)
    assert response.status_code in (200, 201), response.text
    answer: dict[str, Any] = response.json()
    return answer


async def retry_of_a_cancelled_job(client: httpx.AsyncClient, queue_name: str) -> tuple[str, str]:
    job = await _posted(client, "/jobs", {"jobType": "email"})
    await _posted(client, f"/jobs/{job['id']}/cancel")
    return f"/jobs/{job['id']}/retry", f"/jobs/{job['id']}"


async def replay_of_a_dead_letter(client: httpx.AsyncClient, queue_name: str) -> tuple[str, str]:
    job = await _posted(client, "/jobs", {"jobType": "email"})
    await _posted(client, f"/jobs/{job['id']}/dlq")
    return f"/dlq/{job['id']}/replay", f"/jobs/{job['id']}"


async def pause_of_a_queue(client: httpx.AsyncClient, queue_name: str) -> tuple[str, str]:
    return f"/queues/{queue_name}/pause", "/queues"


async def resume_of_a_paused_queue(client: httpx.AsyncClient, queue_name: str) -> tuple[str, str]:
    await _posted(client, f"/queues/{queue_name}/pause")
    return f"/queues/{queue_name}/resume", "/queues"


async def pause_of_a_schedule(client: httpx.AsyncClient, queue_name: str) -> tuple[str, str]:
    await _posted(client, "/schedules", {"name": "nightly", "cron": "0 2 * * *", "jobType": "r"})
    return "/schedules/nightly/pause", "/schedules/nightly"


async def resume_of_a_paused_schedule(
    client: httpx.AsyncClient, queue_name: str
) -> tuple[str, str]:
    await _posted(client, "/schedules", {"name": "nightly", "cron": "0 2 * * *", "jobType": "r"})
    await _posted(client, "/schedules/nightly/pause")
    return "/schedules/nightly/resume", "/schedules/nightly"


BODILESS_ACTIONS: dict[str, Arrange] = {
    "/jobs/{job_id}/retry": retry_of_a_cancelled_job,
    "/dlq/{job_id}/replay": replay_of_a_dead_letter,
    "/queues/{queue_name}/pause": pause_of_a_queue,
    "/queues/{queue_name}/resume": resume_of_a_paused_queue,
    "/schedules/{name}/pause": pause_of_a_schedule,
    "/schedules/{name}/resume": resume_of_a_paused_schedule,
}
"""Every POST route that takes no body, by its path in the OpenAPI document."""
QUERY_ROUTES = {"/jobs", "/queues/{queue_name}/jobs", "/dlq"}
"""Every route that takes query parameters, all of them in the tests of unknown ones below."""
UNQUERIED_READS = {
    "/jobs/{job_id}": "/jobs/00000000-0000-0000-0000-000000000000",
    "/dlq/{job_id}": "/dlq/00000000-0000-0000-0000-000000000000",
    "/queues": "/queues",
    "/workers": "/workers",
    "/schedules": "/schedules",
    "/schedules/{name}": "/schedules/nightly",
    "/stats": "/stats",
}
"""Every other GET route of the API but the probes and the metrics scrape (which take any
query string, as scrapers and probes may add their own), by its path in the document."""


async def test_the_tables_here_cover_every_route_without_a_body_or_with_query_parameters(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/schema/openapi.json")).json()["paths"]

    bodiless = {
        path for path, item in paths.items() if "post" in item and "requestBody" not in item["post"]
    }
    queried = {
        path
        for path, item in paths.items()
        for operation in item.values()
        if any(parameter["in"] == "query" for parameter in operation.get("parameters", []))
    }

    reads = {path for path, item in paths.items() if "get" in item}
    assert bodiless == set(BODILESS_ACTIONS)
    assert queried == QUERY_ROUTES
    assert reads - queried == {*UNQUERIED_READS, "/healthz", "/readyz", "/metrics"}


@pytest.mark.parametrize("arrange", BODILESS_ACTIONS.values(), ids=list(BODILESS_ACTIONS))
@pytest.mark.parametrize(
    "content",
    [
        b"garbage",  # what `curl -d garbage` sends
        b'{"x": 1}',
        b'{"reason": "r"}',  # only cancel and dlq take a reason
        b"[]",
        b"null",
        b"{}{}",
    ],
    ids=bytes.decode,
)
async def test_a_body_sent_to_an_action_that_takes_none_is_400_and_changes_nothing(
    client: httpx.AsyncClient, queue_name: str, arrange: Arrange, content: bytes
) -> None:
    action, shown_at = await arrange(client, queue_name)
    before = (await client.get(shown_at)).json()

    response = await client.post(action, content=content, headers=JSON)

    body = assert_error(response, 400, "validation_error", "body")
    assert body["message"] == "body: this route takes no body; send none, or {}"
    assert (await client.get(shown_at)).json() == before


@pytest.mark.parametrize("arrange", BODILESS_ACTIONS.values(), ids=list(BODILESS_ACTIONS))
@pytest.mark.parametrize("content", [b"", b" \r\n", b"{}", b" { }\n"], ids=repr)
async def test_an_action_that_takes_no_body_accepts_an_empty_one_or_an_empty_object(
    client: httpx.AsyncClient, queue_name: str, arrange: Arrange, content: bytes
) -> None:
    action, shown_at = await arrange(client, queue_name)
    before = (await client.get(shown_at)).json()

    response = await client.post(action, content=content, headers=JSON)

    assert response.status_code == 200, response.text
    assert (await client.get(shown_at)).json() != before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs/not-a-uuid"),
        ("GET", "/jobs/12345"),
        # Only the canonical 8-4-4-4-12 form; Python's UUID() would accept all of these.
        ("GET", f"/jobs/urn:uuid:{UNKNOWN_ID}"),
        ("GET", f"/jobs/{UNKNOWN_ID.replace('-', '')}"),
        ("GET", f"/jobs/{{{UNKNOWN_ID}}}"),
        ("GET", f"/jobs/{FULL_WIDTH_ID}"),
        ("POST", f"/jobs/{UNKNOWN_ID.replace('-', '')}/cancel"),
        ("GET", f"/dlq/urn:uuid:{UNKNOWN_ID}"),
        ("POST", f"/dlq/{UNKNOWN_ID.replace('-', '')}/replay"),
        ("POST", "/jobs/not-a-uuid/cancel"),
        ("POST", "/jobs/not-a-uuid/dlq"),
        ("POST", "/jobs/not-a-uuid/retry"),
        ("GET", "/dlq/not-a-uuid"),
        ("POST", "/dlq/not-a-uuid/replay"),
    ],
)
async def test_invalid_id_is_400_naming_id(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    assert_error(await client.request(method, path), 400, "validation_error", "id")


@pytest.mark.parametrize("path", ["/jobs", "/queues/jobs:ready/jobs"])
async def test_unknown_status_is_400_naming_the_allowed_values(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path, params={"status": "DONE"})

    body = assert_error(response, 400, "validation_error", "status")
    for state in ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "DLQ", "CANCELLED"):
        assert state in body["message"]
    assert "DONE" in body["message"]


@pytest.mark.parametrize("path", ["/jobs", "/queues/jobs:ready/jobs", "/dlq"])
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"offset": "x"}, "offset"),
        ({"offset": 2**40}, "offset"),  # deeper than any store pages
    ],
)
async def test_bad_page_parameter_is_400(
    client: httpx.AsyncClient, path: str, params: dict[str, Any], field: str
) -> None:
    assert_error(await client.get(path, params=params), 400, "validation_error", field)


@pytest.mark.parametrize("path", ["/jobs", "/dlq"])
async def test_an_offset_past_the_deepest_page_is_named_as_too_large(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path, params={"offset": 2**63 - 1})

    body = assert_error(response, 400, "validation_error", "offset")
    assert body["message"] == (
        "offset: must be a whole number up to 2147483647 (negative values count as 0)"
    )


@pytest.mark.parametrize(
    ("url", "name", "allowed"),
    [
        ("/dlq?queue=other", "queue", "limit, offset"),  # dead letters have no queue filter
        ("/dlq?limit=5&verbose", "verbose", "limit, offset"),  # a flag without a value
        ("/jobs?jobType=email", "jobType", "limit, offset, queue, status"),
        ("/jobs?bogus=1", "bogus", "limit, offset, queue, status"),
        ("/jobs?limit=5&Limit=5", "Limit", "limit, offset, queue, status"),  # case-sensitive
        ("/jobs?state=PENDING", "state", "limit, offset, queue, status"),  # the API says status
        ("/queues/jobs:ready/jobs?queue=other", "queue", "limit, offset, status"),  # in the path
    ],
)
async def test_an_unknown_query_parameter_is_400_naming_it_and_the_allowed_ones(
    client: httpx.AsyncClient, url: str, name: str, allowed: str
) -> None:
    response = await client.get(url)

    body = assert_error(response, 400, "validation_error", name)
    assert body["message"] == f"{name}: unknown query parameter; allowed: {allowed}"


@pytest.mark.parametrize("path", UNQUERIED_READS.values(), ids=list(UNQUERIED_READS))
async def test_a_query_parameter_sent_to_a_read_that_takes_none_is_400_naming_it(
    client: httpx.AsyncClient, path: str
) -> None:
    # Before any look-up: the 400 comes for a job or schedule that does not exist too.
    response = await client.get(path, params={"queue": "emails"})

    body = assert_error(response, 400, "validation_error", "queue")
    assert body["message"] == "queue: unknown query parameter; allowed: none"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/jobs", {"limit": 500, "offset": -1, "status": "pending", "queue": "jobs:ready"}),
        ("/queues/jobs:ready/jobs", {"limit": 500, "offset": -1, "status": ""}),
        ("/dlq", {"limit": 500, "offset": -1}),
    ],
)
async def test_every_query_parameter_a_list_takes_is_accepted_together(
    client: httpx.AsyncClient, path: str, params: dict[str, Any]
) -> None:
    response = await client.get(path, params=params)

    assert response.status_code == 200, response.text
    assert (response.json()["limit"], response.json()["offset"]) == (200, 0)


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("POST", "/queues/a%2Fb/pause", "queue"),
        ("GET", "/queues/a%2fb/jobs", "queue"),
        ("GET", "/schedules/a%2Fb", "name"),
        ("GET", "/jobs/a%2Fb", "id"),
        ("POST", "/dlq/a%2Fb/replay", "id"),
    ],
)
async def test_an_encoded_slash_in_a_name_is_400_naming_it(
    client: httpx.AsyncClient, method: str, path: str, field: str
) -> None:
    # Decoded before routing, the path matches no route; the mistake is the name.
    response = await client.request(method, path)

    body = assert_error(response, 400, "validation_error", field)
    assert body["message"] == f"{field}: must not hold a slash (%2F in the path)"


async def test_an_encoded_slash_elsewhere_in_a_path_is_no_route(client: httpx.AsyncClient) -> None:
    job_id = "01a242e0-dd62-7000-be28-80b62ae12066"

    assert_error(await client.post(f"/jobs/{job_id}/retry%2Fx"), 404, "not_found")
    assert_error(await client.get("/nope%2Fx"), 404, "not_found")


@pytest.mark.parametrize("queue", ["taskforge:internal", "bad queue", "x" * 129])
async def test_invalid_queue_name_is_400(client: httpx.AsyncClient, queue: str) -> None:
    assert_error(await client.get(f"/queues/{queue}/jobs"), 400, "validation_error", "queue")
    assert_error(
        await client.get("/jobs", params={"queue": queue}), 400, "validation_error", "queue"
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("POST", "/jobs/x/y/z"), ("GET", "/queues/x"), ("GET", "/")],
)
async def test_unknown_route_is_404_not_found(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)

    assert_error(response, 404, "not_found")
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/jobs"),
        ("PUT", f"/jobs/{UNKNOWN_ID}"),
        ("GET", f"/jobs/{UNKNOWN_ID}/cancel"),
        ("POST", "/healthz"),
        ("PATCH", "/dlq"),
    ],
)
async def test_wrong_method_is_405_method_not_allowed(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)

    assert_error(response, 405, "method_not_allowed")
    assert response.headers["x-request-id"]


@pytest.mark.parametrize("overrides", [{"max_payload_bytes": 2048}])
async def test_body_over_max_payload_bytes_is_413(client: httpx.AsyncClient) -> None:
    body = {"jobType": "email", "payload": {"blob": "x" * 4096}}

    response = await client.post("/jobs", json=body)

    assert_error(response, 413, "payload_too_large")
    assert response.headers["x-request-id"]
    assert (await client.get("/jobs")).json()["total"] == 0


@pytest.mark.parametrize("overrides", [{"max_payload_bytes": 2048}])
async def test_streamed_body_over_the_limit_is_413_without_a_length(
    client: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"jobType": "email", "payload": {"blob": "'
        for _ in range(8):
            yield b"x" * 512
        yield b'"}}'

    response = await client.post("/jobs", content=chunks(), headers=JSON)

    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize("overrides", [{"max_payload_bytes": 2048}])
async def test_body_just_under_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/jobs", json={"jobType": "email", "payload": {"b": "x" * 1900}})

    assert response.status_code == 201
