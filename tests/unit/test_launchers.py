"""The commands start through small launchers that import the command's modules with the
cycle collector paused, freeze what the imports allocated, and turn the collector back on
before the command runs."""

from __future__ import annotations

import gc
import sys
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


class _InterruptedImport:
    """A module whose names raise KeyboardInterrupt: Ctrl-C while the command's modules load."""

    def __getattr__(self, name: str) -> object:
        raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("launch", "module"),
    [
        (taskforge.entrypoints.cli.main, "taskforge.entrypoints.cli.service"),
        (taskforge.cli.main, "taskforge.cli.app"),
    ],
)
def test_ctrl_c_while_the_modules_load_exits_130_without_a_traceback(
    launch: Callable[[], None], module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for step in ("disable", "freeze", "enable"):
        monkeypatch.setattr(gc, step, lambda: None)
    monkeypatch.setitem(sys.modules, module, _InterruptedImport())
    with pytest.raises(SystemExit) as stopped:
        _launch_uninterrupted(launch)
    assert stopped.value.code == 130
    assert stopped.value.__suppress_context__


def _launch_uninterrupted(launch: Callable[[], None]) -> None:
    try:
        launch()
    except KeyboardInterrupt:  # what Python prints with a traceback
        pytest.fail("the launcher let KeyboardInterrupt through")


def test_the_commands_are_the_launchers() -> None:
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert scripts == {
        "taskforge": "taskforge.entrypoints.cli:main",
        "taskforge-cli": "taskforge.cli:main",
    }
