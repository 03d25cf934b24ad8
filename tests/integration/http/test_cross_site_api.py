"""A browser page of another origin may read nothing (no CORS) and, here, change nothing:
a form or a plain `fetch` goes cross-site without asking first, and without API_TOKEN the
API would take it. Requests without Sec-Fetch-Site (every client that is no browser) and
those of TaskForge's own pages go through."""

from __future__ import annotations

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
