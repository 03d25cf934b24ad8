"""HTTP as clients and proxies expect it: HEAD wherever GET is, Allow headers that list every
method of a route, open probes with or without a trailing slash, one charset on /metrics,
and a client that disconnects mid-body counted as 499 rather than as a server error."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from dishka import AsyncContainer

from taskforge.adapters.telemetry.metrics import HttpMetrics
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.http.app import create_app
from tests.integration.http.conftest import LogLines, assert_error

TOKEN = "s3cret-token"
PROTECTED = pytest.mark.parametrize("overrides", [{"api_token": TOKEN}])


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/metrics", "/stats", "/jobs", "/dlq", "/schema/openapi.json"]
)
async def test_head_answers_like_get_without_a_body(client: httpx.AsyncClient, path: str) -> None:
    get = await client.get(path)

    head = await client.head(path)

    assert (head.status_code, get.status_code) == (200, 200)
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert "x-request-id" in head.headers


async def test_head_on_a_post_only_route_is_405_without_head_in_allow(
    client: httpx.AsyncClient,
) -> None:
    response = await client.head("/jobs/batch")

    assert response.status_code == 405
    assert response.content == b""
    assert response.headers["allow"] == "OPTIONS, POST"


async def test_options_lists_every_method_of_the_route_like_the_405_does(
    client: httpx.AsyncClient,
) -> None:
    options = await client.options("/jobs")
    refused = await client.put("/jobs")

    assert options.status_code == 204
    assert options.headers["allow"] == "GET, HEAD, OPTIONS, POST"
    assert_error(refused, 405, "method_not_allowed")
    assert refused.headers["allow"] == options.headers["allow"]


@PROTECTED
@pytest.mark.parametrize("path", ["/healthz/", "/readyz/", "/metrics/"])
async def test_probes_with_a_trailing_slash_need_no_token(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)

    assert response.status_code == 200


@PROTECTED
async def test_other_routes_with_a_trailing_slash_still_need_the_token(
    client: httpx.AsyncClient,
) -> None:
    assert_error(await client.get("/jobs/"), 401, "unauthorized")


async def test_metrics_content_type_names_its_charset_once(client: httpx.AsyncClient) -> None:
    content_type = (await client.get("/metrics")).headers["content-type"]

    assert content_type.startswith("text/plain; version=")
    assert content_type.count("charset") == 1


def _post_scope(path: str, declared_length: int) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"taskforge.test"),
            (b"content-type", b"application/json"),
            (b"content-length", str(declared_length).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("taskforge.test", 80),
        "state": {},
    }


async def test_a_client_that_disconnects_mid_body_is_counted_as_499_not_as_an_error(
    container: AsyncContainer, settings: Settings, logs: LogLines
) -> None:
    app = create_app(container, settings)
    sent_by_client: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"jobType": "em', "more_body": True},
        {"type": "http.disconnect"},
    ]
    messages = iter(sent_by_client)

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        return None

    await app(_post_scope("/jobs", 100), receive, send)  # type: ignore[arg-type]

    metrics = await container.get(HttpMetrics)
    labels = {"method": "POST", "route": "/jobs"}
    count = metrics.registry.get_sample_value
    assert count("taskforge_http_requests_total", {**labels, "status": "499"}) == 1
    assert count("taskforge_http_requests_total", {**labels, "status": "500"}) is None
    lines = logs()
    assert [line["status"] for line in lines if line["logger"] == "taskforge.http.access"] == [499]
    assert not [line for line in lines if line["level"] == "error"], lines
