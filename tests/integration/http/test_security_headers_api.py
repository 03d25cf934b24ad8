"""What every API answer carries so that no cache keeps it and no browser reads it as
anything but what it says (Cache-Control: no-store, X-Content-Type-Options: nosniff), errors
the middleware sends itself included; the static files keep their caching; the docs page has
a Content-Security-Policy that no other site may frame it under. The dashboard's answers
(pages, redirects, errors; not its files) carry its own policy and no-store too."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from taskforge.entrypoints.http.app import DOCS_ASSETS_PATH

TOKEN = "s3cret-token"


def assert_not_stored(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/jobs", {}, 200),
        ("POST", "/jobs", {"json": {"jobType": "email"}}, 201),
        ("GET", "/dlq", {}, 200),
        ("GET", "/stats", {}, 200),
        ("GET", "/schedules", {}, 200),
        ("POST", "/jobs", {"json": {"bogus": 1}}, 400),
        ("GET", "/jobs/01900000-0000-7000-8000-000000000000", {}, 404),
        ("GET", "/no/such/route", {}, 404),
        ("DELETE", "/jobs", {}, 405),
        ("GET", "/schema/openapi.json", {}, 200),
        ("GET", f"{DOCS_ASSETS_PATH}/no-such-file.js", {}, 404),
    ],
)
async def test_api_answers_are_not_stored_and_not_sniffed(
    client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    assert_not_stored(await client.request(method, path, **kwargs), status)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_and_the_metrics_scrape_are_not_stored_either(
    client: httpx.AsyncClient, path: str
) -> None:
    assert_not_stored(await client.get(path), 200)


@pytest.mark.parametrize("overrides", [{"api_token": TOKEN}])
async def test_the_middlewares_own_401_is_not_stored(client: httpx.AsyncClient) -> None:
    assert_not_stored(await client.get("/jobs"), 401)


@pytest.mark.parametrize("overrides", [{"max_payload_bytes": 2048}])
async def test_a_413_is_not_stored(client: httpx.AsyncClient) -> None:
    body = {"jobType": "email", "payload": {"blob": "x" * 4096}}

    assert_not_stored(await client.post("/jobs", json=body), 413)


async def test_a_head_answer_has_the_headers_of_its_get(client: httpx.AsyncClient) -> None:
    assert_not_stored(await client.head("/jobs"), 200)


async def test_a_dashboard_file_keeps_its_caching_and_is_not_sniffed(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/ui/static/dashboard.js")

    assert response.status_code == 200
    assert set(response.headers) == {
        "content-type",
        "content-disposition",
        "content-length",
        "last-modified",
        "etag",
        "x-request-id",
        "x-content-type-options",
    }
    assert response.headers["x-content-type-options"] == "nosniff"


def assert_dashboard_headers(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert_not_stored(response, status)
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "same-origin"


async def test_a_dashboard_page_is_not_stored_framed_or_sniffed(client: httpx.AsyncClient) -> None:
    assert_dashboard_headers(await client.get("/ui"), 200)


@pytest.mark.parametrize("overrides", [{"api_token": TOKEN}])
async def test_the_dashboards_redirects_carry_its_headers(client: httpx.AsyncClient) -> None:
    # Not signed in: sent to the login page; the redirect's target names the page asked for.
    response = await client.get("/ui/jobs?state=dlq")

    assert_dashboard_headers(response, 303)
    assert response.headers["location"].startswith("/ui/login?next=")


async def test_a_missing_dashboard_file_is_not_stored(client: httpx.AsyncClient) -> None:
    assert_dashboard_headers(await client.get("/ui/static/no-such-file.js"), 404)


async def test_a_docs_file_keeps_its_caching_and_is_not_sniffed(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js")

    assert response.status_code == 200
    assert "cache-control" not in response.headers
    assert response.headers["etag"]
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("overrides", [{}, {"api_token": TOKEN}], ids=["open", "secured"])
@pytest.mark.parametrize("path", ["/schema", "/schema/swagger"])
async def test_the_docs_page_admits_its_own_inline_blocks_and_no_framing(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)

    assert_not_stored(response, 200)
    directives = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert directives["default-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    for inline in ("script-src", "style-src"):
        assert directives[inline].startswith("'self' 'sha256-")
        assert "unsafe" not in directives[inline]
