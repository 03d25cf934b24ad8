"""The installed commands start through small launchers that import the command's modules
with the cycle collector paused, then turn it back on before the command runs."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from importlib import metadata

import pytest

import taskforge.cli
import taskforge.cli.app
import taskforge.entrypoints.cli
import taskforge.entrypoints.cli.service


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # what a launcher froze returns to the test process's collector


@pytest.mark.parametrize(
    ("launch", "module"),
    [
        (taskforge.entrypoints.cli.main, taskforge.entrypoints.cli.service),
        (taskforge.cli.main, taskforge.cli.app),
    ],
)
def test_the_command_runs_with_the_cycle_collector_on(
    launch: Callable[[], None], module: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    monkeypatch.setattr(module, "main", lambda: seen.append(gc.isenabled()))
    gc.disable()  # as a launcher leaves it if it forgets to turn it back on
    try:
        launch()
    finally:
        enabled = gc.isenabled()
        gc.enable()
    assert seen == [True]
    assert enabled


def test_the_installed_commands_are_the_launchers() -> None:
    scripts = {entry.name: entry.value for entry in metadata.entry_points(group="console_scripts")}
    assert scripts["taskforge"] == "taskforge.entrypoints.cli:main"
    assert scripts["taskforge-cli"] == "taskforge.cli:main"
