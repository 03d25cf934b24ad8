"""uv.lock pins what pyproject.toml asks for: a fresh clone installs exactly what was tested."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).with_name("uv")


def lock_check(project: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """`uv lock --check`, offline: succeeds only when the lock matches the project as is."""
    return subprocess.run(
        [str(UV), "lock", "--check", "--offline", "--cache-dir", str(cache)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, copy / name)
    return copy


def test_the_lock_matches_pyproject(project_copy: Path, tmp_path: Path) -> None:
    done = lock_check(project_copy, tmp_path / "cache")
    assert done.returncode == 0, done.stderr


def test_a_dependency_changed_without_relocking_is_caught(
    project_copy: Path, tmp_path: Path
) -> None:
    pyproject = project_copy / "pyproject.toml"
    text = pyproject.read_text()
    assert '"redis>=5.0",' in text
    pyproject.write_text(text.replace('"redis>=5.0",', '"redis>=5.0",\n    "six>=1.16",'))
    done = lock_check(project_copy, tmp_path / "cache")
    assert done.returncode != 0


def test_run_installs_the_uv_version_the_lock_pins() -> None:
    """./run bootstraps uv at the locked version; the lock must keep naming one."""
    lock = (ROOT / "uv.lock").read_text()
    assert '\nname = "uv"\nversion = "' in lock
    assert "uv sync --quiet --locked" in (ROOT / "run").read_text()
