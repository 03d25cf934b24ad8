"""`--handlers` loads the user's own modules from the folder the process starts in.

Each process here is the installed `taskforge` script, started in a temporary project
folder with no PYTHONPATH: only the current directory can provide `myjobs`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import free_port, wait_until_healthy

from .conftest import DEADLINE, TASKFORGE, Stack

pytestmark = pytest.mark.slow

MYJOBS = """\
import taskforge


@taskforge.handler("greet")
async def greet(ctx: taskforge.JobContext) -> None:
    if not ctx.payload.get("name"):
        raise taskforge.TerminalError("greet needs payload.name")


@taskforge.handler("email")
def email(ctx: taskforge.JobContext) -> None:
    raise taskforge.TerminalError("the project's own email handler ran")
"""


BAD_POLICY = """\
import taskforge


@taskforge.task("report", max_attempts=0)
async def report(ctx: taskforge.JobContext) -> None: ...
"""
WRONG_SIGNATURE = """\
import taskforge


@taskforge.task("report")
async def report(payload: dict, ctx: taskforge.JobContext, extra: int) -> None: ...
"""
PERIODIC_TYPO = """\
import taskforge


@taskforge.periodic("* * * * *", max_atempts=3)
async def nightly(ctx: taskforge.JobContext) -> None: ...
"""
TWICE = """\
import taskforge


@taskforge.handler("greet")
async def greet(ctx: taskforge.JobContext) -> None: ...


@taskforge.handler("greet")
async def greet_again(ctx: taskforge.JobContext) -> None: ...
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder holding `myjobs.py`, and a module whose import fails inside it."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "myjobs.py").write_text(MYJOBS)
    (folder / "needs_dependency.py").write_text("import taskforge_no_such_dependency\n")
    (folder / "bad_policy.py").write_text(BAD_POLICY)
    (folder / "twice.py").write_text(TWICE)
    (folder / "wrong_signature.py").write_text(WRONG_SIGNATURE)
    (folder / "periodic_typo.py").write_text(PERIODIC_TYPO)
    (folder / "undecorated.py").write_text("async def greet(ctx) -> None: ...\n")
    return folder


def project_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would find `myjobs` other than the folder."""
    hidden = {"PYTHONPATH", "TASKFORGE_HANDLERS", "WORKER_QUEUES", "API_TOKEN", "HTTP_ADDR"}
    return {**{k: v for k, v in os.environ.items() if k not in hidden}, **extra}


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; each still running at the end is killed by its pid."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def wait_for_state(client: httpx.Client, job_id: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    while True:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["state"] == state:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['state']}, wanted {state}")
        time.sleep(0.05)


def test_dev_runs_a_handlers_module_from_the_current_directory(
    project: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    log = project.parent / "dev.log"
    with log.open("wb") as output:
        dev = subprocess.Popen(
            [TASKFORGE, "dev", "--handlers", "myjobs", "--addr", f"127.0.0.1:{port}"],
            cwd=project,
            env=project_env(QUEUE_NAME="jobs:ready"),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    processes.append(dev)
    url = f"http://127.0.0.1:{port}"
    asyncio.run(wait_until_healthy(url, lambda: dev.poll() is None, log.read_text, DEADLINE))

    with httpx.Client(base_url=url, timeout=10) as client:

        def run(job_type: str, state: str, **payload: Any) -> dict[str, Any]:
            created = client.post("/jobs", json={"jobType": job_type, "payload": payload})
            assert created.status_code == 201, created.text
            return wait_for_state(client, created.json()["id"], state)

        assert run("greet", "SUCCEEDED", name="Ada")["attemptCount"] == 1
        # The demo handlers stay, except where the project registers the same jobType.
        run("noop", "SUCCEEDED")
        own_email = run("email", "DLQ", to="a@b.com")
        assert own_email["lastError"] == "TerminalError: the project's own email handler ran"


async def test_a_worker_runs_a_handlers_module_from_the_current_directory(
    stack: Stack, project: Path
) -> None:
    await stack.start_api()
    stack.start_in(project, "worker", "--handlers", "myjobs", PYTHONPATH="")
    job_id = await stack.enqueue("greet", payload={"name": "Ada"})
    done = await stack.wait_for(job_id, "SUCCEEDED")
    assert done["attempt_count"] == 1


async def test_a_worker_whose_handler_modules_register_nothing_says_so(
    stack: Stack, project: Path
) -> None:
    worker = stack.start_in(project, "worker", "--handlers", "undecorated", PYTHONPATH="")
    deadline = time.monotonic() + DEADLINE
    while "worker serving" not in worker.log.read_text():
        assert worker.popen.poll() is None, worker.tail()
        assert time.monotonic() < deadline, worker.tail()
        await asyncio.sleep(0.05)
    assert (
        "handler module(s) undecorated registered no handler (@taskforge.handler or"
        " @taskforge.task): this worker runs no job" in worker.log.read_text()
    )


async def test_a_worker_given_no_handler_module_says_so(stack: Stack) -> None:
    worker = stack.start("worker")
    await worker.logged("worker serving")
    assert (
        "no handler module given (--handlers or TASKFORGE_HANDLERS; --demo-handlers for the"
        " demo handlers): this worker runs no job; every job it pops is handed back"
        in worker.log.read_text()
    )


@pytest.mark.parametrize(
    ("module", "line"),
    [
        (
            "nosuch",
            "taskforge: cannot import handler module 'nosuch': no module named 'nosuch' in the"
            " current directory ({project}) or the installed packages",
        ),
        (
            "myjobs.missing",
            "taskforge: cannot import handler module 'myjobs.missing': no module named"
            " 'myjobs.missing' in the current directory ({project}) or the installed packages",
        ),
        (
            "myjobs.py",
            "taskforge: cannot import handler module 'myjobs.py': no module named 'myjobs.py'"
            " in the current directory ({project}) or the installed packages (a module's"
            " name, as import takes it: 'myjobs')",
        ),
        (
            "needs_dependency",
            "taskforge: cannot import handler module 'needs_dependency': it imports"
            " 'taskforge_no_such_dependency', which is not installed",
        ),
        (
            "bad_policy",
            "taskforge: handler module 'bad_policy', bad_policy.py:4: max_attempts: must be"
            " between 1 and 1000",
        ),
        (
            "wrong_signature",
            "taskforge: handler module 'wrong_signature', wrong_signature.py:4: report must"
            " take (payload), (payload, ctx), (ctx) or (), not 3 parameters",
        ),
        (
            "periodic_typo",
            "taskforge: handler module 'periodic_typo', periodic_typo.py:4: unknown schedule"
            " option(s): max_atempts",
        ),
        (
            "twice",
            "taskforge: handler module 'twice', twice.py:8: a handler for jobType 'greet' is"
            " already registered",
        ),
    ],
)
@pytest.mark.parametrize("role", ["dev", "worker"])
def test_a_handlers_module_that_cannot_be_imported_or_declares_wrongly_is_one_line_and_exit_2(
    project: Path, role: str, module: str, line: str
) -> None:
    # The worker's Postgres is never reached: it stops at the import.
    env = project_env(POSTGRES_DSN="postgresql://nobody@127.0.0.1:9/none")
    completed = subprocess.run(
        [TASKFORGE, role, "--handlers", module],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert (completed.returncode, completed.stdout) == (2, "")
    assert completed.stderr == line.format(project=project) + "\n"
