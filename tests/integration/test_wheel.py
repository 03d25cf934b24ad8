"""A wheel built from the tree is a whole TaskForge: every code folder is in it (the
folders reach the package through links, which an editable install hides), with the
migrations' SQL, and its console scripts import from the installed copy."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "domain",
    "application",
    "adapters",
    "entrypoints",
    "bench",
    "client",
    "cli",
    "migrations",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    uv = Path(sys.executable).with_name("uv")
    # The locked hatchling in this environment builds it: nothing is fetched, so the test
    # runs offline as the rest of the suite does.
    build = [str(uv), "build", "--wheel", "--quiet", "--no-build-isolation", "--offline"]
    subprocess.run(
        [*build, "--python", sys.executable, "--out-dir", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    [built] = out.glob("taskforge-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed (without its dependencies, which this interpreter has) into a
    folder of its own, put ahead of the editable install on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    return target


def shipped(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


@pytest.mark.parametrize("package", PACKAGES)
def test_the_wheel_ships_every_code_folder(wheel: Path, package: str) -> None:
    in_tree = {
        path.relative_to(ROOT).as_posix()
        for pattern in ("*.py", "*.sql")
        for path in (ROOT / package).rglob(pattern)
        if "__pycache__" not in path.parts
    }
    assert in_tree, f"{package}/ holds no code"
    assert {f"taskforge/{name}" for name in in_tree} <= shipped(wheel)


def test_the_wheel_ships_the_migrations_sql(wheel: Path) -> None:
    sql = {name for name in shipped(wheel) if name.startswith("taskforge/migrations/")}
    assert {Path(name).name for name in sql} >= {
        path.name for path in (ROOT / "migrations").glob("*.sql")
    }


def test_the_wheel_ships_the_dashboards_templates_and_assets(wheel: Path) -> None:
    ui = ROOT / "entrypoints" / "http" / "ui"
    assets = {
        f"taskforge/{path.relative_to(ROOT).as_posix()}"
        for folder in ("templates", "static")
        for path in (ui / folder).iterdir()
    }
    assert any(name.endswith(".html") for name in assets)
    assert any(name.endswith(".js") for name in assets)
    assert assets <= shipped(wheel)


def console_scripts(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [name for name in archive.namelist() if name.endswith("entry_points.txt")]
        entry_points = configparser.ConfigParser()
        entry_points.read_string(archive.read(name).decode())
    return dict(entry_points["console_scripts"])


def test_the_installed_console_scripts_import(wheel: Path, installed: Path) -> None:
    scripts = console_scripts(wheel)
    assert set(scripts) == {"taskforge", "taskforge-cli"}
    env = {**os.environ, "PYTHONPATH": str(installed)}
    for target in scripts.values():
        module, attribute = target.split(":")
        probe = (
            f"import {module} as m; assert callable(m.{attribute}); "
            "import taskforge; print(taskforge.__file__)"
        )
        loaded = subprocess.run(
            [sys.executable, "-c", probe],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=installed,
        )
        assert loaded.returncode == 0, loaded.stderr
        assert Path(loaded.stdout.strip()).is_relative_to(installed)
