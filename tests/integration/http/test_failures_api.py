"""Failures behind the API: an unexpected exception is a 500 without internals, an outage of
a backing service (`Unavailable`) is a 503. The in-memory backend with injected faults
stands in for a store that breaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import httpx
import pytest
from dishka import Provider, Scope, provide

from taskforge.adapters.memory.job_store import InMemoryJobStore
from taskforge.adapters.memory.state import InMemoryState
from taskforge.application.handlers import HandlerRegistry
from taskforge.application.ports import JobStore, ListFilter
from taskforge.domain.errors import Unavailable
from taskforge.domain.job import Job
from taskforge.domain.validation import Page
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.container import Backend, make_container
from taskforge.entrypoints.http import routes
from taskforge.entrypoints.http.app import create_app
from tests.integration.http.conftest import BASE_URL, LogLines, assert_error

SECRET = "password=hunter2 at db.internal:5432"


class FaultyJobStore(InMemoryJobStore):
    """The in-memory job store, except that the calls named in `faults` raise (or hang)."""

    def __init__(self, state: InMemoryState, faults: dict[str, Any]) -> None:
        super().__init__(state)
        self._faults = faults

    async def _maybe_fail(self, call: str) -> None:
        fault = self._faults.get(call)
        if fault == "hang":
            await asyncio.Event().wait()
        if isinstance(fault, BaseException):
            raise fault

    async def find(self, where: ListFilter, page: Page) -> tuple[list[Job], int]:
        await self._maybe_fail("find")
        return await super().find(where, page)

    async def get(self, job_id: UUID) -> Job | None:
        await self._maybe_fail("get")
        return await super().get(job_id)

    async def ping(self) -> None:
        await self._maybe_fail("ping")


class FaultProvider(Provider):
    scope = Scope.APP

    def __init__(self, faults: dict[str, Any]) -> None:
        super().__init__()
        self._faults = faults

    @provide(override=True)
    def jobs(self, state: InMemoryState) -> JobStore:
        return FaultyJobStore(state, self._faults)


@pytest.fixture
def faults() -> dict[str, Any]:
    return {}


@pytest.fixture
async def client(faults: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings()
    container = make_container(
        settings, Backend.MEMORY, HandlerRegistry(), overrides=[FaultProvider(faults)]
    )
    app = create_app(container, settings)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client
    finally:
        await container.close()


@pytest.mark.parametrize("faults", [{"find": RuntimeError(SECRET)}])
async def test_unexpected_exception_is_500_without_internals(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/jobs")

    body = assert_error(response, 500, "internal_error")
    assert body["details"] is None
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text
    assert response.headers["x-request-id"]


@pytest.mark.parametrize("faults", [{"find": RuntimeError(SECRET)}])
async def test_unexpected_exception_is_logged_with_its_traceback_and_request_id(
    client: httpx.AsyncClient, logs: LogLines
) -> None:
    await client.get("/jobs", headers={"x-request-id": "req-500"})

    [error] = [line for line in logs() if line["level"] == "error"]
    assert error["request_id"] == "req-500"
    assert "RuntimeError" in error["exception"]
    assert "hunter2" in error["exception"]


@pytest.mark.parametrize("faults", [{"get": Unavailable("postgres", "connection refused")}])
async def test_backend_outage_is_503_not_ready(client: httpx.AsyncClient) -> None:
    response = await client.get("/jobs/01900000-0000-7000-8000-000000000000")

    body = assert_error(response, 503, "not_ready")
    assert body["details"] == {"service": "postgres"}
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize("faults", [{"get": Unavailable("postgres", "connection refused")}])
async def test_every_line_logged_while_serving_carries_the_request_id(
    client: httpx.AsyncClient, logs: LogLines
) -> None:
    await client.get("/jobs/01900000-0000-7000-8000-000000000000", headers={"x-request-id": "r-9"})

    written = logs()
    assert {line["level"] for line in written} == {"warn", "info"}  # the outage, the access
    assert {line["request_id"] for line in written} == {"r-9"}


@pytest.mark.parametrize("faults", [{"ping": Unavailable("postgres", "connection refused")}])
async def test_readyz_is_503_naming_the_failing_check(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "not_ready"
    assert body["status"] == "not_ready"
    assert body["checks"] == {
        "store": "error: postgres unavailable: connection refused",
        "queue": "ok",
    }
    assert "store" in body["message"]


@pytest.mark.parametrize("faults", [{"ping": "hang"}])
async def test_readyz_reports_a_check_that_does_not_answer_in_time(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "READINESS_TIMEOUT", 0.05)

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["store"] == "error: no answer within 0.05s"


@pytest.mark.parametrize("faults", [{"ping": Unavailable("postgres", "down")}])
async def test_healthz_stays_200_while_the_store_is_down(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
