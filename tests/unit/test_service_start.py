"""Starting the API: where `taskforge dev` listens by default, one clear line (no
traceback) when the address is taken, and why several API processes cannot use Postgres."""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from taskforge.adapters.telemetry.logging import configure_logging
from taskforge.entrypoints.cli import service
from taskforge.entrypoints.cli.service import dev_http_addr
from taskforge.entrypoints.config import Address, ConfigError, Settings
from tests.support import free_port
from tests.unit.test_config import run_taskforge


@pytest.mark.parametrize(
    ("flag", "env", "address"),
    [
        (None, {}, Address("127.0.0.1", 8080)),  # this machine only: dev has no token
        (None, {"HTTP_ADDR": " "}, Address("127.0.0.1", 8080)),  # blank counts as unset
        (None, {"HTTP_ADDR": ":9000"}, None),  # None: the settings take HTTP_ADDR
        (":9000", {}, Address("0.0.0.0", 9000)),  # exposed on every interface on request
        ("127.0.0.1:9001", {"HTTP_ADDR": ":9000"}, Address("127.0.0.1", 9001)),
    ],
)
def test_dev_listens_on_localhost_unless_told_otherwise(
    flag: str | None, env: dict[str, str], address: Address | None
) -> None:
    assert dev_http_addr(flag, env) == address


@pytest.mark.parametrize("flag", ["", " "])
def test_dev_refuses_an_empty_addr_rather_than_listening_on_the_default(flag: str) -> None:
    with pytest.raises(ConfigError, match="--addr"):
        dev_http_addr(flag, {"HTTP_ADDR": ":9000"})


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["dev", "--addr", "127.0.0.1:{port}"], {}),
        (["dev"], {"HTTP_ADDR": "127.0.0.1:{port}"}),
        (["api"], {"HTTP_ADDR": "127.0.0.1:{port}", "API_WORKERS": "1"}),
        (["api"], {"HTTP_ADDR": "127.0.0.1:{port}", "API_WORKERS": "2"}),
    ],
    ids=["dev-flag", "dev-env", "api", "api-processes"],
)
def test_a_taken_port_is_one_line_and_a_failed_exit(
    taken_port: int, args: list[str], env: dict[str, str]
) -> None:
    dsn = {"POSTGRES_DSN": "postgresql://nobody@127.0.0.1:1/none"}
    filled = {key: value.format(port=taken_port) for key, value in env.items()}

    result = run_taskforge(*(arg.format(port=taken_port) for arg in args), env={**dsn, **filled})

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"taskforge: cannot listen on 127.0.0.1:{taken_port}: address already in use; "
        "choose another address with HTTP_ADDR (or --addr for taskforge dev)"
    ], result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("role", ["worker", "scheduler"])
def test_a_taken_metrics_port_is_one_line_and_a_failed_exit(taken_port: int, role: str) -> None:
    env = {
        "POSTGRES_DSN": "postgresql://nobody@127.0.0.1:1/none",
        "METRICS_ADDR": f"127.0.0.1:{taken_port}",
    }

    result = run_taskforge(role, env=env)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"taskforge: cannot listen on 127.0.0.1:{taken_port}: address already in use; "
        "choose another address with METRICS_ADDR"
    ], result.stderr


@pytest.mark.usefixtures("restore_root_logger")
def test_several_api_processes_log_once_why_they_cannot_use_postgres(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # API_WORKERS=2: uvicorn forks the processes (replaced here by a wait for the log line);
    # the start-up check says why they answer 503, as one API process does.
    nothing_there = free_port()
    settings = Settings.from_env(
        {
            "POSTGRES_DSN": f"postgresql://nobody:pw@127.0.0.1:{nothing_there}/taskforge",
            "REDIS_ADDR": f"127.0.0.1:{nothing_there}",
            "HTTP_ADDR": f"127.0.0.1:{free_port()}",
            "API_WORKERS": "2",
        }
    )
    stream = io.StringIO()
    monkeypatch.setattr(
        service, "configure_logging", lambda level, _: configure_logging(level, "text", stream)
    )
    expected = f"api cannot use Postgres at postgresql://nobody:***@127.0.0.1:{nothing_there}/"

    def serve(*_: Any, **__: Any) -> None:
        deadline = time.monotonic() + 10
        while expected not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)

    monkeypatch.setattr(uvicorn, "run", serve)

    service._serve_api_processes(settings)

    assert stream.getvalue().count(expected) == 1, stream.getvalue()
    assert "(re-checking every 5s)" in stream.getvalue()
    assert not [thread for thread in threading.enumerate() if thread.name == "store-check"]


@pytest.mark.usefixtures("restore_root_logger")
def test_several_api_processes_say_where_they_listen_as_one_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # API_WORKERS=2 logged only uvicorn's line, whose "Press CTRL+C to quit" misleads under
    # a service manager, and not TaskForge's.
    nothing_there = free_port()
    address = f"127.0.0.1:{free_port()}"
    settings = Settings.from_env(
        {
            "POSTGRES_DSN": f"postgresql://nobody:pw@127.0.0.1:{nothing_there}/taskforge",
            "REDIS_ADDR": f"127.0.0.1:{nothing_there}",
            "HTTP_ADDR": address,
            "API_WORKERS": "2",
        }
    )
    stream = io.StringIO()
    monkeypatch.setattr(
        service, "configure_logging", lambda level, _: configure_logging(level, "text", stream)
    )

    def serve(*_: Any, **__: Any) -> None:  # as uvicorn's supervisor starts
        logging.getLogger("uvicorn.error").info(
            "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)", "http", "127.0.0.1", 1
        )

    monkeypatch.setattr(uvicorn, "run", serve)

    service._serve_api_processes(settings)

    assert f"API listening on http://{address} (docs at /schema), 2 processes" in stream.getvalue()
    assert "Press CTRL+C" not in stream.getvalue()
