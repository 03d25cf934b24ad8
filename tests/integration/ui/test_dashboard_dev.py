"""The dashboard in Chromium against `taskforge dev` (the in-memory backend): watching,
replaying, cancelling, signing in, read-only mode and escaping, as an operator would."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import ViewportSize, expect

from .conftest import (
    DEADLINE,
    OpenPage,
    Screenshot,
    Server,
    count_in,
    launch,
    wait_until_healthy,
)

pytestmark = pytest.mark.slow

QUEUE = "jobs:ready"
"""`taskforge dev`'s queue: the only one its worker serves."""


TOKEN = secrets.token_hex(12)


@dataclass
class Servers:
    dev: Server
    secured: Server
    """With API_TOKEN set."""
    read_only: Server
    """With UI_READ_ONLY=true."""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Three `taskforge dev` processes, started together (each takes seconds to import)."""
    started = []
    try:
        for name, env, token in (
            ("dev", {}, None),
            ("secured", {}, TOKEN),
            ("read-only", {"UI_READ_ONLY": "true"}, None),
        ):
            started.append(launch([["dev"]], env, tmp_path_factory.mktemp(name), token))
        wait_until_healthy(*started)
        yield Servers(*started)
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def dev(servers: Servers) -> Server:
    return servers.dev


@pytest.fixture
def queue() -> str:
    """The queue the `dev` server's worker serves."""
    return QUEUE


@pytest.fixture
def secured_dev(servers: Servers) -> Server:
    return servers.secured


@pytest.fixture
def read_only_dev(servers: Servers) -> Server:
    return servers.read_only


def test_the_overview_counts_change_as_jobs_finish_without_a_reload(
    dev: Server, queue: str, open_page: OpenPage, screenshot: Screenshot
) -> None:
    with dev.api() as api:
        assert api.post(f"/queues/{queue}/pause").status_code == 200
        ids = [dev.enqueue("noop", queue=queue) for _ in range(4)]
        page = open_page(dev)
        page.goto("/ui")
        expect(page.locator(f'tr[data-queue="{queue}"] td[data-column="ready"]')).to_have_text(
            re.compile(r"^[4-9]|\d\d")
        )
        succeeded_before = count_in(page, queue, "succeeded")
        page.evaluate("window.notReloaded = true")

        assert api.post(f"/queues/{queue}/resume").status_code == 200
        dev.wait_for_all(ids, "SUCCEEDED")

    expect(page.locator(f'tr[data-queue="{queue}"] td[data-column="succeeded"]')).to_have_text(
        f"{succeeded_before + 4:,}", timeout=DEADLINE * 1000
    )
    expect(page.locator(f'tr[data-queue="{queue}"] td[data-column="ready"]')).to_have_text("0")
    assert page.evaluate("window.notReloaded") is True
    worker = page.locator("tr[data-worker]").filter(has_text=queue).first
    expect(worker.locator('td[data-column="slots"]')).to_have_text(re.compile(r"^\d+ / 10$"))
    screenshot(page, "dashboard-overview")


def test_a_dead_letter_opened_from_its_group_is_replayed_and_succeeds(
    dev: Server, open_page: OpenPage, screenshot: Screenshot
) -> None:
    switch = dev.switch_dir / f"switch-{secrets.token_hex(4)}"
    job_id = dev.enqueue("switched", payload={"switch": str(switch), "order": 17})
    dev.wait_for_state(job_id, "DLQ")
    switch.touch()

    page = open_page(dev)
    page.goto("/ui/dlq")
    page.get_by_role("link", name="TerminalError: order N not found").first.click()
    expect(page.get_by_role("heading", name="Dead letters: switched")).to_be_visible()
    page.get_by_role("link", name=job_id).click()
    expect(page.locator("#job-state")).to_have_text("DLQ")
    page.get_by_role("button", name="Replay").click()

    expect(page.get_by_role("status")).to_have_text("Replayed.")
    assert dev.wait_for_state(job_id, "SUCCEEDED")["attemptCount"] == 1
    page.reload()
    expect(page.locator("#job-state")).to_have_text("SUCCEEDED")


def test_a_delayed_job_is_cancelled_from_its_detail_page(dev: Server, open_page: OpenPage) -> None:
    job_id = dev.enqueue("email", delay=3600)
    page = open_page(dev)
    page.goto(f"/ui/jobs/{job_id}")
    expect(page.get_by_role("button", name="Replay")).to_have_count(0)

    cancel = page.locator("form", has=page.get_by_role("button", name="Cancel"))
    cancel.get_by_label("Reason").fill("not needed after all")
    cancel.get_by_role("button", name="Cancel").click()

    expect(page.locator("#job-state")).to_have_text("CANCELLED")
    job = dev.job(job_id)
    assert (job["state"], job["reason"]) == ("CANCELLED", "not needed after all")


