"""`taskforge-cli` against a real `taskforge dev` process (API + worker + scheduler in memory).

The bulk runs the CLI in this process (`run` with captured output); exit codes, the absence
of tracebacks and the spec's examples run it as a separate process, as a shell would. Only
the dev server's default queue has a worker, so jobs enqueued on any other queue stay
PENDING until a test moves them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskforge.cli.app import run
from taskforge.cli.render import timestamp
from taskforge.client import Response as ApiResponse
from taskforge.client import Unavailable
from taskforge.client.sync_client import RawResponses as TaskForgeClient
from tests.support import DevServer

pytestmark = pytest.mark.slow

CLI = "from taskforge.cli import main; main()"
STATE_DEADLINE = 10.0
UUID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
COMMANDS = [
    "enqueue",
    "status",
    "cancel",
    "retry",
    "move-to-dlq",
    "list",
    "dlq-list",
    "dlq-show",
    "dlq-replay",
    "stats",
    "queues",
    "workers",
    "health",
]
QUEUE_COMMANDS = ["queues list", "queues pause", "queues resume"]
SCHEDULE_COMMANDS = [
    "schedules list",
    "schedules add",
    "schedules rm",
    "schedules pause",
    "schedules resume",
]
# Variables that would make rich treat captured output as a terminal.
TERMINAL_OVERRIDES = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines()]


Cli = Callable[..., Outcome]


@pytest.fixture(scope="session")
def api(dev_server: DevServer) -> Iterator[httpx.Client]:
    """Direct API access, to arrange jobs and to check what the CLI did."""
    headers = {"Authorization": f"Bearer {dev_server.token}"}
    with httpx.Client(base_url=dev_server.url, headers=headers, timeout=5.0) as client:
        yield client


@pytest.fixture
def cli(
    dev_server: DevServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Cli:
    """The CLI in this process, pointed at the dev server, output captured (not a terminal),
    standard input empty and not a terminal either."""
    for name in TERMINAL_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    capsys.readouterr()

    def invoke(*args: str, api_url: str = dev_server.url) -> Outcome:
        code = run(["--api-url", api_url, "--token", dev_server.token, *args])
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return invoke


def run_process(*args: str, env: dict[str, str] | None = None, stdin: Any = None) -> Outcome:
    """The CLI as its own process, the way a shell runs it (standard input: `stdin`, else
    none at all)."""
    environment = {k: v for k, v in os.environ.items() if k not in TERMINAL_OVERRIDES}
    environment.update(env or {})
    completed = subprocess.run(
        [sys.executable, "-c", CLI, *args],
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    return Outcome(completed.returncode, completed.stdout, completed.stderr)


def server_env(server: DevServer) -> dict[str, str]:
    return {"TASKFORGE_API_URL": server.url, "TASKFORGE_API_TOKEN": server.token}


def idle_queue() -> str:
    """A queue no worker serves: its jobs stay where the test puts them."""
    return f"cli-{uuid.uuid4().hex[:10]}"


def enqueue(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/jobs", json={"jobType": "noop", **body})
    response.raise_for_status()
    job: dict[str, Any] = response.json()
    return job


def wait_for_state(api: httpx.Client, job_id: str, *states: str) -> dict[str, Any]:
    deadline = time.monotonic() + STATE_DEADLINE
    while True:
        job: dict[str, Any] = api.get(f"/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {job['state']}, expected one of {states}")
        time.sleep(0.02)


def dead_letter(api: httpx.Client, queue: str, reason: str = "poison message") -> str:
    job = enqueue(api, queue=queue)
    api.post(f"/jobs/{job['id']}/dlq", json={"reason": reason}).raise_for_status()
    return str(job["id"])


def field(output: str, label: str) -> str:
    """The value on the `label  value` line of a plain job or dead-letter view."""
    match = re.search(rf"^{re.escape(label)}\s{{2,}}(.*)$", output, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{output}"
    return match.group(1)


def table_cell(output: str, first: str, column: str) -> str:
    """The value under `column` on the row starting with `first` of a plain table (columns
    are left-aligned under their headers)."""
    header, *rows = output.splitlines()
    start = header.index(column)
    row = next((line for line in rows if line.startswith(first)), None)
    assert row is not None, f"no row {first!r} in:\n{output}"
    return row[start:].split()[0]


def test_the_spec_examples_run_verbatim(dev_server: DevServer, api: httpx.Client) -> None:
    env = server_env(dev_server)
    created = run_process(
        "enqueue",
        "--job-type",
        "email",
        "--idempotency-key",
        "abc123",
        "--payload",
        '{"to":"a@b.com"}',
        env=env,
    )
    assert (created.exit_code, created.err) == (0, "")
    match = re.match(
        rf"enqueued job ({UUID_PATTERN}) \(email on jobs:ready, PENDING\)$", created.out
    )
    assert match, created.out
    job_id = match.group(1)
    wait_for_state(api, job_id, "SUCCEEDED")

    status = run_process("status", "--id", job_id, env=env)
    assert (status.exit_code, status.err) == (0, "")
    assert field(status.out, "id") == job_id
    assert field(status.out, "state") == "SUCCEEDED"
    assert field(status.out, "payload") == '{"to":"a@b.com"}'

    pending = enqueue(api, queue=idle_queue())
    cancelled = run_process("cancel", "--id", pending["id"], "--reason", "user requested", env=env)
    assert (cancelled.exit_code, cancelled.err) == (0, "")
    assert cancelled.out == f"cancelled job {pending['id']}: now CANCELLED\n"
    assert api.get(f"/jobs/{pending['id']}").json()["reason"] == "user requested"

    dead = dead_letter(api, idle_queue())
    listed = run_process("dlq-list", "--limit", "20", env=env)
    assert (listed.exit_code, listed.err) == (0, "")
    assert listed.out.splitlines()[0].split() == [
        "JOB", "ID", "QUEUE", "TYPE", "ATTEMPTS", "FAILED", "AT", "REASON", "LAST", "ERROR"
    ]  # fmt: skip
    assert any(
        line.startswith(dead) and "poison message" in line for line in listed.out.splitlines()
    )

    replayed = run_process("dlq-replay", "--id", dead, env=env)
    assert (replayed.exit_code, replayed.err) == (0, "")
    assert replayed.out == f"replayed job {dead}: now PENDING\n"
    assert api.get(f"/dlq/{dead}").status_code == 404


ENQUEUE_EMAIL_WITH_PAYLOAD = ("enqueue", "--job-type", "email", "--payload")
ADD_SCHEDULE = ("schedules", "add", "n", "--cron", "@daily", "--job-type", "noop")
ENQUEUE_NOOP = ("enqueue", "--job-type", "noop")


@dataclass(frozen=True)
class ErrorCase:
    """`args` and `stderr` receive the ids the `error_ids` fixture arranged."""

    args: Callable[[dict[str, str]], list[str]]
    exit_code: int
    stderr: Callable[[dict[str, str]], str]


ERROR_CASES = {
    "an unknown job is not found (3)": ErrorCase(
        lambda ids: ["status", "--id", ids["unknown"]],
        3,
        lambda ids: f"error: not_found: job {ids['unknown']} not found\n",
    ),
    "cancelling a finished job is a conflict (4)": ErrorCase(
        lambda ids: ["cancel", "--id", ids["succeeded"]],
        4,
        lambda ids: f"error: invalid_state_transition: job {ids['succeeded']} is SUCCEEDED",
    ),
    "an invalid field is another API error (5)": ErrorCase(
        lambda ids: ["enqueue", "--job-type", "noop", "--max-attempts", "0"],
        5,
        lambda ids: "error: validation_error: maxAttempts",
    ),
    "a priority out of range is another API error (5)": ErrorCase(
        lambda ids: ["enqueue", "--job-type", "noop", "--priority", "10"],
        5,
        lambda ids: "error: validation_error: priority",
    ),
    "a wrong token is another API error (5)": ErrorCase(
        lambda ids: ["--token", "wrong", "stats"],
        5,
        lambda ids: "error: unauthorized: missing or invalid bearer token\n",
    ),
    "--interval without --watch is a usage error, found before any request (2)": ErrorCase(
        lambda ids: [
            "--api-url",
            ids["closed"],
            "status",
            "--id",
            ids["unknown"],
            "--interval",
            "1",
        ],
        2,
        lambda ids: "error: usage: --interval only applies with --watch\n",
    ),
    "invalid --payload JSON is a usage error, found before any request (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], *ENQUEUE_EMAIL_WITH_PAYLOAD, '{"to":'],
        2,
        lambda ids: "error: usage: --payload: invalid JSON: Expecting value",
    ),
    "a --payload number JSON has no room for is a usage error (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], *ENQUEUE_EMAIL_WITH_PAYLOAD, '{"a": NaN}'],
        2,
        lambda ids: "error: usage: --payload: invalid JSON: NaN is not a JSON number\n",
    ),
    "a --payload number out of range is a usage error (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], *ENQUEUE_EMAIL_WITH_PAYLOAD, '{"a": 1e400}'],
        2,
        lambda ids: "error: usage: --payload: invalid JSON: 1e400 is out of range\n",
    ),
    "a --payload string with a lone surrogate is a usage error (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], *ENQUEUE_EMAIL_WITH_PAYLOAD, '{"a": "\\ud800"}'],
        2,
        lambda ids: "error: usage: --payload: invalid JSON: 'utf-8' codec can't encode",
    ),
    "a --payload nested too deeply is a usage error (2)": ErrorCase(
        lambda ids: [
            "--api-url",
            ids["closed"],
            *ENQUEUE_EMAIL_WITH_PAYLOAD,
            "[" * 20_000 + "]" * 20_000,
        ],
        2,
        lambda ids: "error: usage: --payload: invalid JSON: nested too deeply\n",
    ),
    "a --payload holding NUL is a usage error, found before any request (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], *ENQUEUE_EMAIL_WITH_PAYLOAD, '{"a": "\\u0000"}'],
        2,
        lambda ids: "error: validation_error: payload: must not contain NUL characters",
    ),
    "a --payload that is not an object is a usage error (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], *ENQUEUE_EMAIL_WITH_PAYLOAD, "[1, 2]"],
        2,
        lambda ids: "error: usage: --payload must be a JSON object, got list\n",
    ),
    "a policy flag of nan is a usage error, found before any request (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], *ENQUEUE_NOOP, "--initial-delay", "nan"],
        2,
        lambda ids: (
            'error: usage: Invalid value "nan" for --initial-delay. Must be a finite number.'
            " (see --help)\n"
        ),
    ),
    "a --delay of nan is not a finite number, as inf is not (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], *ENQUEUE_NOOP, "--delay", "nan"],
        2,
        lambda ids: 'error: usage: Invalid value "nan" for --delay. Must be a finite number.',
    ),
    "a --delay of inf is not a finite number, as nan is not (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], *ENQUEUE_NOOP, "--delay", "inf"],
        2,
        lambda ids: 'error: usage: Invalid value "inf" for --delay. Must be a finite number.',
    ),
    "an answer timeout of nan is not a finite number (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], "--timeout", "nan", "stats"],
        2,
        lambda ids: 'error: usage: Invalid value "nan" for --timeout. Must be a finite number.',
    ),
    "a schedule's policy flag of inf is a usage error, found before any request (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], *ADD_SCHEDULE, "--max-delay", "inf"],
        2,
        lambda ids: 'error: usage: Invalid value "inf" for --max-delay. Must be a finite number.',
    ),
    "an answer timeout of inf is a usage error, found before any request (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], "--timeout", "inf", "stats"],
        2,
        lambda ids: 'error: usage: Invalid value "inf" for --timeout. Must be a finite number.',
    ),
    "a watch interval of inf is a usage error, found before any request (2)": ErrorCase(
        lambda ids: [
            "--api-url",
            ids["closed"],
            "status",
            ids["unknown"],
            "--watch",
            "--interval",
            "inf",
        ],
        2,
        lambda ids: 'error: usage: Invalid value "inf" for --interval. Must be a finite number.',
    ),
    "a page size that is not a whole number is a usage error, not rounded (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], "list", "--limit", "1.5"],
        2,
        lambda ids: "error: usage: Invalid value for --limit: must be a whole number, not '1.5'",
    ),
    "a priority in another base is a usage error, found before any request (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], *ENQUEUE_NOOP, "--priority", "0x3"],
        2,
        lambda ids: "error: usage: Invalid value for --priority: must be a whole number, not '0x3'",
    ),
    "a schedule's --max-attempts of 2.5 is a usage error, not rounded (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], *ADD_SCHEDULE, "--max-attempts", "2.5"],
        2,
        lambda ids: (
            "error: usage: Invalid value for --max-attempts: must be a whole number, not '2.5'"
        ),
    ),
    "an unknown --status is a usage error, found before any request (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], "list", "--status", "bogus"],
        2,
        lambda ids: (
            "error: usage: --status: unknown state 'bogus'; allowed: PENDING, RUNNING,"
            " SUCCEEDED, FAILED, DLQ, CANCELLED\n"
        ),
    ),
    "dlq-replay --all off a terminal without --yes is refused before any request (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], "dlq-replay", "--all"],
        2,
        lambda ids: (
            "error: usage: dlq-replay --all asks for confirmation and standard input is not a"
            " terminal: add --yes to replay, or --dry-run to list what it would replay\n"
        ),
    ),
    "dlq-replay --all of a queue name no queue can have is refused before any request (2)": (
        ErrorCase(
            lambda ids: ["--api-url", ids["closed"], "dlq-replay", "--all", "--queue", "bad q"],
            2,
            lambda ids: (
                "error: usage: --queue 'bad q': must be 1-128 characters of letters, digits"
                " and _ - . :\n"
            ),
        )
    ),
    "an empty queue name is a usage error, found before any request (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], "queues", "pause", ""],
        2,
        lambda ids: (
            "error: validation_error: queue: must be 1-128 characters of letters, digits and"
            " _ - . :\n"
        ),
    ),
    "an --api-url without a scheme is a usage error (2)": ErrorCase(
        lambda ids: ["--api-url", "localhost:18086", "stats"],
        2,
        lambda ids: (
            'error: usage: Invalid value "localhost:18086" for --api-url.'
            " 'localhost:18086' is not an http:// or https:// URL (see --help)\n"
        ),
    ),
    "an --api-url with a query is a usage error (2)": ErrorCase(
        lambda ids: ["--api-url", "http://127.0.0.1:8080?tenant=a", "stats"],
        2,
        lambda ids: (
            'error: usage: Invalid value "http://127.0.0.1:8080?tenant=a" for --api-url.'
            " 'http://127.0.0.1:8080?tenant=a' has a query: the API's paths would be added to it"
        ),
    ),
    "an --api-url with a port that is no number is a usage error (2)": ErrorCase(
        lambda ids: ["--api-url", "http://127.0.0.1:eighty", "stats"],
        2,
        lambda ids: (
            'error: usage: Invalid value "http://127.0.0.1:eighty" for --api-url.'
            " 'http://127.0.0.1:eighty' is not a valid URL: Invalid port: 'eighty' (see --help)\n"
        ),
    ),
    "an --api-url without a host is a usage error (2)": ErrorCase(
        lambda ids: ["--api-url", "http://", "stats"],
        2,
        lambda ids: (
            "error: usage: Invalid value \"http://\" for --api-url. 'http://' names no host"
        ),
    ),
    "a token with a line break is a usage error that does not show it (2)": ErrorCase(
        lambda ids: ["--token", "s3cret-token\n", "stats"],
        2,
        lambda ids: (
            "error: usage: --token (or TASKFORGE_API_TOKEN) holds a character a request header"
            " cannot carry (a line break or another control character, or one outside ASCII)\n"
        ),
    ),
    "a token outside ASCII is a usage error (2)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], "--token", "s3cret-tökén", "stats"],
        2,
        lambda ids: "error: usage: --token (or TASKFORGE_API_TOKEN) holds a character",
    ),
    "an unknown flag is a usage error (2)": ErrorCase(
        lambda ids: ["stats", "--verbose"],
        2,
        lambda ids: "error: usage: Unknown option: --verbose",
    ),
    "an id that is not a UUID is a usage error (2)": ErrorCase(
        lambda ids: ["status", "--id", "42"],
        2,
        lambda ids: 'error: usage: Invalid value for --id: unable to convert "42"',
    ),
    "a refused connection names the URL it tried (6)": ErrorCase(
        lambda ids: ["--api-url", ids["closed"], "stats"],
        6,
        lambda ids: (
            f"error: connection_failed: cannot connect to {ids['closed']}: connection refused\n"
        ),
    ),
}


@pytest.fixture(scope="module")
def error_ids(api: httpx.Client) -> Iterator[dict[str, str]]:
    succeeded = enqueue(api)
    wait_for_state(api, succeeded["id"], "SUCCEEDED")
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{bound_not_listening.getsockname()[1]}"
        yield {"succeeded": succeeded["id"], "unknown": str(uuid.uuid4()), "closed": closed}


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_each_failure_is_one_line_on_stderr_with_its_exit_code(
    case: ErrorCase, dev_server: DevServer, error_ids: dict[str, str]
) -> None:
    outcome = run_process(*case.args(error_ids), env=server_env(dev_server))
    assert outcome.exit_code == case.exit_code, outcome.err
    assert outcome.out == ""
    assert outcome.err.startswith(case.stderr(error_ids)), outcome.err
    assert outcome.err.count("\n") == 1
    assert "Traceback" not in outcome.err


def test_json_output_is_the_apis_json_unchanged(cli: Cli, api: httpx.Client) -> None:
    queue = idle_queue()
    created = cli("enqueue", "--job-type", "noop", "--queue", queue, "--json")
    job = created.json()
    assert (created.exit_code, job["queue"], job["state"]) == (0, queue, "PENDING")

    shown = cli("status", "--id", job["id"], "--json")
    assert shown.out == api.get(f"/jobs/{job['id']}").text + "\n"

    listed = cli("list", "--queue", queue, "--json")
    assert listed.out == api.get(f"/queues/{queue}/jobs").text + "\n"

    dead = dead_letter(api, queue)
    entry = cli("dlq-show", "--id", dead, "--json")
    assert entry.out == api.get(f"/dlq/{dead}").text + "\n"
    assert cli("dlq-list", "--limit", "5", "--json").json()["limit"] == 5
    assert set(cli("stats", "--json").json()) == {"queues", "totals", "total", "dlq"}
    health = cli("health", "--json").json()
    assert health == {"healthz": api.get("/healthz").json(), "readyz": api.get("/readyz").json()}


def test_reusing_an_idempotency_key_returns_the_existing_job(cli: Cli) -> None:
    key = f"key-{uuid.uuid4().hex}"
    first = cli("enqueue", "--job-type", "noop", "--queue", idle_queue(), "--idempotency-key", key)
    job_id = re.search(UUID_PATTERN, first.out)
    assert job_id
    assert first.out.startswith("enqueued job")
    again = cli("enqueue", "--job-type", "noop", "--idempotency-key", key)
    assert again.exit_code == 0
    assert again.out.startswith(f"job {job_id.group()} already exists for idempotency key {key}")


def test_the_answer_timeout_is_global_after_the_command_too(cli: Cli) -> None:
    # `--timeout` is the seconds to wait for each answer wherever it is given; the job's own
    # limit is `--job-timeout`.
    job = cli("enqueue", "--job-type", "noop", "--queue", idle_queue(), "--timeout", "7", "--json")
    assert job.json()["timeout"] != 7.0


def test_enqueue_sends_every_policy_flag(cli: Cli) -> None:
    job = cli(
        "enqueue", "--job-type", "noop", "--queue", idle_queue(), "--delay", "60",
        "--max-attempts", "7", "--initial-delay", "2", "--backoff", "3", "--max-delay", "90",
        "--jitter", "--visibility-timeout", "45", "--job-timeout", "12.5", "--priority", "1",
        "--json",
    ).json()  # fmt: skip
    policy = {k: job[k] for k in ("maxAttempts", "initialDelay", "backoff", "maxDelay", "jitter")}
    assert policy == {
        "maxAttempts": 7, "initialDelay": 2.0, "backoff": 3.0, "maxDelay": 90.0, "jitter": True
    }  # fmt: skip
    assert (job["visibilityTimeout"], job["timeout"], job["priority"]) == (45.0, 12.5, 1)
    assert job["nextRunAt"] > job["createdAt"]


def test_run_at_schedules_the_job_and_excludes_delay(cli: Cli) -> None:
    queue = idle_queue()
    run_at = "2099-01-02T03:04:05"
    job = cli(
        "enqueue", "--job-type", "noop", "--queue", queue, "--run-at", run_at, "--json"
    ).json()
    assert job["nextRunAt"].startswith(run_at)
    both = cli("enqueue", "--job-type", "noop", "--delay", "1", "--run-at", "2099-01-01T00:00:00")
    assert (both.exit_code, both.err) == (2, "error: usage: give --delay or --run-at, not both\n")


def test_payload_can_come_from_a_file(cli: Cli, tmp_path: Path) -> None:
    payload = tmp_path / "payload.json"
    payload.write_text('{"to": "ops@example.com", "tags": ["a", "b"]}')
    job = cli("enqueue", "--job-type", "email", "--queue", idle_queue(),
              "--payload", f"@{payload}", "--json").json()  # fmt: skip
    assert job["payload"] == {"to": "ops@example.com", "tags": ["a", "b"]}

    missing = cli("enqueue", "--job-type", "email", "--payload", f"@{tmp_path / 'nope.json'}")
    assert missing.exit_code == 2
    assert missing.err.startswith("error: usage: --payload: cannot read ")
    payload.write_text("{not json")
    broken = cli("enqueue", "--job-type", "email", "--payload", f"@{payload}")
    assert broken.exit_code == 2
    assert broken.err.startswith(f"error: usage: --payload: invalid JSON in {payload}: ")


def test_payload_from_a_closed_standard_input_is_a_usage_error(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", None)  # what Python makes of `taskforge-cli ... <&-`
    closed = cli("enqueue", "--job-type", "email", "--payload", "@-")
    assert (closed.exit_code, closed.out) == (2, "")
    assert closed.err == "error: usage: --payload: cannot read standard input: it is closed\n"


def test_status_shows_policy_attempts_timings_and_the_last_error(
    cli: Cli, api: httpx.Client
) -> None:
    job = enqueue(api, jobType="fail", payload={"terminal": True, "message": "card declined"})
    wait_for_state(api, job["id"], "DLQ")
    shown = cli("status", "--id", job["id"])
    assert shown.exit_code == 0
    assert field(shown.out, "state") == "DLQ"
    assert field(shown.out, "attempts") == "1 of 3"
    assert field(shown.out, "priority") == "5"
    assert field(shown.out, "policy") == (
        "backoff 1s x2 up to 5m00s, no jitter; visibility timeout 30s"
    )
    assert re.fullmatch(r"\S+Z  \(\S+ after the job was created\)", field(shown.out, "started"))
    # Dead-lettered: finishedAt - startedAt is not always a run time, so it is not called one.
    assert re.fullmatch(r"\S+Z  \(\S+ after it last started\)", field(shown.out, "finished"))
    assert field(shown.out, "reason") == "terminal error"
    assert field(shown.out, "last error") == "TerminalError: card declined"
    assert field(shown.out, "traceback") == "Traceback (most recent call last):"
    assert "in fail\n" in shown.out  # the demo handler's frame
    assert shown.out.rstrip().endswith("TerminalError: card declined")


def test_dlq_show_shows_the_traceback_of_the_last_failed_attempt(
    cli: Cli, api: httpx.Client
) -> None:
    job = enqueue(api, jobType="fail", payload={"terminal": True, "message": "card declined"})
    wait_for_state(api, job["id"], "DLQ")

    shown = cli("dlq-show", "--id", job["id"])

    assert shown.exit_code == 0
    assert field(shown.out, "last error") == "TerminalError: card declined"
    assert field(shown.out, "job created") == timestamp(job["createdAt"])  # not the entry's
    assert field(shown.out, "traceback") == "Traceback (most recent call last):"
    assert shown.out.rstrip().endswith("TerminalError: card declined")
    moved = dead_letter(api, idle_queue())  # moved by an operator: no attempt, no traceback
    assert "traceback" not in cli("dlq-show", "--id", moved).out


def test_dlq_show_shows_the_dead_letter_when_the_jobs_errors_cannot_be_read(
    cli: Cli, api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = dead_letter(api, idle_queue(), reason="bad input")

    def unavailable(client: TaskForgeClient, job_id: uuid.UUID) -> ApiResponse:
        raise Unavailable("unavailable", "the API is restarting")

    monkeypatch.setattr(TaskForgeClient, "get", unavailable)
    shown = cli("dlq-show", "--id", job_id)

    assert (shown.exit_code, field(shown.out, "reason")) == (0, "bad input")
    assert "traceback" not in shown.out and "job created" not in shown.out


def test_status_and_the_other_job_commands_take_the_id_as_an_argument(
    cli: Cli, api: httpx.Client
) -> None:
    job_id = enqueue(api, queue=idle_queue())["id"]
    shown = cli("status", job_id)
    assert (shown.exit_code, field(shown.out, "id")) == (0, job_id)
    assert shown.out == cli("status", "--id", job_id).out
    assert cli("cancel", job_id).out == f"cancelled job {job_id}: now CANCELLED\n"
    assert cli("retry", job_id).out == f"retried job {job_id}: now PENDING\n"
    assert cli("move-to-dlq", job_id).out == f"moved job {job_id} to the DLQ: now DLQ\n"
    assert field(cli("dlq-show", job_id).out, "job id") == job_id
    assert cli("dlq-replay", job_id).out == f"replayed job {job_id}: now PENDING\n"


@pytest.mark.parametrize(
    ("max_attempts", "attempts"),
    [
        (2, "2 of 2 (1 automatic retry after a failure)"),
        (3, "3 of 3 (2 automatic retries after failures)"),
    ],
)
def test_status_says_how_many_attempts_were_automatic_retries(
    cli: Cli, api: httpx.Client, max_attempts: int, attempts: str
) -> None:
    job = enqueue(api, jobType="fail", maxAttempts=max_attempts, initialDelay=0.01)
    wait_for_state(api, job["id"], "DLQ")
    assert field(cli("status", job["id"]).out, "attempts") == attempts


@contextlib.contextmanager
def serve_answer(body: bytes) -> Iterator[str]:
    """The URL of a stand-in API that answers every GET with `body` (200, JSON) until the
    block ends."""
    handler = type("Answer", (_FixedAnswer,), {"status": 200, "body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_status_shows_the_result_whole_in_plain_output_and_cut_on_a_terminal(
    cli: Cli, api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = api.get(f"/jobs/{enqueue(api)['id']}").json()
    job.update(state="SUCCEEDED", result={"note": "é" + "x" * 300, "rows": list(range(30))})
    body = json.dumps(job).encode()
    with serve_answer(body) as api_url:
        plain = cli("status", job["id"], api_url=api_url)
        as_json = cli("status", job["id"], "--json", api_url=api_url)
        monkeypatch.setenv("TTY_COMPATIBLE", "1")
        monkeypatch.setenv("COLUMNS", "400")
        terminal = cli("status", job["id"], api_url=api_url)

    assert json.loads(field(plain.out, "result")) == job["result"]  # one line, all of it
    assert as_json.json() == json.loads(body)
    # Indented, the first 20 lines, each at most 200 characters, and what was left out.
    assert '"rows": [' in terminal.out
    assert re.search(r"\s3,\s", terminal.out)  # rows[3], on a line of its own
    assert not re.search(r"\s(1[7-9]|2[0-9]),?\s", terminal.out)  # line 20 shows rows[16]
    assert "x" * 150 in terminal.out
    assert "x" * 300 not in terminal.out
    assert "… 15 more lines (--json shows the whole result)" in terminal.out


def test_status_shows_the_result_as_its_exact_json(
    cli: Cli, api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shown after its control characters were written out for the terminal, a result
    # holding ESC read as one holding a backslash (`"\\x1b"`), on one line or indented.
    job = api.get(f"/jobs/{enqueue(api)['id']}").json()
    job.update(state="SUCCEEDED", result={"note": "\x1b[31m\x9b2J", "path": "C:\\x1b"})
    with serve_answer(json.dumps(job).encode()) as api_url:
        plain = cli("status", job["id"], api_url=api_url)
        monkeypatch.setenv("TTY_COMPATIBLE", "1")
        monkeypatch.setenv("COLUMNS", "200")
        terminal = cli("status", job["id"], api_url=api_url)

    shown = field(plain.out, "result")
    assert shown == '{"note":"\\u001b[31m\\u009b2J","path":"C:\\\\x1b"}'
    assert json.loads(shown) == job["result"]
    assert '"note": "\\u001b[31m\\u009b2J",' in terminal.out
    assert "\x9b" not in terminal.out


def test_status_shows_no_result_line_for_a_job_without_one(cli: Cli, api: httpx.Client) -> None:
    job = enqueue(api)
    wait_for_state(api, job["id"], "SUCCEEDED")

    shown = cli("status", job["id"])

    assert api.get(f"/jobs/{job['id']}").json()["result"] is None
    assert "result" not in shown.out


def test_on_a_narrow_terminal_tables_keep_every_column(
    cli: Cli, api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = f"card {uuid.uuid4().hex} declined by the issuing bank"
    job = enqueue(api, jobType="fail", maxAttempts=1, payload={"message": message})
    wait_for_state(api, job["id"], "DLQ")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "60")
    for args, headers in (
        (["dlq-list", "--limit", "1"], ["JOB ID", "FAILED AT", "REASON", "LAST ERROR"]),
        (["list", "--status", "dlq", "--limit", "1"], ["ID", "CREATED", "LAST ERROR"]),
    ):
        outcome = cli(*args)
        assert outcome.exit_code == 0
        shown = re.sub(r"\x1b\[[0-9;]*m", "", outcome.out)
        assert max(len(line.rstrip()) for line in shown.splitlines()) <= 60
        assert all(header in shown for header in headers), shown
        assert job["id"] in shown, "ids are never cut"
        # A long value wraps onto more lines; its words are all there.
        assert f"RuntimeError: {message}" in " ".join(shown.split()), shown


@pytest.mark.parametrize("command", ["status", "dlq-show"])
def test_on_a_narrow_terminal_a_jobs_panel_folds_its_id_and_times_never_cuts_them(
    cli: Cli, api: httpx.Client, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    job_id = dead_letter(api, idle_queue())
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "40")
    outcome = cli(command, job_id)
    assert outcome.exit_code == 0, outcome.err
    shown = re.sub(r"\x1b\[[0-9;]*m", "", outcome.out)
    assert max(len(line.rstrip()) for line in shown.splitlines()) <= 40
    # The panel's title may be cut; no value in it is.
    values = "\n".join(line for line in shown.splitlines()[1:-1])
    assert "…" not in values, shown
    unboxed = re.sub(r"[\s│]", "", values)
    assert job_id in unboxed, shown
    assert re.search(r"created\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", unboxed), shown


COUNTS = {
    "PENDING": 1234567,
    "RUNNING": 64,
    "SUCCEEDED": 98765432,
    "FAILED": 12,
    "DLQ": 3456,
    "CANCELLED": 7,
}
LONG_QUEUE = "emails-transactional-eu-west"
NARROW_ANSWERS = {
    "stats": {
        "queues": [{"queue": LONG_QUEUE, "depth": 1234567, "states": COUNTS, "total": 99999999}],
        "totals": COUNTS,
        "total": 99999999,
        "dlq": 3456,
    },
    "queues": {
        "items": [
            {
                "queue": LONG_QUEUE,
                "paused": True,
                "pausedAt": "2026-12-07T03:29:37Z",
                "states": COUNTS,
                "total": 99999999,
            },
        ],
    },
    "workers": {
        "items": [
            {
                "workerId": "worker-host-eu-west-1a:4242:51d25ea5",
                "queues": [LONG_QUEUE],
                "jobTypes": ["email", "resize-image"],
                "concurrency": 128,
                "busySlots": 100,
                "startedAt": "2026-12-07T03:29:22Z",
                "heartbeatAt": "2026-12-07T03:29:27Z",
            },
        ],
    },
    "schedules": {
        "items": [
            {
                "name": "nightly-report-europe",
                "cron": "30 2 * * MON-FRI",
                "timezone": "America/Argentina/Buenos_Aires",
                "jobType": "report",
                "queue": LONG_QUEUE,
                "priority": 5,
                "source": "api",
                "paused": False,
                "nextFireAt": "2026-12-08T05:30:00Z",
                "previousFireAt": "2026-12-07T05:30:00Z",
            },
        ],
    },
}


@pytest.mark.parametrize(
    ("command", "answer", "whole"),
    [
        (["stats"], "stats", [LONG_QUEUE, "1234567", "98765432", "3456", "99999999"]),
        (["queues", "list"], "queues", [LONG_QUEUE, "since 2026-12-07T03:29:37Z", "99999999"]),
        (["workers"], "workers", ["worker-host-eu-west-1a:4242:51d25ea5", "100/128",
                                  "2026-12-07T03:29:27Z"]),
        (["schedules", "list"], "schedules", ["America/Argentina/Buenos_Aires",
                                              "30 2 * * MON-FRI", "2026-12-08T05:30:00Z"]),
    ],
)  # fmt: skip
def test_on_a_narrow_terminal_counts_names_and_times_are_never_cut(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, command: list[str], answer: str, whole: list[str]
) -> None:
    # These tables are wider than an 80-column terminal: each row becomes a block of
    # `COLUMN  value` lines, as in list and dlq-list, instead of `1234…` for 1234567.
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "80")
    with serve_answer(json.dumps(NARROW_ANSWERS[answer]).encode()) as api_url:
        outcome = cli(*command, api_url=api_url)
    assert outcome.exit_code == 0, outcome.err
    shown = re.sub(r"\x1b\[[0-9;]*m", "", outcome.out)
    assert "…" not in shown, shown
    assert max(len(line.rstrip()) for line in shown.splitlines()) <= 80
    for value in whole:
        assert value in shown, (value, shown)


def test_status_watch_follows_a_job_until_it_succeeds(cli: Cli, api: httpx.Client) -> None:
    # Running long enough to be seen running by a watch that a busy machine delays.
    job = enqueue(api, jobType="sleep", payload={"seconds": 1.5})
    watched = cli("status", "--id", job["id"], "--watch", "--interval", "0.05")
    assert watched.exit_code == 0
    states = [line.split()[1] for line in watched.out.splitlines()]
    assert states[-1] == "SUCCEEDED"
    assert "RUNNING" in states
    assert len(states) == len(set(states)), "each change is printed once"


def test_status_watch_json_prints_each_change_and_stops_at_dlq(cli: Cli, api: httpx.Client) -> None:
    job = enqueue(api, jobType="fail", payload={"terminal": True})
    watched = cli("status", "--id", job["id"], "--watch", "--interval", "0.05", "--json")
    assert watched.exit_code == 0
    documents = watched.json_lines()
    assert {document["id"] for document in documents} == {job["id"]}
    assert documents[-1]["state"] == "DLQ"


def test_status_watch_prints_one_line_per_change_even_for_a_multiline_error(
    cli: Cli, api: httpx.Client
) -> None:
    message = "card declined\n  at gateway step 3"
    job = enqueue(api, jobType="fail", payload={"message": message, "terminal": True})
    watched = cli("status", "--id", job["id"], "--watch", "--interval", "0.05")
    assert watched.exit_code == 0
    last = watched.out.splitlines()[-1]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  DLQ ", last), watched.out
    assert last.endswith("last error: TerminalError: card declined at gateway step 3")


def test_control_characters_in_stored_text_are_shown_written_out(
    cli: Cli, api: httpx.Client
) -> None:
    """Anyone who can cancel a job writes its reason: what an operator's terminal would act
    on (retitle the window, recolour, move the cursor) is shown as text, not sent to it."""
    hostile = "\x1b]0;pwned\x07\x1b[31mRED\r\x9b2J"
    queue = idle_queue()
    job_id = enqueue(api, queue=queue, payload={"note": hostile})["id"]
    api.post(f"/jobs/{job_id}/cancel", json={"reason": hostile}).raise_for_status()

    shown = [
        cli("status", "--id", job_id),
        cli("list", "--queue", queue),
        cli("--json", "status", "--id", job_id),
    ]

    assert [outcome.exit_code for outcome in shown] == [0, 0, 0]
    for outcome in shown[:2]:
        assert not any(character in outcome.out for character in "\x1b\x07\r\x9b")
    written_out = "\\x1b]0;pwned\\x07\\x1b[31mRED\\x0d\\x9b2J"
    assert field(shown[0].out, "reason") == written_out
    # --json prints the API's JSON as it came: JSON writes C0 controls escaped.
    assert "\x1b" not in shown[2].out
    assert json.loads(shown[2].out)["reason"] == hostile


@pytest.mark.parametrize(
    ("payload", "shown"),
    [
        ({"note": "\x1b[31m"}, '{"note":"\\u001b[31m"}'),  # a C0 control: a JSON escape
        ({"note": "\\x1b[31m"}, '{"note":"\\\\x1b[31m"}'),  # a backslash: not the line above
        ({"note": "\x7f\x9b2J"}, '{"note":"\\u007f\\u009b2J"}'),  # DEL and a C1 control
        ({"note": "café\tß"}, '{"note":"café\\tß"}'),  # letters stay, a tab is escaped
    ],
)
def test_status_and_dlq_show_print_the_payload_as_its_exact_json(
    cli: Cli, api: httpx.Client, payload: dict[str, str], shown: str
) -> None:
    """The payload line can be copied to enqueue the job again: its control characters are
    JSON escapes, safe on a terminal, not the `\\x1b` of other text (a backslash in JSON)."""
    job_id = enqueue(api, queue=idle_queue(), payload=payload)["id"]
    api.post(f"/jobs/{job_id}/dlq", json={}).raise_for_status()

    status = cli("status", job_id)
    dlq_show = cli("dlq-show", job_id)

    assert (status.exit_code, dlq_show.exit_code) == (0, 0)
    assert field(status.out, "payload") == field(dlq_show.out, "payload") == shown
    assert json.loads(shown) == payload


def test_the_watch_panel_shows_the_payload_as_its_exact_json(
    cli: Cli, api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "160")
    job_id = enqueue(api, queue=idle_queue(), payload={"note": "\x1b[31m\x9b2J"})["id"]
    api.post(f"/jobs/{job_id}/dlq", json={}).raise_for_status()

    watched = cli("status", job_id, "--watch")

    assert watched.exit_code == 0
    assert '{"note":"\\u001b[31m\\u009b2J"}' in watched.out
    assert "\x9b" not in watched.out


def test_a_job_can_be_cancelled_retried_dead_lettered_and_replayed(
    cli: Cli, api: httpx.Client
) -> None:
    job_id = enqueue(api, queue=idle_queue())["id"]
    assert cli("cancel", "--id", job_id).out == f"cancelled job {job_id}: now CANCELLED\n"
    assert cli("retry", "--id", job_id).out == f"retried job {job_id}: now PENDING\n"
    moved = cli("move-to-dlq", "--id", job_id, "--reason", "bad input")
    assert moved.out == f"moved job {job_id} to the DLQ: now DLQ\n"

    entry = cli("dlq-show", "--id", job_id)
    assert (field(entry.out, "job id"), field(entry.out, "reason")) == (job_id, "bad input")

    assert cli("dlq-replay", "--id", job_id).out == f"replayed job {job_id}: now PENDING\n"
    gone = cli("dlq-show", "--id", job_id)
    assert (gone.exit_code, gone.err) == (3, f"error: not_found: no dead letter for job {job_id}\n")
    retried_pending = cli("retry", "--id", job_id)
    assert retried_pending.exit_code == 4
    assert retried_pending.err.startswith("error: invalid_state_transition: ")


def test_list_filters_by_queue_and_status_and_pages(cli: Cli, api: httpx.Client) -> None:
    queue = idle_queue()
    pending = [enqueue(api, queue=queue)["id"] for _ in range(3)]
    cancelled = enqueue(api, queue=queue)["id"]
    api.post(f"/jobs/{cancelled}/cancel").raise_for_status()

    listed = cli("list", "--queue", queue, "--status", "pending")
    rows = [line.split() for line in listed.out.splitlines()]
    assert rows[0] == ["ID", "QUEUE", "TYPE", "STATE", "ATTEMPTS", "CREATED", "LAST", "ERROR"]
    assert [row[0] for row in rows[1:]] == pending[::-1], "newest first"
    assert {row[3] for row in rows[1:]} == {"PENDING"}

    assert listed.err == ""  # every match shown
    page = cli("list", "--queue", queue, "--limit", "2", "--offset", "1")
    assert [line.split()[0] for line in page.out.splitlines()[1:]] == pending[::-1][:2]
    # Piped, the rows stay alone on standard output; that more exist goes to standard error.
    assert page.err == "showing 2-3 of 4 jobs; next page: --offset 3\n"

    upper = cli("list", "--queue", queue, "--status", "CANCELLED")
    assert [line.split()[0] for line in upper.out.splitlines()[1:]] == [cancelled]


def test_dlq_list_pages_with_limit_and_offset(cli: Cli, api: httpx.Client) -> None:
    queue = idle_queue()
    dead = [dead_letter(api, queue) for _ in range(3)]
    page = cli("dlq-list", "--limit", "2", "--offset", "1", "--json").json()
    assert (page["limit"], page["offset"]) == (2, 1)
    assert [entry["jobId"] for entry in page["items"]] == dead[::-1][1:3]


def test_dlq_replay_all_replays_only_the_given_queues_dead_letters(
    cli: Cli, api: httpx.Client
) -> None:
    chosen, other = idle_queue(), idle_queue()
    replayable = {dead_letter(api, chosen) for _ in range(3)}
    untouched = dead_letter(api, other)

    replayed = cli("dlq-replay", "--all", "--queue", chosen, "--yes")
    assert (replayed.exit_code, replayed.err) == (0, "")
    assert replayed.out == f"replayed 3 of 3 dead letters on queue {chosen}\n"
    assert {api.get(f"/jobs/{job_id}").json()["state"] for job_id in replayable} == {"PENDING"}
    assert api.get(f"/dlq/{untouched}").status_code == 200

    again = cli("dlq-replay", "--all", "--queue", chosen, "--json", "--yes")
    assert (again.exit_code, again.out) == (0, "")


def test_dlq_replay_all_interrupted_says_how_many_it_replayed(
    cli: Cli, api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = idle_queue()
    for _ in range(4):
        dead_letter(api, queue)
    replay = TaskForgeClient.replay
    calls: list[object] = []

    def interrupted_at_the_third(client: TaskForgeClient, job_id: uuid.UUID) -> ApiResponse:
        calls.append(job_id)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C
        return replay(client, job_id)

    monkeypatch.setattr(TaskForgeClient, "replay", interrupted_at_the_third)
    outcome = cli("dlq-replay", "--all", "--queue", queue, "--yes")
    assert (outcome.exit_code, outcome.out) == (130, "")
    assert outcome.err == f"replayed 2 of 4 dead letters on queue {queue}\n"


def test_dlq_replay_all_json_prints_each_replayed_job(cli: Cli, api: httpx.Client) -> None:
    queue = idle_queue()
    dead = {dead_letter(api, queue) for _ in range(2)}
    replayed = cli("dlq-replay", "--all", "--queue", queue, "--json", "-y")
    assert {job["id"] for job in replayed.json_lines()} == dead
    assert {job["state"] for job in replayed.json_lines()} == {"PENDING"}


@pytest.mark.parametrize(
    "args",
    [
        ["dlq-replay"],  # neither
        ["dlq-replay", "--all", "--id", str(uuid.uuid4())],  # both
        ["dlq-replay", "--id", str(uuid.uuid4()), "--queue", "jobs:ready"],  # --queue without --all
        ["dlq-replay", "--id", str(uuid.uuid4()), "--dry-run"],  # --dry-run without --all
    ],
)
def test_dlq_replay_needs_exactly_one_of_id_or_all(cli: Cli, args: list[str]) -> None:
    outcome = cli(*args)
    assert outcome.exit_code == 2
    assert outcome.err.startswith("error: usage: ")


def test_dlq_replay_all_dry_run_lists_what_it_would_replay_and_changes_nothing(
    cli: Cli, api: httpx.Client
) -> None:
    queue = idle_queue()
    dead = [dead_letter(api, queue, reason=f"poison {n}") for n in range(2)]

    preview = cli("dlq-replay", "--all", "--queue", queue, "--dry-run")
    assert (preview.exit_code, preview.err) == (0, "")
    lines = preview.out.splitlines()
    assert lines[0].split()[:2] == ["JOB", "ID"]
    assert {line.split()[0] for line in lines[1:-1]} == set(dead)
    assert lines[-1] == f"would replay 2 dead letters on queue {queue}; dry run, nothing changed"

    as_json = cli("dlq-replay", "--all", "--queue", queue, "--dry-run", "--json")
    assert {entry["jobId"] for entry in as_json.json_lines()} == set(dead)
    assert all(api.get(f"/dlq/{job_id}").status_code == 200 for job_id in dead)


def test_dlq_replay_all_dry_run_json_is_each_dead_letter_as_the_api_sent_it(
    cli: Cli, api: httpx.Client
) -> None:
    """Control characters are written out for people only: a script reading the JSON gets
    the dead letter's text as stored, as `dlq-show --json` gives it."""
    hostile = "\x1b[31mRED\x9b2J"
    queue = idle_queue()
    job_id = dead_letter(api, queue, reason=hostile)

    preview = cli("dlq-replay", "--all", "--queue", queue, "--dry-run", "--json")
    shown = cli("dlq-show", job_id, "--json")
    for_people = cli("dlq-replay", "--all", "--queue", queue, "--dry-run")

    assert (preview.exit_code, shown.exit_code, for_people.exit_code) == (0, 0, 0)
    assert preview.json_lines() == [shown.json()]
    assert shown.json()["reason"] == hostile
    assert "\\x1b[31mRED\\x9b2J" in for_people.out


