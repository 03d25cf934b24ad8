"""The dependency rule, checked on the import graph: entrypoints -> adapters -> application
-> domain, never the other way; domain uses the standard library only. The HTTP client
stands apart from the service (domain values at most), and the operator CLI reaches the
service only through that client."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("domain", "application", "adapters", "entrypoints", "bench", "client", "cli", "sdk")

# What each layer may import from TaskForge itself (besides the standard library).
ALLOWED = {
    "domain": {"domain"},
    "application": {"domain", "application"},
    "adapters": {"domain", "application", "adapters"},
    # `taskforge bench` is a command of the service CLI, which loads the benchmark lazily.
    # The in-process harness for tests (taskforge.testing.InMemoryTaskForge) hands out a
    # client of the API it runs; the client still imports nothing of the service.
    "entrypoints": {"domain", "application", "adapters", "entrypoints", "bench", "client"},
    # It enqueues through the SDK as applications do (the transactional scenarios and the
    # peer comparison).
    "bench": {"domain", "application", "adapters", "entrypoints", "bench", "sdk"},
    "client": {"domain", "client"},
    "cli": {"domain", "client", "cli"},
    # The transactional enqueue runs the Postgres job store's statements on the application's
    # connection and answers with the client's values and errors; a typed task registers
    # its handler in the application's handler registry.
    "sdk": {"domain", "application", "adapters", "client", "sdk"},
}
# Within an allowed layer, modules a layer still may not reach: the benchmark fills tables
# through the adapters and starts processes, but drives the service only over HTTP.
FORBIDDEN = {
    "bench": ("taskforge.entrypoints.http", "taskforge.entrypoints.cli"),
    "entrypoints": (),
    "sdk": ("taskforge.adapters.redis", "taskforge.adapters.memory"),
}
# True: any; a set: only those packages (the client installs with few dependencies).
THIRD_PARTY_ALLOWED: dict[str, bool | frozenset[str]] = {
    "domain": False,
    "application": False,
    "adapters": True,
    "entrypoints": True,
    "bench": True,
    "client": frozenset({"httpx", "msgspec"}),
    "cli": True,
    # typing_extensions: the type parameter defaults typing has from Python 3.13 (typed tasks)
    "sdk": frozenset({"asyncpg", "msgspec", "psycopg", "typing_extensions"}),
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: use absolute imports")
            found.append((node.lineno, node.module or ""))
    return found


NEWER_STDLIB = frozenset({"annotationlib"})
"""Standard modules of Pythons newer than the oldest TaskForge runs on, imported behind a
version check (`if sys.version_info >= (3, 14):`)."""


def violations(layer: str, root: Path = ROOT) -> list[str]:
    problems = []
    for path in sorted((root / layer).rglob("*.py")):
        for line, module in imports_of(path):
            top = module.split(".")[0]
            where = f"{path.relative_to(root)}:{line} imports {module}"
            if top == "taskforge":
                parts = module.split(".")
                target = parts[1] if len(parts) > 1 else "taskforge"
                forbidden = FORBIDDEN.get(layer, ())
                if target not in ALLOWED[layer] or module.startswith(forbidden):
                    problems.append(where)
            elif top in sys.stdlib_module_names or top in NEWER_STDLIB or top == "__future__":
                continue
            else:
                allowed = THIRD_PARTY_ALLOWED[layer]
                if allowed is not True and (allowed is False or top not in allowed):
                    problems.append(where + " (third-party)")
    return problems


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_point_inward(layer: str) -> None:
    assert violations(layer) == []


def test_the_checker_catches_outward_and_third_party_imports(tmp_path: Path) -> None:
    (tmp_path / "domain").mkdir()
    (tmp_path / "domain" / "bad.py").write_text(
        "import json\nfrom taskforge.adapters.memory.state import InMemoryState\nimport asyncpg\n"
    )
    assert violations("domain", tmp_path) == [
        "domain/bad.py:2 imports taskforge.adapters.memory.state",
        "domain/bad.py:3 imports asyncpg (third-party)",
    ]


def test_the_checker_catches_the_bench_reaching_into_the_http_entrypoint(tmp_path: Path) -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "bad.py").write_text(
        "from taskforge.adapters.postgres.connection import create_pool\n"
        "from taskforge.entrypoints.http.app import create_app\n"
    )
    assert violations("bench", tmp_path) == [
        "bench/bad.py:2 imports taskforge.entrypoints.http.app",
    ]


def test_the_checker_keeps_the_client_and_the_cli_off_the_service(tmp_path: Path) -> None:
    (tmp_path / "client").mkdir()
    (tmp_path / "client" / "bad.py").write_text(
        "import httpx\nfrom taskforge.application.handlers import JobContext\nimport asyncpg\n"
    )
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "bad.py").write_text(
        "from taskforge.client import SyncClient\n"
        "from taskforge.entrypoints.http.app import create_app\n"
        "from taskforge.adapters.postgres.jobs import create_pool\n"
    )
    assert violations("client", tmp_path) == [
        "client/bad.py:2 imports taskforge.application.handlers",
        "client/bad.py:3 imports asyncpg (third-party)",
    ]
    assert violations("cli", tmp_path) == [
        "cli/bad.py:2 imports taskforge.entrypoints.http.app",
        "cli/bad.py:3 imports taskforge.adapters.postgres.jobs",
    ]


def test_every_code_folder_is_linked_into_the_package() -> None:
    """The wheel ships `taskforge/` with its links resolved: a folder without a link there
    would be missing from an installed TaskForge."""
    package = ROOT / "taskforge"
    for layer in (*LAYERS, "migrations"):
        link = package / layer
        assert link.is_symlink(), f"taskforge/{layer} is not a link"
        assert link.resolve() == (ROOT / layer).resolve()


def test_public_module_exposes_the_handler_api() -> None:
    import taskforge

    assert callable(taskforge.handler)
    assert callable(taskforge.register)
    assert taskforge.on_failure == taskforge.default_registry.on_failure
    assert issubclass(taskforge.TerminalError, Exception)


def test_public_module_exposes_the_clients_and_their_errors() -> None:
    import taskforge

    assert taskforge.SyncClient.__name__ == "SyncClient"
    assert taskforge.Client.__name__ == "Client"
    for name in ("JobNotFound", "InvalidTransition", "ValidationError", "Unauthorized",
                 "Unavailable", "JobFailed"):  # fmt: skip
        assert issubclass(getattr(taskforge, name), taskforge.ClientError)


def test_dir_of_the_public_module_lists_every_public_name() -> None:
    """A REPL completes `taskforge.` from dir(): the names load on first use, yet show."""
    import taskforge

    assert set(taskforge.__all__) <= set(dir(taskforge))
    for name in taskforge.__all__:
        assert getattr(taskforge, name) is not None, name


def test_importing_taskforge_does_not_load_the_http_client() -> None:
    """Workers import `taskforge` for `@taskforge.handler`: the clients load on first use."""
    import subprocess

    code = "import sys, taskforge; print('httpx' in sys.modules, 'taskforge.client' in sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert loaded.stdout.split() == ["False", "False"]


def test_the_transactional_enqueue_loads_on_first_use_and_psycopg_only_for_psycopg() -> None:
    import subprocess

    code = (
        "import sys, taskforge\n"
        "print('taskforge.sdk' in sys.modules, 'asyncpg' in sys.modules)\n"
        "taskforge.enqueue\n"
        "print(callable(taskforge.enqueue_many), 'psycopg' in sys.modules)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert loaded.stdout.split() == ["False", "False", "True", "False"]


LONG_MODULE_LINES = 400


def test_a_long_module_says_why_at_its_top() -> None:
    """Past ~400 lines a module is usually two; one that stays whole says why in its
    docstring ("Longer than most modules: ..."), so the next reader need not guess."""
    unexplained = []
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            text = path.read_text()
            if text.count("\n") <= LONG_MODULE_LINES:
                continue
            docstring = ast.get_docstring(ast.parse(text)) or ""
            if "Longer than most modules" not in docstring:
                unexplained.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
    assert unexplained == []


MAX_PORT_METHODS = 8


def test_every_port_is_a_small_role() -> None:
    """A port past ~8 methods is usually two roles; split it rather than grow it."""
    from typing import Protocol

    from taskforge.application import ports

    protocols = [
        value
        for value in vars(ports).values()
        if isinstance(value, type)
        and value.__module__ == ports.__name__
        and Protocol in value.__mro__[1:]
    ]
    assert protocols
    for protocol in protocols:
        methods = [
            name
            for name, member in vars(protocol).items()
            if callable(member) and not name.startswith("_")
        ]
        assert len(methods) <= MAX_PORT_METHODS, f"{protocol.__name__} has {methods}"


def test_loops_and_operator_moves_depend_on_their_role_only() -> None:
    """The worker writes through the lease role, the scheduler through the sweeps, the
    operator's use cases through the operator moves: none can reach the others' writes."""
    from typing import get_type_hints

    from taskforge.application import jobs, ports, scheduler, worker

    store_roles = {ports.JobStore, ports.LeaseStore, ports.Sweeps, ports.OperatorMoves}
    expected = {
        worker.Worker: ports.LeaseStore,
        scheduler.SchedulerTick: ports.Sweeps,
        jobs.CancelJob: ports.OperatorMoves,
        jobs.DeadLetterJob: ports.OperatorMoves,
        jobs.RetryJobNow: ports.OperatorMoves,
        jobs.ReplayDeadLetter: ports.OperatorMoves,
    }
    for use_case, role in expected.items():
        hints = get_type_hints(vars(use_case)["__init__"])
        assert store_roles & set(hints.values()) == {role}, use_case.__name__
