"""What every request gets: an X-Request-ID, the bearer-token check when API_TOKEN is set,
and structured log lines that carry the request id."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from taskforge.adapters.telemetry.logging import configure_logging
from tests.integration.http.conftest import JobFactory, LogLines, assert_error

TOKEN = "s3cret-token"
PROTECTED = pytest.mark.parametrize("overrides", [{"api_token": TOKEN}])
GENERATED_ID = re.compile(r"[0-9a-f]{32}")

ANY_RESPONSE = pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/healthz", {}, 200),
        ("POST", "/jobs", {"json": {"jobType": "email"}}, 201),
        ("POST", "/jobs", {"json": {"bogus": 1}}, 400),
        ("GET", "/jobs/01900000-0000-7000-8000-000000000000", {}, 404),
        ("GET", "/no/such/route", {}, 404),
        ("DELETE", "/jobs", {}, 405),
        ("POST", "/jobs", {"content": b"x", "headers": {"content-type": "text/plain"}}, 415),
    ],
)


@ANY_RESPONSE
async def test_every_response_echoes_a_sane_request_id(
    client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    options = {**kwargs, "headers": {**kwargs.get("headers", {}), "x-request-id": "client-req:42"}}

    response = await client.request(method, path, **options)

    assert response.status_code == status
    assert response.headers["x-request-id"] == "client-req:42"


@ANY_RESPONSE
async def test_every_response_gets_a_generated_request_id_when_none_is_sent(
    client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    response = await client.request(method, path, **kwargs)

    assert response.status_code == status
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])


@pytest.mark.parametrize(
    "incoming",
    [
        b"x" * 129,  # too long to log or echo
        b"caf\xc3\xa9",  # not ASCII
        b"tab\there",  # a control character
        b" padded ",
    ],
    ids=["too-long", "non-ascii", "control", "padded"],
)
async def test_an_insane_request_id_is_replaced(client: httpx.AsyncClient, incoming: bytes) -> None:
    response = await client.get("/healthz", headers=[(b"x-request-id", incoming)])

    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])


async def test_a_request_id_of_128_printable_characters_is_kept(
    client: httpx.AsyncClient,
) -> None:
    incoming = "r" * 64 + " !~" + "q" * 61

    response = await client.get("/healthz", headers={"x-request-id": incoming})

    assert response.headers["x-request-id"] == incoming


async def test_each_request_without_an_id_gets_its_own(client: httpx.AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")

    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@PROTECTED
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN],
)
async def test_without_the_right_token_a_route_is_401(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}

    response = await client.get("/jobs", headers=headers)

    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])


@PROTECTED
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/jobs"),
        ("GET", "/stats"),
        ("GET", "/dlq"),
        ("GET", "/schemas"),
        ("GET", "/no/such/route"),
    ],
)
async def test_every_other_route_needs_the_token(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    assert_error(await client.request(method, path), 401, "unauthorized")


@PROTECTED
@pytest.mark.parametrize("path", ["/schema", "/schema/openapi.json", "/schema/swagger"])
async def test_the_api_docs_open_without_the_token_so_a_browser_can_load_them(
    client: httpx.AsyncClient, path: str
) -> None:
    assert (await client.get(path)).status_code == 200


@PROTECTED
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_the_right_token_is_accepted_with_any_scheme_case(
    client: httpx.AsyncClient, scheme: str
) -> None:
    headers = {"authorization": f"{scheme} {TOKEN}"}

    created = await client.post("/jobs", json={"jobType": "email"}, headers=headers)
    listed = await client.get("/jobs", headers=headers)

    assert (created.status_code, listed.status_code) == (201, 200)
    assert listed.json()["total"] == 1


@PROTECTED
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_and_metrics_need_no_token(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 200


@PROTECTED
async def test_a_refused_request_changes_nothing(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    await client.post("/jobs", json={"jobType": "email"})

    listed = await client.get("/jobs", headers={"authorization": f"Bearer {TOKEN}"})

    assert listed.json()["total"] == 0


async def test_an_access_line_is_logged_per_request(
    client: httpx.AsyncClient, logs: LogLines
) -> None:
    await client.post("/jobs", json={"jobType": "email"}, headers={"x-request-id": "req-1"})
    await client.get("/nope", headers={"x-request-id": "req-2"})

    access = [line for line in logs() if line["logger"] == "taskforge.http.access"]
    assert [(line["method"], line["path"], line["status"]) for line in access] == [
        ("POST", "/jobs", 201),
        ("GET", "/nope", 404),
    ]
    assert [line["request_id"] for line in access] == ["req-1", "req-2"]
    for line in access:
        assert {"time", "level", "message", "latency_ms"} <= set(line)
        assert line["level"] == "info"
        assert isinstance(line["latency_ms"], float)
        assert line["latency_ms"] >= 0


@PROTECTED
async def test_a_refused_request_is_logged_with_its_status(
    client: httpx.AsyncClient, logs: LogLines
) -> None:
    await client.get("/jobs", headers={"x-request-id": "req-401"})

    [line] = [line for line in logs() if line["logger"] == "taskforge.http.access"]
    assert (line["status"], line["request_id"]) == (401, "req-401")


async def test_concurrent_requests_log_their_own_request_ids(
    client: httpx.AsyncClient, logs: LogLines
) -> None:
    queues = [f"q{n}" for n in range(20)]

    await asyncio.gather(
        *(
            client.get(f"/queues/{queue}/jobs", headers={"x-request-id": f"req-{queue}"})
            for queue in queues
        )
    )

    access = [line for line in logs() if line["logger"] == "taskforge.http.access"]
    assert sorted(line["path"] for line in access) == sorted(f"/queues/{q}/jobs" for q in queues)
    for line in access:
        queue = line["path"].split("/")[2]
        assert line["request_id"] == f"req-{queue}"


@contextmanager
def configured_logging(level: str) -> Iterator[io.StringIO]:
    """The process-wide setup `taskforge` runs at start, writing to a buffer; undone after."""
    root = logging.getLogger()
    uvicorn_access = logging.getLogger("uvicorn.access")
    saved = (root.handlers[:], root.level, uvicorn_access.disabled)
    stream = io.StringIO()
    try:
        configure_logging(level, "json")
        [handler] = root.handlers
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
        yield stream
    finally:
        handlers, level_number, access_disabled = saved
        root.handlers[:] = handlers
        root.setLevel(level_number)
        uvicorn_access.disabled = access_disabled


@pytest.mark.parametrize(("level", "written"), [("debug", 1), ("info", 1), ("warn", 0)])
async def test_log_lines_are_json_objects_at_the_configured_level(
    client: httpx.AsyncClient, level: str, written: int
) -> None:
    with configured_logging(level) as stream:
        await client.get("/dlq", headers={"x-request-id": "req-lvl"})

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [line for line in lines if line.get("logger") == "taskforge.http.access"]
    assert len(access) == written
    for line in access:
        assert {"time", "level", "message", "request_id", "method", "path", "status"} <= set(line)
        assert (line["method"], line["path"], line["status"]) == ("GET", "/dlq", 200)
        assert line["request_id"] == "req-lvl"
        assert line["time"].endswith("+00:00")