def test_dlq_replay_all_off_a_terminal_without_yes_replays_nothing(
    cli: Cli, api: httpx.Client
) -> None:
    queue = idle_queue()
    dead = dead_letter(api, queue)
    refused = cli("dlq-replay", "--all", "--queue", queue)
    assert (refused.exit_code, refused.out) == (2, "")
    assert refused.err.startswith("error: usage: dlq-replay --all asks for confirmation")
    assert api.get(f"/dlq/{dead}").status_code == 200


@pytest.mark.parametrize(
    ("answer", "replayed"),
    [("y\n", True), ("yes\n", True), ("n\n", False), ("\n", False)],  # the default is no
)
def test_dlq_replay_all_on_a_terminal_asks_first(
    dev_server: DevServer, api: httpx.Client, answer: str, replayed: bool
) -> None:
    queue = idle_queue()
    dead = {dead_letter(api, queue) for _ in range(2)}
    keyboard, terminal = pty.openpty()
    try:
        os.write(keyboard, answer.encode())  # typed ahead: the CLI reads it from its terminal
        outcome = run_process(
            "dlq-replay", "--all", "--queue", queue, env=server_env(dev_server), stdin=terminal
        )
    finally:
        os.close(keyboard)
        os.close(terminal)
    assert outcome.exit_code == 0
    assert outcome.err.startswith(f"replay 2 dead letters on queue {queue}? [y/N] ")
    if replayed:
        assert outcome.out == f"replayed 2 of 2 dead letters on queue {queue}\n"
        assert {api.get(f"/jobs/{job_id}").json()["state"] for job_id in dead} == {"PENDING"}
    else:
        assert outcome.out == ""
        assert outcome.err.endswith(f"nothing replayed on queue {queue}\n")
        assert {api.get(f"/dlq/{job_id}").status_code for job_id in dead} == {200}