def test_an_actions_notice_is_shown_once_not_again_on_reload(
    dev: Server, open_page: OpenPage
) -> None:
    # The notice lived in the address: a reload or Back said "Cancelled." again.
    job_id = dev.enqueue("email", delay=3600)
    page = open_page(dev)
    page.goto(f"/ui/jobs/{job_id}")
    page.locator("form", has=page.get_by_role("button", name="Cancel")).get_by_role(
        "button", name="Cancel"
    ).click()

    expect(page.get_by_role("status")).to_have_text("Cancelled.")
    expect(page).to_have_url(re.compile(rf"/ui/jobs/{job_id}$"))
    page.reload()
    expect(page.locator("#job-state")).to_have_text("CANCELLED")
    expect(page.get_by_role("status")).to_have_count(0)


def test_a_group_of_fifty_dead_letters_is_replayed_in_one_go(
    dev: Server, open_page: OpenPage, screenshot: Screenshot
) -> None:
    switch = dev.switch_dir / f"switch-{secrets.token_hex(4)}"
    with dev.api() as api:
        response = api.post(
            "/jobs/batch",
            json={
                "jobs": [
                    {"jobType": "switched", "payload": {"switch": str(switch), "order": n}}
                    for n in range(50)
                ]
            },
        )
    assert response.status_code in (200, 201), response.text
    ids = [item["id"] for item in response.json()["items"]]
    dev.wait_for_all(ids, "DLQ")

    page = open_page(dev)
    page.goto("/ui/dlq")
    group = page.locator('tr[data-group="switched"]')
    expect(group.locator("td.count")).to_have_text("50")
    screenshot(page, "dashboard-dlq")
    switch.touch()

    group.get_by_role("button", name="Replay group").click()
    expect(page.get_by_role("heading")).to_have_text("Replay 50 dead letters?")
    page.get_by_role("button", name="Confirm").click()

    expect(page.get_by_role("status")).to_have_text("Replayed 50 jobs.")
    expect(page.locator('tr[data-group="switched"]')).to_have_count(0)
    dev.wait_for_all(ids, "SUCCEEDED")


def test_a_payload_with_a_script_is_shown_as_text(dev: Server, open_page: OpenPage) -> None:
    script = "<script>window.pwned = true</script><img src=x onerror=window.pwned=1>"
    job_id = dev.enqueue("email", delay=3600, payload={"note": script})

    page = open_page(dev)
    page.goto(f"/ui/jobs/{job_id}")

    expect(page.locator("#payload")).to_contain_text(script)
    assert page.evaluate("window.pwned") is None
    assert page.locator("#payload script, #payload img").count() == 0


