"""TaskForge's version is written once, in pyproject.toml; every command and the client
report what the installed package's metadata says."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

from taskforge.client.core import default_user_agent

INSTALLED = metadata.version("taskforge")


@pytest.mark.parametrize("module", ["taskforge.entrypoints.cli", "taskforge.cli"])
def test_each_command_prints_the_installed_version(module: str) -> None:
    printed = subprocess.run(
        [sys.executable, "-c", f"from {module} import main; main()", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert printed.stdout.strip() == INSTALLED


def test_the_client_names_the_installed_version_in_its_user_agent() -> None:
    assert default_user_agent() == f"taskforge-python/{INSTALLED}"


def test_importing_taskforge_does_not_read_the_package_metadata() -> None:
    probe = "import sys, taskforge; print('taskforge.domain.version' in sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "False"