def test_stats_shows_a_row_per_queue_with_depth_and_state_counts(
    cli: Cli, api: httpx.Client
) -> None:
    queue = idle_queue()
    for _ in range(2):
        enqueue(api, queue=queue)
    api.post(f"/jobs/{enqueue(api, queue=queue)['id']}/cancel").raise_for_status()

    lines = cli("stats").out.splitlines()
    header = lines[0].split()
    assert header == ["QUEUE", "DEPTH", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "DLQ",
                      "CANCELLED", "TOTAL"]  # fmt: skip
    row = next(line.split() for line in lines if line.startswith(queue + " "))
    counts = dict(zip(header[1:], map(int, row[1:]), strict=True))
    assert (counts["PENDING"], counts["CANCELLED"], counts["TOTAL"]) == (2, 1, 3)
    shown = next(q for q in api.get("/stats").json()["queues"] if q["queue"] == queue)
    assert counts["DEPTH"] == shown["depth"] > 0
    assert lines[-1] == f"dead letters: {api.get('/stats').json()['dlq']}"


def test_workers_lists_the_dev_servers_worker_with_its_job_types(
    cli: Cli, api: httpx.Client
) -> None:
    lines = cli("workers").out.splitlines()

    assert lines[0].split() == ["WORKER", "QUEUES", "JOB", "TYPES", "BUSY", "STARTED", "LAST",
                                "REPORT"]  # fmt: skip
    [worker] = api.get("/workers").json()["items"]
    [row] = [line.split() for line in lines[1:]]
    assert row[0] == worker["workerId"]
    assert row[2] == ",".join(worker["jobTypes"])
    assert "email" in worker["jobTypes"]
    assert row[3] == f"{worker['busySlots']}/{worker['concurrency']}"


