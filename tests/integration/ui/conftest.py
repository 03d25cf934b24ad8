"""Browser tests of the dashboard: Chromium (Debian's, at /usr/bin/chromium; never a
downloaded one) driven by Playwright, against whole TaskForge processes.

One browser per module; each test opens its pages in a fresh context (no cookies shared)
through `open_page`, which fails the test if the browser asked any other host for anything
or the page broke its Content-Security-Policy. `screenshot` saves a picture to the test's
tmp dir and, when TASKFORGE_SCREENSHOTS names a directory, there too (the README's come
from `TASKFORGE_SCREENSHOTS=docs/images`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    expect,
    sync_playwright,
)

from tests.support import free_port

CHROMIUM = Path("/usr/bin/chromium")
SUPPORT = Path(__file__).parent / "support"
TASKFORGE = Path(sys.executable).parent / "taskforge"
DEADLINE = 30.0
STARTUP_DEADLINE = 90.0
"""Several servers start at once, each importing for seconds on a busy machine."""
SCREENSHOTS = "TASKFORGE_SCREENSHOTS"
STEP_TIMEOUT_MS = 10_000
"""How long an action (click, goto) or an `expect` waits for the page: a click's POST,
redirect and render, on a machine the browser shares with the servers. `expect` has its own
default (5 s), not the context's, so both are set."""

expect.set_options(timeout=STEP_TIMEOUT_MS)


@dataclass
class Server:
    """TaskForge processes, the first of which serves HTTP at `url`."""

    url: str
    processes: list[subprocess.Popen[bytes]]
    logs: list[Path]
    token: str | None = None
    switch_dir: Path = field(default_factory=Path)
    """Where the `switched` handler's switch files go."""

    def api(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def enqueue(self, job_type: str, **body: Any) -> str:
        with self.api() as client:
            response = client.post("/jobs", json={"jobType": job_type, **body})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        with self.api() as client:
            response = client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_for_all(self, ids: list[str], state: str) -> None:
        """Until every job of `ids` is in `state` (at most 200 ids)."""
        deadline = time.monotonic() + DEADLINE
        with self.api() as client:
            while True:
                response = client.get("/jobs", params={"status": state, "limit": 200})
                assert response.status_code == 200, response.text
                missing = set(ids) - {job["id"] for job in response.json()["items"]}
                if not missing:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"{len(missing)} jobs are not {state}")
                time.sleep(0.1)

    def wait_for_state(self, job_id: str, *states: str) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE
        while True:
            job = self.job(job_id)
            if job["state"] in states:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is {job['state']}, wanted {states}")
            time.sleep(0.05)

    def tail(self) -> str:
        return "\n".join(log.read_text(errors="replace")[-4000:] for log in self.logs)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def launch(
    roles: list[list[str]], env: dict[str, str], logs: Path, token: str | None = None
) -> Server:
    """Start each role (`["dev"]`, `["api"]`, ...) with `env`; the first serves HTTP. Call
    `wait_until_healthy` before using it (servers started together start in parallel)."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
        "TASKFORGE_HANDLERS": "dashboard_handlers",
        "LOG_LEVEL": "warn",
        **env,
    }
    env.pop("WORKER_QUEUES", None)
    if token:
        env["API_TOKEN"] = token
    processes = []
    log_files = []
    for index, role in enumerate(roles):
        log = logs / f"{role[0]}-{index}.log"
        role_env = {**env, "HTTP_ADDR": f"127.0.0.1:{port}"} if index == 0 else env
        with log.open("wb") as output:
            processes.append(
                subprocess.Popen(
                    [TASKFORGE, *role], env=role_env, stdout=output, stderr=subprocess.STDOUT
                )
            )
        log_files.append(log)
    return Server(f"http://127.0.0.1:{port}", processes, log_files, token, logs)


def wait_until_healthy(*servers: Server) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    waiting = list(servers)
    while waiting:
        server = waiting[0]
        if server.processes[0].poll() is not None:
            raise AssertionError(f"TaskForge exited early:\n{server.tail()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                waiting.pop(0)
                continue
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"TaskForge never became healthy:\n{server.tail()}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (Debian: apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            yield browser
        finally:
            browser.close()


OpenPage = Callable[[Server], Page]


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    """A page in a fresh context, on `server`; every request it makes is recorded and
    checked after the test: the server's host only, and no Content-Security-Policy breach."""
    contexts = []
    requested: list[tuple[str, str]] = []
    breaches: list[str] = []

    def open_on(server: Server) -> Page:
        context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(STEP_TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        origin = urlsplit(server.url).netloc

        def record(request: Request) -> None:
            requested.append((origin, request.url))

        def console(message: ConsoleMessage) -> None:
            if "Content Security Policy" in message.text:
                breaches.append(message.text)

        page.on("request", record)
        page.on("console", console)
        return page

    try:
        yield open_on
    finally:
        for context in contexts:
            context.close()
    foreign = [url for origin, url in requested if urlsplit(url).netloc != origin]
    assert requested
    assert foreign == [], "the dashboard asked another host"
    assert breaches == []


Screenshot = Callable[[Page, str], Path]


@pytest.fixture
def screenshot(tmp_path: Path) -> Screenshot:
    def take(page: Page, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        wanted = os.environ.get(SCREENSHOTS)
        if wanted:
            Path(wanted).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(wanted) / f"{name}.png"), full_page=True)
        return path

    return take


def count_in(page: Page, queue: str, column: str) -> int:
    """A count of the overview's table, as shown ("≈ 12,345" reads 12345)."""
    cell = page.locator(f'tr[data-queue="{queue}"] td[data-column="{column}"]')
    return int(cell.inner_text().replace("≈", "").replace(",", "").strip())
