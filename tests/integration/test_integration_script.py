"""`bash scripts/integration-test.sh`, the spec's end-to-end command, run as a user runs it.

Here it runs in local mode against this test run's Postgres server and Redis: the script
creates and drops its own database and deletes its own Redis keys.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "integration-test.sh"
SUMMARY = re.compile(r"^integration: (?P<passed>\d+) passed, (?P<failed>\d+) failed$", re.M)
# A passing run takes ~15 s; the margin is for a machine busy with other test runs.
TIMEOUT = 240.0
# Variables the script reads before its own defaults; the caller's must not leak in.
SERVICE_VARIABLES = (
    "POSTGRES_DSN",
    "TASKFORGE_TEST_POSTGRES_DSN",
    "REDIS_ADDR",
    "REDIS_DB",
    "REDIS_PASSWORD",
    "TASKFORGE_TEST_REDIS_URL",
    "TASKFORGE_BIN",
    "TASKFORGE_IT_MODE",
)


def run_script(**env: str) -> tuple[int, str]:
    """Run the script in local mode with the taskforge of this interpreter; on a timeout it
    gets SIGTERM first, so that its trap still stops its processes and drops its database."""
    base = {key: value for key, value in os.environ.items() if key not in SERVICE_VARIABLES}
    taskforge = Path(sys.executable).parent / "taskforge"
    if taskforge.exists():
        base["TASKFORGE_BIN"] = str(taskforge)
    process = subprocess.Popen(
        ["bash", str(SCRIPT)],
        cwd=ROOT,
        env={**base, "TASKFORGE_IT_MODE": "local", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        pytest.fail(f"the script ran longer than {TIMEOUT:g} s:\n{output}")
    return process.returncode, output


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port that refuses connections: bound by this test, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def test_integration_script_passes_every_step_against_postgres_and_redis(
    postgres_admin_dsn: str, redis_url: str
) -> None:
    code, output = run_script(
        TASKFORGE_TEST_POSTGRES_DSN=postgres_admin_dsn, TASKFORGE_TEST_REDIS_URL=redis_url
    )

    summary = SUMMARY.search(output)
    assert code == 0, f"exit status {code}:\n{output}"
    assert summary is not None, f"no summary line:\n{output}"
    assert summary["failed"] == "0", output
    assert int(summary["passed"]) == output.count("\nPASS  ") >= 9, output
    assert "FAIL" not in output, output


def test_integration_script_fails_when_the_services_are_unreachable(closed_port: int) -> None:
    code, output = run_script(
        TASKFORGE_TEST_POSTGRES_DSN=f"postgresql://postgres@127.0.0.1:{closed_port}/postgres",
        TASKFORGE_TEST_REDIS_URL=f"redis://127.0.0.1:{closed_port}/0",
    )

    summary = SUMMARY.search(output)
    assert code != 0, output
    assert "FAIL  setup: Redis at 127.0.0.1:" in output, output
    assert summary is not None and summary["passed"] == "0", output
    assert "PASS" not in output, output