def test_workers_json_is_the_apis_answer(cli: Cli, api: httpx.Client) -> None:
    listed = cli("workers", "--json").json()

    assert [w["workerId"] for w in listed["items"]] == [
        w["workerId"] for w in api.get("/workers").json()["items"]
    ]


def test_health_reports_liveness_and_each_readiness_check(cli: Cli) -> None:
    outcome = cli("health")
    assert outcome.exit_code == 0
    rows = dict(line.split(maxsplit=1) for line in outcome.out.splitlines()[1:])
    assert rows == {"live": "ok", "store": "ok", "queue": "ok", "ready": "ok"}


def test_plain_output_has_no_colours_or_borders(cli: Cli, api: httpx.Client) -> None:
    job = enqueue(api, queue=idle_queue())
    for args in (["list", "--limit", "3"], ["status", "--id", job["id"]], ["stats"]):
        out = cli(*args).out
        assert "\x1b[" not in out
        assert not set(out) & set("│╭╰─┌└")
        assert all(line == line.rstrip() for line in out.splitlines())


def test_on_a_terminal_states_are_coloured_and_watch_ends_on_the_final_state(
    cli: Cli, api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "160")
    job = enqueue(api)
    watched = cli("status", "--id", job["id"], "--watch", "--interval", "0.05")
    assert watched.exit_code == 0
    assert "reached" in watched.out
    listed = cli("list", "--limit", "1")
    assert "\x1b[1;32mSUCCEEDED\x1b[0m" in listed.out
    assert "showing 1-1 of" in listed.out


