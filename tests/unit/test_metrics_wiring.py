"""Which processes wire the Prometheus exposition: the ones that serve metrics (the API,
and a worker or scheduler given METRICS_ADDR). The others start without prometheus_client
(tests/unit/test_start_up_imports.py); this checks each command asks for what it needs."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import pytest

from taskforge.entrypoints.cli import service


@pytest.mark.parametrize(
    ("command", "env", "wired"),
    [
        (["worker"], {}, False),
        (["scheduler"], {}, False),
        (["worker"], {"METRICS_ADDR": "127.0.0.1:9464"}, True),
        (["scheduler"], {"METRICS_ADDR": "127.0.0.1:9464"}, True),
        (["api"], {}, True),
        (["dev"], {}, True),
    ],
)
def test_a_command_wires_the_exposition_only_where_metrics_are_served(
    command: list[str], env: dict[str, str], wired: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METRICS_ADDR", raising=False)
    monkeypatch.setenv("POSTGRES_DSN", "postgresql://nobody@127.0.0.1:1/none")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    asked: list[bool] = []

    def make_container(*args: Any, prometheus: bool = True, **kwargs: Any) -> object:
        asked.append(prometheus)
        return object()

    def run_service(main: Coroutine[Any, Any, None]) -> None:
        main.close()  # built, never run: nothing connects

    monkeypatch.setattr(service, "make_container", make_container)
    monkeypatch.setattr(service, "run_service", run_service)
    monkeypatch.setattr(service, "configure_logging", lambda *args: None)
    service.app(command, result_action="return_value")
    assert asked == [wired]
