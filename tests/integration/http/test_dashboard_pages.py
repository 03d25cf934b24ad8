"""The dashboard over HTTP, in process, on both backends: pages and their errors answer
HTML, actions need the CSRF token (and a session when API_TOKEN is set), read-only mode
refuses them, and every value is escaped. The browser tests (tests/integration/ui) drive
the same pages in Chromium."""

from __future__ import annotations

import asyncio
import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit
from uuid import UUID

import httpx
import pytest
from dishka import AsyncContainer

from taskforge.application.dashboard import ThroughputHistory
from taskforge.application.metrics import JobMetricsRecorder, WorkerLoad
from taskforge.application.ports import LeaseStore, MetricsStore, Sweeps
from taskforge.domain.job import Job, Lease
from taskforge.domain.outcome import HandedBack, RetryLater, Snoozed, Succeeded
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.container import Backend
from taskforge.entrypoints.http.app import create_app

from .conftest import BASE_URL, JobFactory, assert_error

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')
SCRIPT = "<script>window.pwned=1</script>"


def assert_html(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    return response.text


async def csrf_token(client: httpx.AsyncClient, path: str = "/ui/queues") -> str:
    """The token the page's forms carry (the value of its cookie, now in the client's jar)."""
    page = (await client.get(path)).text
    token = client.cookies.get("taskforge_csrf")
    assert token is not None
    match = CSRF.search(page)
    assert match is None or match.group(1) == token
    return token


async def dead_lettered(client: httpx.AsyncClient, create_job: JobFactory, **fields: Any) -> str:
    job = await create_job(**fields)
    response = await client.post(f"/jobs/{job['id']}/dlq", json={"reason": "order 7 not found"})
    assert response.status_code == 200, response.text
    return str(job["id"])


@pytest.mark.parametrize(
    "path", ["/ui", "/ui/overview/live", "/ui/jobs", "/ui/dlq", "/ui/queues", "/ui/schedules"]
)
async def test_every_page_answers_html_with_the_navigation(
    client: httpx.AsyncClient, path: str
) -> None:
    page = assert_html(await client.get(path), 200)

    for name in ("Overview", "Jobs", "Dead letters", "Queues", "Schedules"):
        assert f">{name}</a>" in page or path == "/ui/overview/live"


async def test_dashboard_errors_are_html_and_the_api_keeps_json(
    client: httpx.AsyncClient,
) -> None:
    assert "No such page" in assert_html(await client.get("/ui/nowhere"), 404)
    assert "not a job id" in assert_html(await client.get("/ui/jobs/not-a-uuid"), 400)
    assert "state" in assert_html(await client.get("/ui/jobs?state=bogus"), 400)
    missing = "/ui/jobs/01a242e0-dd62-7000-be28-80b62ae12066"
    assert_html(await client.get(missing), 404)
    assert_error(await client.get("/jobs/not-a-uuid"), 400, "validation_error", "id")


async def test_a_payload_with_html_is_shown_as_text(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    job_id = await dead_lettered(client, create_job, payload={"note": SCRIPT})

    detail = assert_html(await client.get(f"/ui/jobs/{job_id}"), 200)

    assert SCRIPT not in detail
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in detail


async def test_a_payload_that_indents_to_megabytes_is_shown_cut(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    """Indenting multiplies a nested payload's size (4 KB of short strings 100 levels down
    become 200 KB of spaces): the page shows the start of it, says so, and stays small."""
    deep: Any = ["x"] * 1000
    for _ in range(100):
        deep = [deep]
    job = await create_job(delay=3600, payload={"deep": deep})
    small = await create_job(delay=3600, payload={"note": "x" * 1000})

    page = assert_html(await client.get(f"/ui/jobs/{job['id']}"), 200)
    whole = assert_html(await client.get(f"/ui/jobs/{small['id']}"), 200)

    assert len(page) < 150_000
    assert "The first 100,000 characters are shown" in page
    assert f"GET /jobs/{job['id']}" in page
    assert "x" * 1000 in whole
    assert "characters are shown" not in whole


def shown(page: str, label: str) -> str:
    """The value a job page shows beside `label`."""
    match = re.search(rf"<dt>{re.escape(label)}</dt><dd>([^<]*)</dd>", page)
    assert match is not None, f"{label} not shown"
    return match.group(1)


async def test_a_lookup_finds_a_job_by_its_id_or_by_an_idempotency_key_shaped_like_one(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    """Many clients make their idempotency keys UUIDs: a lookup that is no job's id looks
    for the key, and finding neither lists no job."""
    key = "5f0c2a52-8d7e-4a4b-9a43-3f6f2e1b9c11"
    job = await create_job(delay=3600, idempotencyKey=key)
    unknown = "0b3a4c8e-6a1d-4f0e-8d52-7c9e2f4a1b30"

    by_id = await client.get("/ui/jobs", params={"lookup": job["id"]})
    by_key = assert_html(await client.get("/ui/jobs", params={"lookup": key}), 200)
    neither = assert_html(await client.get("/ui/jobs", params={"lookup": unknown}), 200)

    assert by_id.status_code == 303
    assert by_id.headers["location"] == f"/ui/jobs/{job['id']}"
    assert f'data-job="{job["id"]}"' in by_key
    assert "No job matches." in neither


async def test_the_jobs_list_counts_one_job_as_one_job(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    await create_job()

    listed = assert_html(await client.get("/ui/jobs"), 200)

    assert "<p>1 job.</p>" in listed


async def test_a_jobs_page_past_the_last_says_so_and_leads_back_to_the_last(
    client: httpx.AsyncClient,
) -> None:
    jobs = [{"jobType": "email"}] * 51  # two pages of 50
    assert (await client.post("/jobs/batch", json={"jobs": jobs})).status_code == 201

    past = assert_html(await client.get("/ui/jobs?page=7"), 200)
    last = assert_html(await client.get("/ui/jobs?page=2"), 200)

    assert "<p>51 jobs; there is no page 7: the last is page 2.</p>" in past
    assert "No job on this page." in past
    assert 'page=2">Last page</a>' in past
    assert "Next</a>" not in past
    assert "<p>51 jobs; page 2 of 2.</p>" in last
    assert 'page=1">Previous</a>' in last


async def test_the_jobs_list_and_a_job_page_show_its_priority(
    client: httpx.AsyncClient, create_job: JobFactory, queue_name: str
) -> None:
    job = await create_job(priority=1)

    listed = assert_html(await client.get(f"/ui/jobs?queue={queue_name}"), 200)
    detail = assert_html(await client.get(f"/ui/jobs/{job['id']}"), 200)

    assert "<th>Priority</th>" in listed
    row = re.search(rf'<tr data-job="{job["id"]}">(.*?)</tr>', listed, re.S)
    assert row is not None and '<td data-column="priority">1</td>' in row.group(1)
    assert shown(detail, "Priority").startswith("1 ")


async def test_a_job_page_shows_its_snoozes_hand_backs_and_unknown_type_since(
    client: httpx.AsyncClient, create_job: JobFactory, container: AsyncContainer
) -> None:
    job_id = UUID(str((await create_job(jobType="from-the-next-release"))["id"]))
    leases = await container.get(LeaseStore)
    since = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
    fresh = assert_html(await client.get(f"/ui/jobs/{job_id}"), 200)

    [running] = await leases.claim([job_id], "dashboard-test")
    await leases.settle([Snoozed(lease=_lease(running), delay=timedelta(0))])
    [running] = await leases.claim([job_id], "dashboard-test")
    back = HandedBack(lease=_lease(running), delay=timedelta(hours=1), unknown_type_since=since)
    assert await leases.settle([back]) == {job_id}

    detail = assert_html(await client.get(f"/ui/jobs/{job_id}"), 200)
    assert [shown(fresh, label) for label in ("Snoozes", "Hand-backs", "Unknown type since")] == [
        "0", "0", "",
    ]  # fmt: skip
    assert [shown(detail, label) for label in ("Snoozes", "Hand-backs")] == ["1", "1"]
    assert shown(detail, "Unknown type since") == "2026-05-04 03:02:01 UTC"


async def test_a_job_that_succeeded_after_a_failure_shows_that_error_as_earlier(
    client: httpx.AsyncClient, create_job: JobFactory, container: AsyncContainer, queue_name: str
) -> None:
    job_id = UUID(str((await create_job(jobType="flaky", queue=queue_name))["id"]))
    leases, sweeps = await container.get(LeaseStore), await container.get(Sweeps)
    [running] = await leases.claim([job_id], "dashboard-test")
    await leases.settle(
        [RetryLater(lease=_lease(running), error="RuntimeError: upstream 503", delay=timedelta())]
    )
    failed = assert_html(await client.get(f"/ui/jobs?queue={queue_name}"), 200)
    await sweeps.promote_due(100)
    [running] = await leases.claim([job_id], "dashboard-test")
    await leases.settle([Succeeded(lease=_lease(running))])

    listed = assert_html(await client.get(f"/ui/jobs?queue={queue_name}"), 200)
    detail = assert_html(await client.get(f"/ui/jobs/{job_id}"), 200)

    assert "upstream 503" in failed  # a failing job's list shows its error
    assert "upstream 503" not in listed  # not as the error of a job that succeeded since
    assert "<dt>Last error</dt>" not in detail
    assert re.search(r"<dt>Earlier error</dt><dd[^>]*>RuntimeError: upstream 503</dd>", detail)


def _lease(job: Job) -> Lease:
    assert job.lease_token is not None
    return Lease(job_id=job.id, token=job.lease_token)


async def test_the_dead_letter_page_groups_errors_of_one_shape(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    for _ in range(2):
        await dead_lettered(client, create_job, jobType="orders")

    page = assert_html(await client.get("/ui/dlq"), 200)

    assert page.count('data-group="orders"') == 1
    assert "order N not found" in page
    assert '<td class="count">2</td>' in page


async def test_the_dead_letter_page_says_when_it_shows_only_the_newest_groups(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    for index in range(201):
        await dead_lettered(client, create_job, jobType=f"orders-{index}")

    page = assert_html(await client.get("/ui/dlq"), 200)

    assert page.count("<tr data-group=") == 200
    assert 'data-group="orders-0"' not in page
    assert "The 200 groups that failed last are shown." in page


async def test_an_action_without_the_csrf_token_is_refused(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    job = await create_job(delay=3600)
    await csrf_token(client)  # the cookie alone is not enough

    refused = await client.post(f"/ui/jobs/{job['id']}/cancel", data={"reason": "x"})
    forged = await client.post(
        f"/ui/jobs/{job['id']}/cancel", data={"csrf_token": "0" * 64, "reason": "x"}
    )

    assert "CSRF" in assert_html(refused, 403)
    assert_html(forged, 403)
    assert (await client.get(f"/jobs/{job['id']}")).json()["state"] == "PENDING"


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({}, "/ui/queues/pause"),
        ({}, "/ui/logout"),
        ({"api_token": "s3cret-token-for-tests"}, "/ui/login"),
    ],
    ids=["action", "logout", "login"],
)
async def test_a_csrf_token_posted_as_a_file_is_refused(
    client: httpx.AsyncClient, queue_name: str, path: str
) -> None:
    """A multipart form may hold files: a CSRF token sent as one is no token (not a 500)."""
    token = await csrf_token(client, "/ui/login" if path == "/ui/login" else "/ui/queues")

    response = await client.post(
        path,
        data={"queue": queue_name, "token": "s3cret-token-for-tests"},
        files={"csrf_token": ("token.txt", token.encode())},
    )

    assert_html(response, 403)
    assert "taskforge_session" not in response.headers.get("set-cookie", "")


async def test_an_action_with_the_csrf_token_moves_the_job_and_says_so(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    job = await create_job(delay=3600)
    token = await csrf_token(client)

    response = await client.post(
        f"/ui/jobs/{job['id']}/cancel", data={"csrf_token": token, "reason": "not needed"}
    )

    assert response.status_code == 303
    assert response.headers["location"].startswith(f"/ui/jobs/{job['id']}?")
    body = (await client.get(f"/jobs/{job['id']}")).json()
    assert (body["state"], body["reason"]) == ("CANCELLED", "not needed")


async def test_a_reason_is_kept_as_long_as_the_api_keeps_one(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    job = await create_job(delay=3600)
    reason = "r" * 1000  # the API's bound (REASON_MAX)

    await client.post(
        f"/ui/jobs/{job['id']}/cancel",
        data={"csrf_token": await csrf_token(client), "reason": reason},
    )

    assert (await client.get(f"/jobs/{job['id']}")).json()["reason"] == reason


async def test_a_group_whose_error_line_ends_in_a_carriage_return_is_replayed(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    """An error with CRLF line ends (an HTTP answer quoted in it) has a shape ending in CR.
    A browser posts each CR of a form's field as CRLF, as the form below does: the group
    is found all the same."""
    reason = "upstream answered HTTP/1.1 502 Bad Gateway\r\nServer: nginx"
    ids = []
    for _ in range(2):
        job = await create_job(delay=3600)
        response = await client.post(f"/jobs/{job['id']}/dlq", json={"reason": reason})
        assert response.status_code == 200, response.text
        ids.append(job["id"])
    token = await csrf_token(client)
    as_posted = "upstream answered HTTP/N.N N Bad Gateway\r\n"
    group = {"csrf_token": token, "job_type": "email", "error_shape": as_posted}

    asked = assert_html(await client.post("/ui/dlq/group/replay", data=group), 200)
    done = await client.post("/ui/dlq/group/replay", data={**group, "confirm": "yes"})

    assert "Replay 2 dead letters?" in asked
    assert "Replayed+2+jobs" in done.headers["location"]
    for job_id in ids:
        assert (await client.get(f"/jobs/{job_id}")).json()["state"] == "PENDING"


async def test_a_group_action_asks_for_confirmation_then_reports_how_many_moved(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    ids = [await dead_lettered(client, create_job, jobType="orders") for _ in range(3)]
    token = await csrf_token(client)
    group = {"csrf_token": token, "job_type": "orders", "error_shape": "order N not found"}

    asked = assert_html(await client.post("/ui/dlq/group/purge", data=group), 200)
    assert "Purge 3 dead letters?" in asked
    assert (await client.get(f"/jobs/{ids[0]}")).status_code == 200

    done = await client.post("/ui/dlq/group/purge", data={**group, "confirm": "yes"})

    assert done.status_code == 303
    assert "Purged+3+jobs" in done.headers["location"]
    for job_id in ids:
        assert (await client.get(f"/jobs/{job_id}")).status_code == 404


async def test_a_group_of_one_dead_letter_is_confirmed_as_one(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    await dead_lettered(client, create_job, jobType="orders")
    group = {"csrf_token": await csrf_token(client), "job_type": "orders"}

    asked = await client.post(
        "/ui/dlq/group/replay", data={**group, "error_shape": "order N not found"}
    )

    assert "Replay 1 dead letter?" in assert_html(asked, 200)


@pytest.mark.parametrize(("overrides", "columns"), [({}, 9), ({"ui_read_only": True}, 8)])
async def test_an_empty_jobs_list_spans_every_column_of_its_table(
    client: httpx.AsyncClient, columns: int
) -> None:
    # Read-only has no selection column.
    page = assert_html(await client.get("/ui/jobs", params={"queue": "nobody-uses-this"}), 200)

    assert len(re.findall(r"<th[ >]", page)) == columns
    assert f'<td colspan="{columns}">No job matches.</td>' in page


@pytest.mark.parametrize("overrides", [{"ui_read_only": True}])
async def test_read_only_mode_shows_no_action_and_refuses_them(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    job_id = await dead_lettered(client, create_job)
    token = await csrf_token(client)

    schedule = await create_schedule(client, "nightly")

    for path in (f"/ui/jobs/{job_id}", "/ui/dlq", "/ui/jobs", "/ui/queues", "/ui/schedules"):
        page = assert_html(await client.get(path), 200)
        assert 'method="post"' not in page, path
    refused = await client.post(f"/ui/jobs/{job_id}/replay", data={"csrf_token": token})
    not_paused = await client.post(
        "/ui/schedules/pause", data={"csrf_token": token, "name": "nightly"}
    )

    assert "read-only" in assert_html(refused, 403)
    assert (await client.get(f"/jobs/{job_id}")).json()["state"] == "DLQ"
    assert "read-only" in assert_html(not_paused, 403)
    assert "nightly" in assert_html(await client.get("/ui/schedules"), 200)
    assert (await client.get("/schedules/nightly")).json() == schedule


@pytest.mark.parametrize("overrides", [{"ui_enabled": False}])
async def test_without_ui_enabled_there_is_no_dashboard(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/ui"), 404, "not_found")


TOKEN = "s3cret-token-for-tests"


@pytest.mark.parametrize("overrides", [{"api_token": TOKEN}])
async def test_with_api_token_the_dashboard_signs_in_with_a_session_cookie(
    client: httpx.AsyncClient,
) -> None:
    to_login = await client.get("/ui/dlq")
    assert to_login.status_code == 303
    assert to_login.headers["location"] == "/ui/login?next=%2Fui%2Fdlq"
    token = await csrf_token(client, "/ui/login")

    wrong = await client.post(
        "/ui/login", data={"csrf_token": token, "token": "nope", "next": "/ui/dlq"}
    )
    assert "Wrong token" in assert_html(wrong, 401)
    signed_in = await client.post(
        "/ui/login", data={"csrf_token": token, "token": TOKEN, "next": "/ui/dlq"}
    )

    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/ui/dlq"
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith("taskforge_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/ui" in cookie
    assert "Log out" in assert_html(await client.get("/ui/dlq"), 200)
    # The session opens the dashboard only, not the API.
    assert_error(await client.get("/jobs"), 401, "unauthorized")

    logged_out = await client.post("/ui/logout", data={"csrf_token": token})
    assert logged_out.status_code == 303
    assert (await client.get("/ui/dlq")).status_code == 303


@pytest.mark.parametrize("overrides", [{"api_token": TOKEN}])
async def test_signing_in_leads_to_the_page_asked_for_with_its_filters(
    client: httpx.AsyncClient,
) -> None:
    """A link to a filtered list (from an alert, a chat) still shows that list once the
    browser has signed in."""
    asked = "/ui/jobs?queue=emails&state=DLQ"

    to_login = await client.get(asked)
    target = parse_qs(urlsplit(to_login.headers["location"]).query)["next"][0]
    token = await csrf_token(client, "/ui/login")
    signed_in = await client.post(
        "/ui/login", data={"csrf_token": token, "token": TOKEN, "next": target}
    )

    assert to_login.status_code == 303
    assert signed_in.headers["location"] == asked


@pytest.mark.parametrize("overrides", [{"api_token": TOKEN}])
async def test_with_api_token_a_forged_session_cookie_is_refused(
    client: httpx.AsyncClient,
) -> None:
    client.cookies.set("taskforge_session", "abc.9999999999.deadbeef", path="/ui")

    assert (await client.get("/ui")).status_code == 303
    assert_html(await client.post("/ui/queues/pause", data={"queue": "q"}), 401)


@pytest.mark.parametrize("overrides", [{"api_token": TOKEN}])
@pytest.mark.parametrize("cookie", ["a.1.\u00e9", "\u00e9.\u00e9.\u00e9", "a.b"])
async def test_with_api_token_a_garbled_session_cookie_leads_to_the_login_page(
    client: httpx.AsyncClient, cookie: str
) -> None:
    """A cookie no dashboard issued, even one of non-ASCII text, is no session: the pages
    send to the login page and the login page itself answers, so the user can sign in."""
    # As a browser sends it: the cookie's UTF-8 bytes in the header.
    headers = [(b"cookie", f"taskforge_session={cookie}".encode())]

    assert (await client.get("/ui", headers=headers)).status_code == 303
    assert_html(await client.get("/ui/login", headers=headers), 200)


async def test_one_selected_job_is_counted_in_the_singular(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    job = await create_job(delay=3600)
    token = await csrf_token(client, "/ui/jobs")

    response = await client.post(
        "/ui/jobs/bulk", data={"csrf_token": token, "action": "cancel", "ids": [job["id"]]}
    )

    assert response.status_code == 303
    assert "Cancelled+1+of+1+selected+job." in response.headers["location"]


async def test_selected_jobs_are_cancelled_together(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    jobs = [await create_job(delay=3600) for _ in range(3)]
    token = await csrf_token(client, "/ui/jobs")
    chosen = [job["id"] for job in jobs[:2]]

    response = await client.post(
        "/ui/jobs/bulk",
        data={"csrf_token": token, "action": "cancel", "ids": chosen, "reason": "bulk"},
    )

    assert response.status_code == 303
    assert "Cancelled+2+of+2+selected+jobs." in response.headers["location"]
    states = [(await client.get(f"/jobs/{job['id']}")).json()["state"] for job in jobs]
    assert states == ["CANCELLED", "CANCELLED", "PENDING"]


async def test_a_bulk_action_leads_back_to_the_list_as_it_was_filtered(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    # It led to the first page of every job, whatever list the jobs were chosen from.
    job = await create_job(delay=3600)
    page = assert_html(await client.get("/ui/jobs?state=PENDING&job_type=email&page=1"), 200)
    kept = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page))
    assert kept.pop("csrf_token") == client.cookies.get("taskforge_csrf")
    assert kept == {"state": "PENDING", "job_type": "email", "page": "1"}

    response = await client.post(
        "/ui/jobs/bulk",
        data={
            **kept,
            "csrf_token": await csrf_token(client),
            "action": "cancel",
            "ids": [job["id"]],
        },
    )

    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert location.path == "/ui/jobs"
    query = parse_qs(location.query)
    assert (query["state"], query["job_type"], query["page"]) == (["PENDING"], ["email"], ["1"])
    assert query["notice"] == ["Cancelled 1 of 1 selected job."]


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("cancel", {"reason": "not\x00needed"}),
        ("dlq", {"reason": "bad\x00reason"}),
        ("bulk", {"action": "cancel", "reason": "x\x00y"}),
    ],
)
async def test_an_action_with_a_nul_character_is_a_400_and_moves_nothing(
    client: httpx.AsyncClient, create_job: JobFactory, path: str, fields: dict[str, str]
) -> None:
    job = await create_job(delay=3600)
    token = await csrf_token(client, "/ui/jobs")
    target = "/ui/jobs/bulk" if path == "bulk" else f"/ui/jobs/{job['id']}/{path}"
    data: dict[str, Any] = {"csrf_token": token, **fields}
    if path == "bulk":
        data["ids"] = [job["id"]]

    page = assert_html(await client.post(target, data=data), 400)

    assert "NUL" in page
    assert (await client.get(f"/jobs/{job['id']}")).json()["state"] == "PENDING"


@pytest.mark.parametrize(
    "path",
    [
        "/ui/jobs?job_type=%00",
        "/ui/jobs?lookup=a%00b",
        "/ui/jobs?queue=q&state=PENDING&job_type=a%00",
        "/ui/dlq/group?job_type=%00&error_shape=%00",
        "/ui?%00=1",
    ],
)
async def test_a_query_with_a_nul_character_is_a_400_page(
    client: httpx.AsyncClient, path: str
) -> None:
    assert "NUL" in assert_html(await client.get(path), 400)


@pytest.mark.parametrize(
    "name",
    ["%00", "dashboard.css%00", "a%00b.css", "a" * 300, "dashboard.css/x", "a/" * 3000],
    ids=["nul", "nul-after-a-file", "nul-inside", "too-long", "a-file-as-a-folder", "too-deep"],
)
async def test_a_static_path_no_file_can_have_is_a_404_page(
    client: httpx.AsyncClient, name: str
) -> None:
    # The file system refuses such a look-up (ValueError, ENAMETOOLONG, ENOTDIR).
    assert_html(await client.get(f"/ui/static/{name}"), 404)
    assert (await client.head(f"/ui/static/{name}")).status_code == 404
    assert (await client.get("/ui/static/dashboard.css")).status_code == 200


async def test_a_group_action_with_a_nul_character_is_a_400_page(
    client: httpx.AsyncClient,
) -> None:
    token = await csrf_token(client)
    group = {"csrf_token": token, "job_type": "\x00", "error_shape": "x", "confirm": "yes"}

    assert "NUL" in assert_html(await client.post("/ui/dlq/group/replay", data=group), 400)


@pytest.mark.parametrize("page", ["\u00b2", "\u0663", "-1", "0", "x"])
async def test_a_page_number_that_is_not_ascii_digits_from_1_is_a_400_page(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get("/ui/jobs", params={"page": page})

    assert "page" in assert_html(response, 400)


async def test_a_queue_is_paused_and_resumed_from_the_queues_page(
    client: httpx.AsyncClient, queue_name: str
) -> None:
    token = await csrf_token(client)

    form = {"csrf_token": token, "queue": queue_name}
    paused = await client.post("/ui/queues/pause", data=form)
    assert paused.status_code == 303
    page = assert_html(await client.get("/ui/queues"), 200)
    assert "paused since" in page
    assert ">Resume</button>" in page
    assert (await client.get("/queues")).json()["items"][0]["paused"] is True

    resumed = await client.post("/ui/queues/resume", data=form)
    assert resumed.status_code == 303
    assert (await client.get("/queues")).json()["items"][0]["paused"] is False


@pytest.mark.parametrize("overrides", [{"rate_limit_per_sec": 5.0}])
async def test_the_queues_page_shows_the_rate_limit_as_one_rate_per_queue(
    client: httpx.AsyncClient, queue_name: str
) -> None:
    await client.post(
        "/ui/queues/pause", data={"csrf_token": await csrf_token(client), "queue": queue_name}
    )

    page = assert_html(await client.get("/ui/queues"), 200)

    assert "5.0 jobs/s for the queue, shared by its workers (RATE_LIMIT_PER_SEC" in page


@pytest.mark.parametrize(
    "overrides",
    [{"rate_limit_per_sec": 5.0, "queue_rate_limits": {"rates-sms": 2.0, "rates-free": 0.0}}],
)
async def test_the_queues_page_shows_each_queues_own_rate_limit_and_the_setting_it_comes_from(
    client: httpx.AsyncClient, queue_name: str
) -> None:
    page = assert_html(await client.get("/ui/queues"), 200)

    def rate_cell(queue: str) -> str:
        found = re.search(
            rf'<tr data-queue="{re.escape(queue)}">.*?</td>.*?</td>\s*<td>(.*?)</td>', page, re.S
        )
        assert found is not None, f"no row for {queue}"
        return html.unescape(found.group(1))

    settings_say = "as this API process's settings say; workers apply their own)"
    assert rate_cell("rates-sms") == (
        f"2.0 jobs/s for the queue, shared by its workers (QUEUE_RATE_LIMITS {settings_say}"
    )
    assert rate_cell("rates-free") == f"none (QUEUE_RATE_LIMITS {settings_say}"
    assert rate_cell(queue_name) == (
        f"5.0 jobs/s for the queue, shared by its workers (RATE_LIMIT_PER_SEC {settings_say}"
    )


def submitted(page: str, row: str) -> tuple[str, dict[str, str]]:
    """Where a browser sends the form in the row marked `row` (`data-queue="q"`): its action
    resolved against the page's URL as a browser resolves it (`.` and `..` segments go),
    and its fields."""
    found = re.search(
        rf'<tr {re.escape(row)}>.*?<form method="post" action="([^"]*)"(.*?)</form>', page, re.S
    )
    assert found is not None, f"no form in the row {row}"
    fields = re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', found.group(2))
    action = urljoin("http://dashboard.test/ui/queues", html.unescape(found.group(1)))
    return urlsplit(action).path, {name: html.unescape(value) for name, value in fields}


# In memory only: the form is the same on every backend, and a queue's hint list in Redis
# is named after the queue, outside the test run's namespace that its cleanup deletes.
@pytest.mark.parametrize("backend", [Backend.MEMORY], indirect=True, ids=str)
@pytest.mark.parametrize("name", [".", ".."])
async def test_a_queue_or_schedule_named_dot_or_dot_dot_is_paused_from_its_page(
    client: httpx.AsyncClient, create_job: JobFactory, name: str
) -> None:
    # Valid names; as a path segment a browser would resolve them away, escaped or not.
    await create_job(queue=name)
    await client.post("/schedules", json={"name": name, "cron": "@hourly", "jobType": "report"})
    await csrf_token(client)

    queues = assert_html(await client.get("/ui/queues"), 200)
    action, form = submitted(queues, f'data-queue="{name}"')
    queue_paused = await client.post(action, data=form)
    schedules = assert_html(await client.get("/ui/schedules"), 200)
    action, form = submitted(schedules, f'data-schedule="{name}"')
    schedule_paused = await client.post(action, data=form)

    assert (queue_paused.status_code, schedule_paused.status_code) == (303, 303)
    paused = [
        item["queue"] for item in (await client.get("/queues")).json()["items"] if item["paused"]
    ]
    assert paused == [name]
    assert (await client.get(f"/schedules/{name.replace('.', '%2E')}")).json()["paused"] is True


@pytest.mark.parametrize("overrides", [{"api_token": TOKEN}])
@pytest.mark.parametrize(
    "target",
    [
        "https://elsewhere.test/",
        "//elsewhere.test/ui",
        "/jobs",
        # Each starts with /ui, but a browser resolves the Location before following it:
        "/ui/../..//elsewhere.test",  # was followed to //elsewhere.test
        "/ui/..//elsewhere.test",
        "/ui/%2e%2e/%2E%2e//elsewhere.test",  # %2e is a dot to a browser's URL parser
        "/ui/.%2e/jobs",
        "/ui/./jobs",
        "/ui//elsewhere.test",
        "/ui/\\elsewhere.test",  # a backslash is a slash
        "/ui/\t/../..//elsewhere.test",  # tabs and line breaks are dropped
        "/ui/\n/../..//elsewhere.test",
        "/ui/..%2f..%2f/elsewhere.test",
        "/uielsewhere",
        "/ui/..?next=/ui",
        "",
    ],
)
async def test_signing_in_never_redirects_off_the_dashboard(
    client: httpx.AsyncClient, target: str
) -> None:
    token = await csrf_token(client, "/ui/login")

    response = await client.post(
        "/ui/login", data={"csrf_token": token, "token": TOKEN, "next": target}
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/ui"


@pytest.mark.parametrize("overrides", [{"api_token": TOKEN}])
@pytest.mark.parametrize(
    "target", ["/ui/", "/ui/jobs?queue=a%2F..%2F&state=DLQ", "/ui/jobs/x%20y", "/ui/dlq#top"]
)
async def test_signing_in_leads_to_any_normalised_dashboard_path(
    client: httpx.AsyncClient, target: str
) -> None:
    token = await csrf_token(client, "/ui/login")

    response = await client.post(
        "/ui/login", data={"csrf_token": token, "token": TOKEN, "next": target}
    )

    assert response.headers["location"] == target


@pytest.mark.parametrize("overrides", [{"api_token": TOKEN}])
@pytest.mark.parametrize("asked", ["/ui/jobs/%C3%A9t%C3%A9", "/ui/jobs/what%3Fx%3D1"])
async def test_signing_in_leads_back_to_a_path_with_encoded_characters(
    client: httpx.AsyncClient, asked: str
) -> None:
    """The path asked for comes back as it was sent: decoded, a `?` in it would start a
    query and a non-ASCII letter would not pass as a dashboard path."""
    to_login = await client.get(asked)
    target = parse_qs(urlsplit(to_login.headers["location"]).query)["next"][0]
    token = await csrf_token(client, "/ui/login")
    signed_in = await client.post(
        "/ui/login", data={"csrf_token": token, "token": TOKEN, "next": target}
    )

    assert target == asked
    assert signed_in.headers["location"] == asked


async def create_schedule(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await client.post(
        "/schedules",
        json={
            "name": name,
            "cron": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "jobType": "report",
            "queue": "reports",
            "priority": 2,
        },
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def schedule_row(page: str, name: str) -> dict[str, str]:
    """The cells of `name`'s row on the schedules page, by column (the others by index)."""
    row = re.search(rf'<tr data-schedule="{re.escape(name)}">(.*?)</tr>', page, re.S)
    assert row is not None, f"{name} not listed"
    cells = re.findall(
        r'<td(?: class="name")?(?: data-column="(\w+)")?>(.*?)</td>', row.group(1), re.S
    )
    return {column or str(index): text.strip() for index, (column, text) in enumerate(cells)}


def shown_time(value: str | None) -> str:
    if value is None:
        return ""
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def test_the_schedules_page_lists_a_schedule_with_its_next_fire_time(
    client: httpx.AsyncClient,
) -> None:
    schedule = await create_schedule(client, "reports.nightly:eu")

    page = assert_html(await client.get("/ui/schedules"), 200)

    row = schedule_row(page, "reports.nightly:eu")
    assert row["0"] == "reports.nightly:eu"
    assert row["1"] == "<code>30 2 * * *</code>"
    assert row["2"] == "Europe/Berlin"
    assert ">report</a>" in row["3"] and ">reports</a>" in row["4"]
    assert (row["priority"], row["source"], row["status"]) == ("2", "api", "active")
    assert schedule["nextFireAt"] is not None
    assert row["next"] == shown_time(schedule["nextFireAt"]) != ""
    assert row["previous"] == ""
    assert ">Pause</button>" in row["10"]


async def test_a_schedule_is_paused_and_resumed_from_the_schedules_page(
    client: httpx.AsyncClient,
) -> None:
    await create_schedule(client, "reports.nightly:eu")
    token = await csrf_token(client, "/ui/schedules")
    form = {"csrf_token": token, "name": "reports.nightly:eu"}

    paused = await client.post("/ui/schedules/pause", data=form)

    assert paused.status_code == 303
    assert paused.headers["location"].startswith("/ui/schedules?")
    assert (await client.get("/schedules/reports.nightly:eu")).json()["paused"] is True
    row = schedule_row(assert_html(await client.get("/ui/schedules"), 200), "reports.nightly:eu")
    assert (row["status"], row["next"]) == ("paused", "")
    assert ">Resume</button>" in row["10"]

    resumed = await client.post("/ui/schedules/resume", data=form)

    assert resumed.status_code == 303
    body = (await client.get("/schedules/reports.nightly:eu")).json()
    assert body["paused"] is False
    row = schedule_row(assert_html(await client.get("/ui/schedules"), 200), "reports.nightly:eu")
    assert (row["status"], row["next"]) == ("active", shown_time(body["nextFireAt"]))


@pytest.mark.parametrize(
    ("kind", "action", "notice"),
    [
        ("queues", "pause", "Paused {name}."),
        ("queues", "resume", "Resumed {name}."),
        ("schedules", "pause", "Paused schedule {name}."),
        ("schedules", "resume", "Resumed schedule {name}."),
    ],
)
async def test_a_pause_or_resume_comes_back_with_a_notice_naming_what_it_moved(
    client: httpx.AsyncClient, queue_name: str, kind: str, action: str, notice: str
) -> None:
    name = queue_name if kind == "queues" else "reports.nightly"
    if kind == "schedules":
        await create_schedule(client, name)
    token = await csrf_token(client, f"/ui/{kind}")

    field = "queue" if kind == "queues" else "name"
    moved = await client.post(f"/ui/{kind}/{action}", data={"csrf_token": token, field: name})

    assert moved.status_code == 303
    path, _, query = moved.headers["location"].partition("?")
    assert path == f"/ui/{kind}"
    assert parse_qs(query)["notice"] == [notice.format(name=name)]
    page = assert_html(await client.get(moved.headers["location"]), 200)
    assert f'<p class="notice" role="status">{notice.format(name=name)}</p>' in page


async def test_a_notice_from_a_link_made_elsewhere_is_not_shown(
    client: httpx.AsyncClient, queue_name: str
) -> None:
    """Only a notice an action of this browser sent: a link cannot make the dashboard say
    what its author likes ("Session expired: sign in at ...")."""
    token = await csrf_token(client)
    moved = await client.post("/ui/queues/pause", data={"csrf_token": token, "queue": queue_name})
    query = parse_qs(urlsplit(moved.headers["location"]).query)
    forged = "Your token was rotated: get the new one at evil.example"

    shown = assert_html(await client.get("/ui/queues", params=query), 200)
    made_up = assert_html(await client.get("/ui/queues", params={**query, "notice": forged}), 200)
    unsigned = assert_html(await client.get("/ui/queues", params={"notice": forged}), 200)
    client.cookies.clear()  # another browser, with a CSRF cookie of its own
    await csrf_token(client)
    elsewhere = assert_html(await client.get("/ui/queues", params=query), 200)

    assert f"Paused {queue_name}." in shown
    for page in (made_up, unsigned, elsewhere):
        assert 'class="notice"' not in page
        assert "evil.example" not in page


@pytest.mark.parametrize("kind", ["queues", "schedules"])
async def test_an_unknown_pause_action_is_not_found(
    client: httpx.AsyncClient, queue_name: str, kind: str
) -> None:
    name = queue_name if kind == "queues" else "reports.nightly"
    token = await csrf_token(client, f"/ui/{kind}")

    field = "queue" if kind == "queues" else "name"
    refused = await client.post(f"/ui/{kind}/halt", data={"csrf_token": token, field: name})

    assert_html(refused, 404)


async def test_a_schedule_action_without_the_csrf_token_or_for_no_schedule_is_refused(
    client: httpx.AsyncClient,
) -> None:
    await create_schedule(client, "nightly")
    token = await csrf_token(client, "/ui/schedules")

    pause = "/ui/schedules/pause"
    refused = await client.post(pause, data={"name": "nightly"})
    forged = await client.post(pause, data={"csrf_token": "0" * 64, "name": "nightly"})
    missing = await client.post(pause, data={"csrf_token": token, "name": "nowhere"})
    bad_name = await client.post(pause, data={"csrf_token": token, "name": "<b>"})
    unknown = await client.post(
        "/ui/schedules/delete", data={"csrf_token": token, "name": "nightly"}
    )

    assert "CSRF" in assert_html(refused, 403)
    assert_html(forged, 403)
    assert "nowhere" in assert_html(missing, 404)
    bad = assert_html(bad_name, 400)
    assert "<b>" not in bad and "name" in bad
    assert_html(unknown, 404)
    assert (await client.get("/schedules/nightly")).json()["paused"] is False


async def test_the_charts_count_what_finished_before_the_overview_was_first_read(
    container: AsyncContainer, settings: Settings, queue_name: str
) -> None:
    # They counted from the first view: an operator opening the dashboard after a busy
    # hour saw "0 succeeded, 0 failed".
    app = create_app(container, settings)
    history = await container.get(ThroughputHistory)
    async with app.lifespan():
        for _ in range(500):
            if history.started_at is not None:
                break
            await asyncio.sleep(0.01)
        assert history.started_at is not None, "the API took no first sample as it started"
        recorder = JobMetricsRecorder()
        for succeeded in (True, True, True, False):
            recorder.job_started(queue_name, "email", time_in_queue=0.01)
            recorder.job_finished(queue_name, "email", runtime=0.01, succeeded=succeeded)
        batch, _ = recorder.take()
        store = await container.get(MetricsStore)
        await store.add(batch, WorkerLoad("charts", {}), ttl=60, sequence=1)
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            page = assert_html(await client.get("/ui/overview/live"), 200)

    assert ">3 succeeded</span>" in page
    assert ">1 failed</span>" in page
    since = history.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"sampled by this API process since it started ({since})." in page


async def test_a_moves_reason_field_says_whether_the_job_keeps_the_reason(
    client: httpx.AsyncClient, create_job: JobFactory
) -> None:
    # Every field said only "why": a retry's or a replay's reason, never kept, seemed lost.
    pending = await create_job(delay=3600)
    dead = await dead_lettered(client, create_job)

    forms = {
        action: placeholder
        for job_id in (pending["id"], dead)
        for action, placeholder in re.findall(
            r'action="/ui/jobs/[^/"]+/(\w+)".*?placeholder="([^"]*)"',
            assert_html(await client.get(f"/ui/jobs/{job_id}"), 200),
            re.DOTALL,
        )
    }

    assert forms == {
        "cancel": "why (kept with the job)",
        "dlq": "why (kept with the job)",
        "retry": "why (written to the log only)",
        "replay": "why (written to the log only)",
    }