def test_global_options_work_before_or_after_the_command_or_from_the_environment(
    dev_server: DevServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in TERMINAL_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    capsys.readouterr()
    options = ["--api-url", dev_server.url, "--token", dev_server.token, "--json"]
    assert run([*options, "stats"]) == 0
    assert run(["stats", *options]) == 0
    monkeypatch.setenv("TASKFORGE_API_URL", dev_server.url)
    monkeypatch.setenv("TASKFORGE_API_TOKEN", dev_server.token)
    assert run(["stats", "--json"]) == 0
    outputs = capsys.readouterr().out.splitlines()
    assert [set(json.loads(line)) for line in outputs] == [{"queues", "totals", "total", "dlq"}] * 3


def test_a_reader_that_goes_away_ends_a_watch_with_exit_141_and_nothing_on_stderr(
    dev_server: DevServer, api: httpx.Client
) -> None:
    # `taskforge-cli status --watch | head -1`: the line of the next change finds the pipe
    # closed, as a `list | head -1` too long for the pipe does.
    job = enqueue(api, queue=idle_queue())
    environment = {k: v for k, v in os.environ.items() if k not in TERMINAL_OVERRIDES}
    environment.update(server_env(dev_server))
    watch = subprocess.Popen(
        [sys.executable, "-c", CLI, "status", job["id"], "--watch", "--interval", "0.05"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
    )
    assert watch.stdout is not None and watch.stderr is not None
    first = watch.stdout.readline().decode()
    watch.stdout.close()
    api.post(f"/jobs/{job['id']}/cancel").raise_for_status()
    errors = watch.stderr.read().decode()
    assert watch.wait(timeout=30) == 141, errors
    assert "  PENDING  " in first
    assert errors == ""


@pytest.mark.parametrize("args", [["--help"], ["enqueue", "--help"], ["--version"]])
def test_help_into_a_closed_pipe_ends_with_exit_141_too(args: list[str]) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in TERMINAL_OVERRIDES}
    reading, writing = os.pipe()
    os.close(reading)  # closed before the command starts, however fast it writes
    try:
        shown = subprocess.Popen(
            [sys.executable, "-c", CLI, *args],
            stdin=subprocess.DEVNULL,
            stdout=writing,
            stderr=subprocess.PIPE,
            env=environment,
        )
    finally:
        os.close(writing)
    assert shown.stderr is not None
    errors = shown.stderr.read().decode()
    assert shown.wait(timeout=30) == 141, errors
    assert errors == ""


def test_a_silent_server_times_out_with_exit_6(cli: Cli) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        outcome = cli("--timeout", "0.2", "stats", api_url=url)
    assert outcome.exit_code == 6
    assert outcome.err == f"error: timeout: no answer from {url} within 0.2s\n"


def test_an_unexpected_failure_is_one_line_and_exit_1_never_a_traceback(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: TaskForgeClient) -> ApiResponse:
        raise RuntimeError("something nobody planned for")

    monkeypatch.setattr(TaskForgeClient, "stats", broken)
    outcome = cli("stats")
    assert (outcome.exit_code, outcome.out) == (1, "")
    assert outcome.err == "error: unexpected: RuntimeError: something nobody planned for\n"


def test_output_the_terminal_cannot_encode_is_not_blamed_on_the_api(
    api: httpx.Client, dev_server: DevServer
) -> None:
    job = enqueue(api, payload={"greeting": "héllo 日本"})

    shown = run_process(
        "--api-url", dev_server.url, "--token", dev_server.token, "--json", "status", job["id"],
        env={"PYTHONIOENCODING": "ascii"},
    )  # fmt: skip

    assert shown.exit_code == 1, shown.err
    assert shown.err.startswith("error: unexpected: UnicodeEncodeError"), shown.err


def test_a_bad_answer_among_several_names_every_request_it_may_be(cli: Cli) -> None:
    with serve_answer(b'["ok"]') as api_url:  # /healthz and /readyz alike
        outcome = cli("health", api_url=api_url)
    assert outcome.exit_code == 6, outcome.err
    assert outcome.err.startswith(
        "error: invalid_response: one of GET /healthz answered 200, GET /readyz answered 200:"
        " JSON that is not the API's answer to it ("
    ), outcome.err


class _FixedAnswer(BaseHTTPRequestHandler):
    status = 500
    content_type = "application/json"
    body = b""

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


JOB_ID = "7b5b4f8e-2a7d-4e6f-9d5b-3a6b7f9a0c12"


@pytest.mark.parametrize(
    ("command", "path", "body"),
    [
        (("status", JOB_ID), f"/jobs/{JOB_ID}", b"[1, 2]"),
        (("list",), "/jobs", b"[1, 2]"),
        (("list",), "/jobs", b'{"items": 3}'),
        (("stats",), "/stats", b"[1, 2]"),
        (("workers",), "/workers", b'{"items": 3}'),
        (("dlq-list",), "/dlq", b'{"items": [1]}'),
    ],
)
def test_json_the_cli_cannot_show_as_the_apis_answer_is_an_invalid_response(
    cli: Cli, command: tuple[str, ...], path: str, body: bytes
) -> None:
    # Another server, or a proxy's page, on the API's address: exit 6 as for a body that is
    # not JSON, naming the request, never "unexpected". (A JSON object missing fields is
    # shown with what it has, as the CLI shows any answer.)
    with serve_answer(body) as api_url:
        outcome = cli(*command, api_url=api_url)
    assert outcome.exit_code == 6, outcome.err
    assert outcome.err.startswith(
        f"error: invalid_response: GET {path} answered 200 with JSON that is not the API's"
        " answer to it ("
    ), outcome.err


@pytest.mark.parametrize(
    ("status", "content_type", "body", "exit_code", "line"),
    [
        (500, "application/json", b'{"code":"internal_error","message":"internal server error"}',
         6, "error: internal_error: internal server error"),  # the API's own 5xx
        (502, "text/html", b"<html>Bad Gateway</html>",
         6, "error: http_502: GET /stats: Bad Gateway"),  # a proxy in front of the API
        (418, "text/plain", b"teapot",
         5, "error: http_418: GET /stats: I'm a Teapot"),  # any other 4xx
        (200, "text/html", b"<html>welcome</html>",
         6, "error: invalid_response: GET /stats answered 200 with a body that is not JSON"),
    ],
)  # fmt: skip
def test_answers_that_are_not_the_api_are_reported_by_status(
    cli: Cli, status: int, content_type: str, body: bytes, exit_code: int, line: str
) -> None:
    handler = type(
        "Answer", (_FixedAnswer,), {"status": status, "content_type": content_type, "body": body}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        outcome = cli("stats", api_url=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    assert (outcome.exit_code, outcome.err) == (exit_code, line + "\n")


def test_another_servers_404_for_a_job_is_an_invalid_response_not_a_missing_job(
    cli: Cli,
) -> None:
    # `python -m http.server` or another web app on the API's address: exit 6, not 3.
    handler = type(
        "Answer",
        (_FixedAnswer,),
        {"status": 404, "content_type": "text/html", "body": b"<html>Not Found</html>"},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        outcome = cli("status", JOB_ID, api_url=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    assert (outcome.exit_code, outcome.out) == (6, "")
    assert outcome.err == (
        f"error: invalid_response: GET /jobs/{JOB_ID} answered 404 (Not Found) with a body"
        " that is not the API's error\n"
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_a_description_and_an_example(cli: Cli, command: str) -> None:
    outcome = cli(command, "--help")
    assert outcome.exit_code == 0
    assert f"Usage: taskforge-cli {command}" in outcome.out
    assert re.search(rf"For example:\n\s+taskforge-cli {command}\b", outcome.out), outcome.out
    assert "--api-url" in outcome.out
    assert "--json" in outcome.out


@pytest.mark.parametrize("command", QUEUE_COMMANDS)
def test_every_queues_command_has_help_with_an_example(cli: Cli, command: str) -> None:
    outcome = cli(*command.split(), "--help")
    assert outcome.exit_code == 0
    assert re.search(rf"For example:\n\s+taskforge-cli {command}\b", outcome.out), outcome.out


def test_queues_pause_shows_the_queue_paused_in_the_list_until_resumed(
    cli: Cli, api: httpx.Client
) -> None:
    queue = idle_queue()
    enqueue(api, queue=queue)

    paused = cli("queues", "pause", queue)

    assert paused.exit_code == 0, paused.err
    assert re.fullmatch(rf"queue {queue}: paused since \S.*\n", paused.out), paused.out
    listed = cli("queues", "list")
    row = next(line for line in listed.out.splitlines() if line.split()[0] == queue)
    assert "since" in row
    entry = next(
        item for item in cli("--json", "queues", "list").json()["items"] if item["queue"] == queue
    )
    assert (entry["paused"], entry["states"]["PENDING"], entry["total"]) == (True, 1, 1)

    resumed = cli("queues", "resume", queue)

    assert (resumed.exit_code, resumed.out) == (0, f"queue {queue}: running\n")
    assert not next(i for i in api.get("/queues").json()["items"] if i["queue"] == queue)["paused"]


def test_a_resumed_queue_runs_the_jobs_enqueued_while_it_was_paused(
    cli: Cli, api: httpx.Client
) -> None:
    assert cli("queues", "pause", "jobs:ready").exit_code == 0
    try:
        job = enqueue(api)
        assert api.get(f"/jobs/{job['id']}").json()["state"] == "PENDING"
    finally:
        assert cli("queues", "resume", "jobs:ready").exit_code == 0

    assert wait_for_state(api, job["id"], "SUCCEEDED")["state"] == "SUCCEEDED"


@pytest.mark.parametrize("command", SCHEDULE_COMMANDS)
def test_every_schedules_command_has_help_with_an_example(cli: Cli, command: str) -> None:
    outcome = cli(*command.split(), "--help")
    assert outcome.exit_code == 0
    assert re.search(rf"For example:\n\s+taskforge-cli {command}\b", outcome.out), outcome.out


def test_schedules_add_list_pause_resume_and_rm_show_the_fire_times(
    cli: Cli, api: httpx.Client
) -> None:
    name = f"cli-{uuid.uuid4().hex[:10]}"
    added = cli(
        "schedules", "add", name, "--cron", "30 2 * * *", "--timezone", "Europe/Berlin",
        "--job-type", "report", "--payload", '{"kind":"daily"}', "--queue", idle_queue(),
    )  # fmt: skip

    assert added.exit_code == 0, added.err
    next_fire = api.get(f"/schedules/{name}").json()["nextFireAt"]
    assert added.out == (
        f"schedule {name} added (30 2 * * * Europe/Berlin): next fire {next_fire}, "
        "previous fire -\n"
    )
    listed = cli("schedules", "list")
    assert listed.out.splitlines()[0].split() == [
        "NAME", "CRON", "TIMEZONE", "JOB", "TYPE", "QUEUE", "PRIORITY", "SOURCE", "PAUSED",
        "NEXT", "FIRE", "PREVIOUS", "FIRE",
    ]  # fmt: skip
    row = next(line for line in listed.out.splitlines() if line.startswith(name))
    assert "Europe/Berlin" in row and "api" in row and next_fire in row

    paused = cli("schedules", "pause", name)
    assert paused.out == (
        f"schedule {name} paused (30 2 * * * Europe/Berlin): paused, previous fire -\n"
    )
    assert api.get(f"/schedules/{name}").json()["paused"] is True
    resumed = cli("schedules", "resume", name)
    assert f"resumed (30 2 * * * Europe/Berlin): next fire {next_fire}" in resumed.out
    listed_json = cli("--json", "schedules", "list").json()
    assert name in [item["name"] for item in listed_json["items"]]

    removed = cli("schedules", "rm", name)
    assert (removed.exit_code, removed.out) == (0, f"schedule {name} removed\n")
    again = cli("schedules", "rm", name)
    assert again.exit_code == 3
    assert again.err.startswith("error: not_found: schedule")


def test_schedules_add_takes_the_priority_of_each_ticks_job(cli: Cli, api: httpx.Client) -> None:
    name = f"cli-{uuid.uuid4().hex[:10]}"
    added = cli(
        "schedules", "add", name, "--cron", "@daily", "--job-type", "report",
        "--queue", idle_queue(), "--priority", "1",
    )  # fmt: skip
    refused = cli(
        "schedules", "add", name, "--cron", "@daily", "--job-type", "r", "--priority", "12"
    )

    assert added.exit_code == 0, added.err
    assert api.get(f"/schedules/{name}").json()["priority"] == 1
    assert refused.exit_code != 0 and "priority" in refused.err
    assert table_cell(cli("schedules", "list").out, name, "PRIORITY") == "1"
    cli("schedules", "rm", name)


def test_schedules_list_shows_the_default_priority_of_a_schedule_given_none(cli: Cli) -> None:
    name = f"cli-{uuid.uuid4().hex[:10]}"
    added = cli(
        "schedules", "add", name, "--cron", "@daily", "--job-type", "report",
        "--queue", idle_queue(),
    )  # fmt: skip

    assert added.exit_code == 0, added.err
    assert table_cell(cli("schedules", "list").out, name, "PRIORITY") == "5"
    cli("schedules", "rm", name)


def test_schedules_add_sends_every_policy_flag(cli: Cli, api: httpx.Client) -> None:
    name = f"cli-{uuid.uuid4().hex[:10]}"
    added = cli(
        "schedules", "add", name, "--cron", "@daily", "--job-type", "report",
        "--queue", idle_queue(), "--max-attempts", "7", "--initial-delay", "2",
        "--backoff", "3", "--max-delay", "90", "--jitter", "--visibility-timeout", "45",
        "--job-timeout", "12.5",
    )  # fmt: skip

    assert added.exit_code == 0, added.err
    schedule = api.get(f"/schedules/{name}").json()
    fields = ("maxAttempts", "initialDelay", "backoff", "maxDelay", "jitter")
    assert {k: schedule[k] for k in fields} == {
        "maxAttempts": 7, "initialDelay": 2.0, "backoff": 3.0, "maxDelay": 90.0, "jitter": True
    }  # fmt: skip
    assert (schedule["visibilityTimeout"], schedule["timeout"]) == (45.0, 12.5)
    cli("schedules", "rm", name)


def test_schedules_add_refuses_a_bad_cron_expression_naming_it(cli: Cli) -> None:
    outcome = cli("schedules", "add", "bad-cron", "--cron", "61 * * * *", "--job-type", "report")

    assert outcome.exit_code == 5
    assert outcome.err.startswith("error: validation_error: cron:")


def test_queues_pause_refuses_a_reserved_queue_name(cli: Cli) -> None:
    outcome = cli("queues", "pause", "taskforge:x")

    assert outcome.exit_code != 0
    assert "queue" in outcome.err


def test_enqueue_with_a_held_unique_key_names_the_job_holding_it(
    cli: Cli, api: httpx.Client
) -> None:
    queue = idle_queue()
    first = cli("enqueue", "--job-type", "noop", "--queue", queue, "--unique-key", "u-1")
    second = cli("enqueue", "--job-type", "noop", "--queue", queue, "--unique-key", "u-1")

    job_id = re.search(UUID_PATTERN, first.out)
    assert job_id is not None, first.out
    assert second.exit_code == 0
    assert f"job {job_id.group(0)} already holds unique key u-1" in second.out
    assert api.get(f"/jobs/{job_id.group(0)}").json()["uniqueKey"] == "u-1"


def test_the_help_text_documents_the_exit_codes(cli: Cli) -> None:
    out = cli("--help").out
    codes = re.findall(r"^\s+(\d+)\s{2,}\S", out, re.MULTILINE)
    assert codes == ["0", "1", "2", "3", "4", "5", "6", "130", "141"]
    assert all(command in out for command in COMMANDS)
