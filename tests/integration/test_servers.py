"""How the suite finds its servers: named ones, the default local ones, else private ones."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests import servers
from tests.servers import ServicesUnavailable, find_postgres, find_redis
from tests.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def nothing_local(monkeypatch: pytest.MonkeyPatch) -> int:
    """No variables set and nothing answering where the default servers would be."""
    closed = free_port()
    monkeypatch.delenv("TASKFORGE_TEST_POSTGRES_DSN", raising=False)
    monkeypatch.delenv("TASKFORGE_TEST_REDIS_URL", raising=False)
    monkeypatch.setattr(
        servers, "_local_postgres_dsns", lambda: [f"postgresql://postgres@127.0.0.1:{closed}/x"]
    )
    monkeypatch.setattr(servers, "LOCAL_REDIS_URL", f"redis://127.0.0.1:{closed}/0")
    monkeypatch.setattr(servers, "_docker_answers", lambda: False)
    return closed


def test_with_nothing_answering_private_servers_start_and_are_removed_at_the_end(
    nothing_local: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Path] = []
    for kind in (servers.PrivatePostgres, servers.PrivateRedis):
        create = kind.create

        def recording(*args: Any, _create: Any = create, **kwargs: Any) -> Any:
            server = _create(*args, **kwargs)
            started.append(server.root)
            return server

        monkeypatch.setattr(kind, "create", recording)
    with ExitStack() as stack:
        postgres = find_postgres(stack)
        redis = find_redis(stack)
        assert "private server" in postgres.where
        assert "private server" in redis.where
        assert servers._postgres_problem(postgres.url) is None
        assert servers._redis_problem(redis.url) is None
    assert servers._postgres_problem(postgres.url) is not None
    assert servers._redis_problem(redis.url) is not None
    assert len(started) == 2
    assert not any(root.exists() for root in started)


def test_a_named_server_that_does_not_answer_is_an_error_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed = free_port()
    monkeypatch.setenv("TASKFORGE_TEST_POSTGRES_DSN", f"postgresql://postgres@127.0.0.1:{closed}/x")
    monkeypatch.setenv("TASKFORGE_TEST_REDIS_URL", f"redis://127.0.0.1:{closed}/0")
    with ExitStack() as stack:
        with pytest.raises(ServicesUnavailable, match="TASKFORGE_TEST_POSTGRES_DSN"):
            find_postgres(stack)
        with pytest.raises(ServicesUnavailable, match="TASKFORGE_TEST_REDIS_URL"):
            find_redis(stack)


def test_without_server_binaries_the_error_says_what_to_install(
    nothing_local: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def missing(*_: object) -> None:
        raise ServicesUnavailable("the binaries are not installed")

    monkeypatch.setattr(servers, "postgres_bindir", missing)
    monkeypatch.setattr(servers, "redis_server_binary", missing)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a server's folder would go
    with ExitStack() as stack:
        with pytest.raises(ServicesUnavailable, match="apt-get install postgresql") as pg:
            find_postgres(stack)
        with pytest.raises(ServicesUnavailable, match="apt-get install redis-server") as rd:
            find_redis(stack)
    for error in (pg.value, rd.value):
        assert "\n" not in str(error)
    assert list(tmp_path.iterdir()) == []  # no server's folder left behind


def test_the_default_local_servers_are_used_when_they_answer(
    postgres_admin_dsn: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Point the 'default' addresses at servers known to answer: they are taken as is."""
    monkeypatch.delenv("TASKFORGE_TEST_POSTGRES_DSN", raising=False)
    monkeypatch.delenv("TASKFORGE_TEST_REDIS_URL", raising=False)
    monkeypatch.setattr(servers, "_local_postgres_dsns", lambda: [postgres_admin_dsn])
    monkeypatch.setattr(servers, "LOCAL_REDIS_URL", redis_url)
    with ExitStack() as stack:
        assert find_postgres(stack).url == postgres_admin_dsn
        assert find_redis(stack).url == redis_url
        assert "local server" in find_redis(stack).where
    assert urlsplit(postgres_admin_dsn).scheme.startswith("postgres")
