"""Guessing API_TOKEN on the dashboard's sign-in form is slowed: after FAILURES_ALLOWED
wrong tokens from one address, the form takes no token from it until the window ends, not
even the right one (429 with Retry-After); then the right token works at once. Other
addresses, and the API's bearer tokens (keys that programs send), are not affected. The
throttle lives in the API process, so the in-memory backend shows all of it; time moves
with a manual clock."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from dishka import Provider, Scope, provide

from taskforge.application.handlers import HandlerRegistry
from taskforge.application.ports import Clock
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.container import Backend, make_container
from taskforge.entrypoints.http.app import create_app
from taskforge.entrypoints.http.throttle import FAILURES_ALLOWED, WINDOW
from tests.clock import ManualClock

from .conftest import BASE_URL

TOKEN = "s3cret-token-for-tests"
ATTACKER = ("198.51.100.7", 40000)
OPERATOR = ("192.0.2.10", 40000)
RIGHT = {"authorization": f"Bearer {TOKEN}"}
WRONG = {"authorization": "Bearer guess"}
CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')

ClientAt = Callable[[tuple[str, int]], AbstractAsyncContextManager[httpx.AsyncClient]]


class ManualClockProvider(Provider):
    scope = Scope.APP

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self._clock = clock

    @provide(override=True)
    def clock(self) -> Clock:
        return self._clock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def client_at(clock: ManualClock) -> AsyncIterator[ClientAt]:
    """Clients of one API process (one throttle), each from the address it is given."""
    settings = Settings(api_token=TOKEN)
    container = make_container(
        settings, Backend.MEMORY, HandlerRegistry(), overrides=[ManualClockProvider(clock)]
    )
    app = create_app(container, settings)

    @asynccontextmanager
    async def at(address: tuple[str, int]) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=app, client=address)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client

    try:
        yield at
    finally:
        await container.close()


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    page = await client.get("/ui/login")
    match = CSRF.search(page.text)
    assert match is not None
    return await client.post(
        "/ui/login", data={"csrf_token": match.group(1), "token": token, "next": "/ui/dlq"}
    )


async def test_wrong_tokens_on_the_sign_in_form_lead_to_a_429_even_for_the_right_one(
    client_at: ClientAt,
) -> None:
    # Was 401 for every wrong token, as fast as the server answered.
    async with client_at(ATTACKER) as client:
        wrong = [await sign_in(client, "guess") for _ in range(FAILURES_ALLOWED)]
        refused = await sign_in(client, TOKEN)

    assert {response.status_code for response in wrong} == {401}
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("text/html")
    assert refused.headers["retry-after"] == str(int(WINDOW.total_seconds()))
    assert "Too many wrong tokens" in refused.text
    assert "taskforge_session" not in refused.headers.get("set-cookie", "")


async def test_once_the_window_ends_the_right_token_signs_in(
    client_at: ClientAt, clock: ManualClock
) -> None:
    async with client_at(ATTACKER) as client:
        for _ in range(FAILURES_ALLOWED):
            await sign_in(client, "guess")
        clock.advance(WINDOW.total_seconds() - 1)
        still_refused = await sign_in(client, TOKEN)
        clock.advance(1)
        signed_in = await sign_in(client, TOKEN)

    assert still_refused.status_code == 429
    assert still_refused.headers["retry-after"] == "1"
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/ui/dlq"


async def test_another_address_keeps_signing_in(client_at: ClientAt) -> None:
    async with client_at(ATTACKER) as attacker:
        for _ in range(FAILURES_ALLOWED):
            await sign_in(attacker, "guess")
    async with client_at(OPERATOR) as operator:
        dashboard = await sign_in(operator, TOKEN)

    assert dashboard.status_code == 303


async def test_wrong_bearer_tokens_are_not_throttled(client_at: ClientAt) -> None:
    """Producers share addresses (a host, a NAT): one still sending a token that was
    changed must not stop the others' enqueues, so bearer tokens are never locked out."""
    async with client_at(OPERATOR) as client:
        stale = [await client.get("/jobs", headers=WRONG) for _ in range(FAILURES_ALLOWED * 3)]
        served = await client.post("/jobs", json={"jobType": "email"}, headers=RIGHT)
        dashboard = await sign_in(client, TOKEN)

    assert {response.status_code for response in stale} == {401}  # told the token is wrong
    assert served.status_code == 201, served.text
    assert dashboard.status_code == 303  # nor do they count against the sign-in form


async def test_wrong_sign_ins_leave_the_addresses_bearer_tokens_alone(
    client_at: ClientAt,
) -> None:
    async with client_at(OPERATOR) as client:
        for _ in range(FAILURES_ALLOWED):
            await sign_in(client, "guess")
        refused = await sign_in(client, TOKEN)
        served = await client.post("/jobs", json={"jobType": "email"}, headers=RIGHT)

    assert refused.status_code == 429
    assert served.status_code == 201, served.text
