"""The commands start through small launchers that import the command's modules with the
cycle collector paused, freeze what the imports allocated, and turn the collector back on
before the command runs."""

from __future__ import annotations

import gc
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

import taskforge.cli
import taskforge.cli.app
import taskforge.entrypoints.cli
import taskforge.entrypoints.cli.service

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


@pytest.mark.parametrize(
    ("launch", "module"),
    [
        (taskforge.entrypoints.cli.main, taskforge.entrypoints.cli.service),
        (taskforge.cli.main, taskforge.cli.app),
    ],
)
def test_the_collector_is_paused_for_the_imports_and_on_when_the_command_runs(
    launch: Callable[[], None], module: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[str] = []
    for step in ("disable", "freeze", "enable"):
        monkeypatch.setattr(gc, step, lambda step=step: steps.append(step))
    monkeypatch.setattr(module, "main", lambda: steps.append("command"))
    launch()
    assert steps == ["disable", "freeze", "enable", "command"]


def test_the_commands_are_the_launchers() -> None:
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert scripts == {
        "taskforge": "taskforge.entrypoints.cli:main",
        "taskforge-cli": "taskforge.cli:main",
    }
