"""/readyz and the data routes when Postgres is not usable: a schema never migrated or
behind, a database or role that does not exist, a server that stops answering; and what
/readyz and /metrics show a caller without the token."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from taskforge.adapters.postgres import apply_migrations
from taskforge.adapters.postgres.migrations import load_migrations
from taskforge.entrypoints.config import Address
from taskforge.entrypoints.container import Backend
from taskforge.entrypoints.http.routes import READINESS_TIMEOUT
from tests.faults.proxy import FaultProxy, Route
from tests.integration.http.conftest import assert_error

pytestmark = pytest.mark.parametrize(
    "backend",
    [pytest.param(Backend.POSTGRES_REDIS, marks=pytest.mark.integration)],
    indirect=True,
    ids=str,
)

TOKEN = "readiness-token"
MIGRATE = "run `taskforge migrate`"


def _with(dsn: str, *, user: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user or parts.username or 'postgres'}@{host}"
    return urlunsplit(parts._replace(netloc=netloc, path="/" + (database or parts.path[1:])))


@pytest.fixture
def dsn_kind() -> str:
    """Which Postgres DSN the app gets: `@pytest.mark.parametrize("dsn_kind", [...])`."""
    return "migrated"


@pytest.fixture
def extra() -> dict[str, Any]:
    """Other settings fields the test changes."""
    return {}


@pytest.fixture
def overrides(
    request: pytest.FixtureRequest, dsn_kind: str, extra: dict[str, Any]
) -> dict[str, Any]:
    admin: str = request.getfixturevalue("postgres_admin_dsn")
    if dsn_kind == "missing database":
        dsn = _with(admin, database="taskforge_no_such_database")
    elif dsn_kind == "unknown role":
        dsn = _with(admin, user="taskforge_no_such_role")
    else:  # a fixture's: scratch_dsn, stalled_dsn, silent_dsn, migrated_dsn
        dsn = request.getfixturevalue(f"{dsn_kind}_dsn")
    return {"postgres_dsn": dsn, **extra}


@pytest.mark.parametrize("dsn_kind", ["scratch"])
async def test_a_database_without_the_schema_is_not_ready_until_migrated(
    client: httpx.AsyncClient, scratch_dsn: str
) -> None:
    ready = await client.get("/readyz")
    enqueue = await client.post("/jobs", json={"jobType": "email"})

    assert ready.status_code == 503
    assert MIGRATE in ready.json()["checks"]["postgres"]
    assert MIGRATE in assert_error(enqueue, 503, "not_ready")["message"]
    assert_error(await client.get("/jobs"), 503, "not_ready")

    await apply_migrations(scratch_dsn)

    assert (await client.get("/readyz")).status_code == 200
    assert (await client.post("/jobs", json={"jobType": "email"})).status_code == 201


@pytest.mark.parametrize("dsn_kind", ["scratch"])
async def test_a_schema_behind_this_version_is_not_ready(
    client: httpx.AsyncClient, scratch_dsn: str
) -> None:
    await apply_migrations(scratch_dsn)
    last = load_migrations()[-1].version
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await conn.execute("DELETE FROM schema_migrations WHERE version = $1", last)
    finally:
        await conn.close()

    ready = await client.get("/readyz")

    assert ready.status_code == 503
    assert f"{last} not applied" in ready.json()["checks"]["postgres"]
    assert MIGRATE in ready.json()["message"]
    assert MIGRATE in assert_error(await client.get("/jobs"), 503, "not_ready")["message"]


@pytest.mark.parametrize(
    ("dsn_kind", "reason"),
    [
        ("missing database", 'database "taskforge_no_such_database" does not exist'),
        ("unknown role", 'role "taskforge_no_such_role" does not exist'),
    ],
)
async def test_a_database_postgres_refuses_is_503_on_data_routes_and_readyz_says_why(
    client: httpx.AsyncClient, reason: str
) -> None:
    listed = await client.get("/jobs")
    enqueued = await client.post("/jobs", json={"jobType": "email"})
    ready = await client.get("/readyz")

    assert reason in assert_error(listed, 503, "not_ready")["message"]
    assert_error(enqueued, 503, "not_ready")
    assert ready.status_code == 503
    assert reason in ready.json()["checks"]["postgres"]


@pytest.mark.parametrize("dsn_kind", ["unknown role"])
@pytest.mark.parametrize("extra", [{"api_token": TOKEN, "redis_addr": Address("127.0.0.1", 1)}])
async def test_readyz_tells_why_only_to_a_caller_with_the_token(
    client: httpx.AsyncClient,
) -> None:
    anonymous = await client.get("/readyz")
    wrong_token = await client.get("/readyz", headers={"Authorization": "Bearer nope"})
    trusted = await client.get("/readyz", headers={"Authorization": f"Bearer {TOKEN}"})

    for response in (anonymous, wrong_token):
        assert response.status_code == 503
        body = response.json()
        assert body["checks"] == {"postgres": "error", "redis": "error"}
        assert body["details"] == body["checks"]
        assert "postgres" in body["message"]
        for internal in ("taskforge_no_such_role", "127.0.0.1", "does not exist"):
            assert internal not in response.text
    assert trusted.status_code == 503
    assert "taskforge_no_such_role" in trusted.json()["checks"]["postgres"]
    assert trusted.json()["checks"]["redis"].startswith("error: ")


@pytest.mark.parametrize("dsn_kind", ["unknown role"])
@pytest.mark.parametrize("extra", [{"api_token": TOKEN}])
async def test_metrics_tells_why_postgres_is_unavailable_only_to_a_caller_with_the_token(
    client: httpx.AsyncClient,
) -> None:
    anonymous = await client.get("/metrics")
    trusted = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})

    assert assert_error(anonymous, 503, "not_ready")["message"] == "postgres unavailable"
    assert "taskforge_no_such_role" not in anonymous.text
    assert "taskforge_no_such_role" in assert_error(trusted, 503, "not_ready")["message"]


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy()
    try:
        yield proxy
    finally:
        await proxy.close()


@pytest.fixture
async def postgres_route(proxy: FaultProxy, migrated_dsn: str) -> Route:
    parts = urlsplit(migrated_dsn)
    return await proxy.add("postgres", parts.port or 5432, upstream_host=parts.hostname)


@pytest.fixture
def stalled_dsn(migrated_dsn: str, postgres_route: Route) -> str:
    """The migrated database through a proxy the test stalls (`postgres_route.stall()`)."""
    parts = urlsplit(migrated_dsn)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{postgres_route.port}"))


@pytest.fixture
def silent_dsn(migrated_dsn: str) -> Iterator[str]:
    """A port whose connections are accepted by the kernel and never answered."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        parts = urlsplit(migrated_dsn)
        user = parts.netloc.rpartition("@")[0]
        yield urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{port}"))


async def _timed_readyz(client: httpx.AsyncClient) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.get("/readyz")
    return response, time.monotonic() - started


# The bound is generous for a busy machine; without it the first answer took the pool's
# whole acquire timeout (10 s) more.
BOUND = READINESS_TIMEOUT + 2


@pytest.mark.parametrize("dsn_kind", ["stalled"])
async def test_readyz_answers_within_its_limit_when_postgres_stops_answering(
    client: httpx.AsyncClient, postgres_route: Route
) -> None:
    assert (await client.get("/readyz")).status_code == 200  # a pooled connection now exists
    postgres_route.stall()

    for _ in range(2):
        response, elapsed = await _timed_readyz(client)

        assert response.status_code == 503
        assert response.json()["checks"]["postgres"] == (
            f"error: no answer within {READINESS_TIMEOUT:g}s"
        )
        assert elapsed < BOUND


@pytest.mark.parametrize("dsn_kind", ["silent"])
async def test_readyz_answers_within_its_limit_when_postgres_never_answers(
    client: httpx.AsyncClient,
) -> None:
    response, elapsed = await _timed_readyz(client)

    assert response.status_code == 503
    assert response.json()["checks"]["postgres"].startswith("error: ")
    assert elapsed < BOUND
