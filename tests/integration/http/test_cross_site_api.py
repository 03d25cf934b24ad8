"""A browser page of another origin may read nothing (no CORS) and, here, change nothing:
a form or a plain `fetch` goes cross-site without asking first, and without API_TOKEN the
API would take it. A browser too old to send Sec-Fetch-Site is judged by its Origin against
the Host header. Requests with neither (every client that is no browser) and those of
TaskForge's own pages go through."""

from __future__ import annotations

import logging

import httpx
import pytest

from .conftest import JobFactory


@pytest.mark.parametrize("site", ["cross-site", "same-site", "Cross-Site"])
async def test_a_change_asked_for_by_another_sites_page_is_refused(
    client: httpx.AsyncClient, create_job: JobFactory, site: str
) -> None:
    # Was 201: a page anywhere could enqueue through an operator's browser, a form's
    # urlencoded Content-Type notwithstanding.
    job = await create_job(delay=3600)
    headers = {"sec-fetch-site": site, "content-type": "application/x-www-form-urlencoded"}

    enqueued = await client.post("/jobs", content=b'{"jobType": "email"}', headers=headers)
    cancelled = await client.post(f"/jobs/{job['id']}/cancel", headers=headers)

    for refused in (enqueued, cancelled):
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "forbidden"
        assert "Sec-Fetch-Site" in refused.json()["message"]
    listed = (await client.get("/jobs")).json()
    assert [item["id"] for item in listed["items"]] == [job["id"]]
    assert listed["items"][0]["state"] == "PENDING"


@pytest.mark.parametrize("site", ["same-origin", "none", None])
async def test_own_pages_typed_addresses_and_other_clients_change_as_before(
    client: httpx.AsyncClient, site: str | None
) -> None:
    headers = {} if site is None else {"sec-fetch-site": site}

    response = await client.post("/jobs", json={"jobType": "email"}, headers=headers)

    assert response.status_code == 201, response.text


async def test_another_sites_page_may_still_send_reads(client: httpx.AsyncClient) -> None:
    # It cannot read the answer (no CORS header); a read changes nothing.
    response = await client.get("/jobs", headers={"sec-fetch-site": "cross-site"})

    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    "origin",
    [
        "http://elsewhere.test",
        "null",  # a sandboxed page, a file, a page behind some redirects
        "http://taskforge.test:8080",  # another port: another origin
        "http://admin.taskforge.test",  # same-site, as Sec-Fetch-Site would say
        "http://taskforge.test.elsewhere.test",
        "http://taskforge.test/",  # no origin a browser writes
        "taskforge.test",
    ],
)
async def test_a_browser_without_sec_fetch_site_is_refused_by_its_origin(
    client: httpx.AsyncClient, origin: str
) -> None:
    # Was 201: browsers before Sec-Fetch-Site (Safari until 16.4) send only Origin.
    response = await client.post("/jobs", json={"jobType": "email"}, headers={"origin": origin})

    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden"
    assert (await client.get("/jobs")).json()["items"] == []


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("taskforge.test", "http://taskforge.test"),
        # Behind a proxy that ends TLS the request comes over HTTP: the scheme is not compared.
        ("taskforge.test", "https://taskforge.test"),
        ("taskforge.test:8080", "http://taskforge.test:8080"),
        ("TaskForge.test", "http://taskforge.test"),
        ("taskforge.test:443", "https://taskforge.test"),
        ("[::1]:8080", "http://[::1]:8080"),
    ],
)
async def test_a_browser_without_sec_fetch_site_on_its_own_origin_changes_as_before(
    client: httpx.AsyncClient, host: str, origin: str
) -> None:
    headers = {"host": host, "origin": origin}

    response = await client.post("/jobs", json={"jobType": "email"}, headers=headers)

    assert response.status_code == 201, response.text


async def test_sec_fetch_site_decides_when_a_browser_sends_it(client: httpx.AsyncClient) -> None:
    # The browser's own verdict; Origin is only read from browsers that give none.
    headers = {"sec-fetch-site": "same-origin", "origin": "null"}

    response = await client.post("/jobs", json={"jobType": "email"}, headers=headers)

    assert response.status_code == 201, response.text


async def test_a_read_with_another_origin_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/jobs", headers={"origin": "http://elsewhere.test"})

    assert response.status_code == 200


async def test_a_refusal_by_origin_logs_the_origin_and_host_it_compared(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind a proxy that rewrites Host, the dashboard's own forms are refused in older
    browsers: the log line says what did not match."""
    with caplog.at_level(logging.WARNING, logger="taskforge.http.access"):
        await client.post("/jobs", json={"jobType": "email"},
                          headers={"origin": "http://elsewhere.test"})  # fmt: skip

    [line] = [r.getMessage() for r in caplog.records if "cross-site" in r.getMessage()]
    assert "Origin 'http://elsewhere.test' is not the Host 'taskforge.test'" in line