def test_every_page_is_reached_from_the_navigation(dev: Server, open_page: OpenPage) -> None:
    job_id = dev.enqueue("email", delay=3600)
    page = open_page(dev)
    page.goto("/ui")
    for name, heading in (
        ("Jobs", "Jobs"),
        ("Dead letters", "Dead letters"),
        ("Queues", "Queues"),
        ("Schedules", "Schedules"),
        ("Overview", "Overview"),
    ):
        page.get_by_role("link", name=name, exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    page.goto(f"/ui/jobs?lookup={job_id}")
    expect(page).to_have_url(re.compile(f"/ui/jobs/{job_id}$"))
    page.goto("/ui/no-such-page")
    expect(page.get_by_role("heading", level=1)).to_have_text("Error 404")


def test_with_api_token_the_dashboard_asks_for_it_once_and_logs_out(
    secured_dev: Server, open_page: OpenPage
) -> None:
    page = open_page(secured_dev)
    page.goto("/ui/queues")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=%2Fui%2Fqueues$"))

    page.get_by_label("API token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong token.")

    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Queues")
    [session] = [c for c in page.context.cookies() if c["name"] == "taskforge_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"

    # A POST made by hand, with the session but without the form's CSRF token.
    refused = page.request.post("/ui/queues/pause", form={"queue": "jobs:ready"})
    assert refused.status == 403
    assert "CSRF" in refused.text()
    with secured_dev.api() as api:
        assert api.get("/queues").json()["items"][0]["paused"] is False

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    page.goto("/ui")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=%2Fui$"))


def test_the_overview_asks_to_sign_in_again_when_its_session_ends(
    secured_dev: Server, open_page: OpenPage
) -> None:
    page = open_page(secured_dev)
    page.goto("/ui")
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview")

    # As when the session's 12 hours are over, or Log out was pressed in another tab.
    page.context.clear_cookies(name="taskforge_session")

    expect(page).to_have_url(re.compile(r"/ui/login\?next=%2Fui$"), timeout=DEADLINE * 1000)
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview")


def test_read_only_mode_shows_no_action_and_refuses_a_hand_made_post(
    read_only_dev: Server, open_page: OpenPage
) -> None:
    job_id = read_only_dev.enqueue("email", delay=3600)
    page = open_page(read_only_dev)
    for path in ("/ui", "/ui/jobs", f"/ui/jobs/{job_id}", "/ui/dlq", "/ui/queues"):
        page.goto(path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        for name in ("Cancel", "Retry", "Replay", "Move to DLQ", "Pause", "Resume", "Purge"):
            expect(page.get_by_role("button", name=re.compile(name))).to_have_count(0)
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "taskforge_csrf")

    refused = page.request.post(
        f"/ui/jobs/{job_id}/cancel", form={"csrf_token": csrf, "reason": "by hand"}
    )

    assert refused.status == 403
    assert "read-only" in refused.text()
    assert read_only_dev.job(job_id)["state"] == "PENDING"


def test_names_of_the_longest_allowed_length_keep_every_page_within_the_window(
    dev: Server, open_page: OpenPage, screenshot: Screenshot
) -> None:
    """A queue, job type or schedule name may be 128 characters without a space."""
    queue, job_type, schedule = "q" * 128, "t" * 128, "s" * 128
    dev.enqueue(job_type, queue=queue, delay=3600)
    dead = dev.enqueue(job_type, queue=queue, delay=3600)
    with dev.api() as api:
        assert api.post(f"/jobs/{dead}/dlq", json={"reason": "by hand"}).status_code == 200
        created = api.post(
            "/schedules",
            json={"name": schedule, "cron": "0 3 * * *", "jobType": job_type, "queue": queue},
        )
        assert created.status_code == 201, created.text
    page = open_page(dev)
    window = page.evaluate("document.documentElement.clientWidth")

    for path in ("/ui", "/ui/jobs", "/ui/queues", "/ui/schedules", "/ui/dlq", "group", "confirm"):
        if path == "group":
            page.goto("/ui/dlq")
            page.locator(f'tr[data-group="{job_type}"]').get_by_role("link").click()
        elif path == "confirm":
            page.get_by_role("button", name="Purge group").click()
        else:
            page.goto(path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= window, f"{path} is {width} px wide in a {window} px window"
    page.goto("/ui/jobs")
    screenshot(page, "long-names")


PHONE: ViewportSize = {"width": 360, "height": 740}


def test_on_a_phone_every_navigation_link_is_inside_the_header(
    dev: Server, open_page: OpenPage, screenshot: Screenshot
) -> None:
    page = open_page(dev)
    page.set_viewport_size(PHONE)
    page.goto("/ui/dlq")

    header = page.locator("header").bounding_box()
    assert header is not None
    for name in ("Overview", "Jobs", "Dead letters", "Queues", "Schedules"):
        link = page.get_by_role("link", name=name, exact=True).bounding_box()
        assert link is not None
        assert link["x"] + link["width"] <= PHONE["width"], f"{name} is off the screen"
        assert link["x"] + link["width"] <= header["x"] + header["width"], f"{name} is off the bar"
        assert link["y"] + link["height"] <= header["y"] + header["height"], f"{name} is below it"
    screenshot(page, "phone-navigation")


def test_the_live_overview_keeps_the_keyboard_focus_and_a_selection_across_refreshes(
    dev: Server, queue: str, open_page: OpenPage
) -> None:
    # Each refresh replaced the part: the focus fell back to the page, a selection vanished.
    dev.wait_for_state(dev.enqueue("noop", queue=queue), "SUCCEEDED")  # the queue has a row
    page = open_page(dev)
    page.goto("/ui")
    link = page.locator(f'tr[data-queue="{queue}"] th a')
    link.focus()
    before = page.locator("#live").get_attribute("data-refreshed") or ""
    page.wait_for_function(  # a refresh replaced the part since
        "before => (document.getElementById('live').dataset.refreshed || before) !== before",
        arg=before,
        timeout=DEADLINE * 1000,
    )

    assert page.evaluate("document.activeElement.getAttribute('href')") == link.get_attribute(
        "href"
    )

    page.evaluate(
        """() => {
            const cell = document.querySelector('tr[data-worker] td');
            window.getSelection().selectAllChildren(cell);
        }"""
    )
    selected = page.evaluate("String(window.getSelection())")
    assert selected
    page.wait_for_function(
        "() => document.getElementById('live').dataset.postponed !== undefined",
        timeout=DEADLINE * 1000,
    )
    assert page.evaluate("String(window.getSelection())") == selected
