"""Each process imports what its role needs: a worker or a scheduler starts without the web
framework, the tracing SDK (tracing off) or the template engine, and `taskforge-cli` without
the service. Checked by what a fresh interpreter has loaded, never by a clock."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVICE_ROLES = """
import asyncio, json, os, sys
os.environ.pop("METRICS_ADDR", None)  # a worker serving no metrics, whatever the caller's
from taskforge.entrypoints.cli.service import _settings
from taskforge.entrypoints import backends  # the Postgres and Redis providers
from taskforge.adapters.telemetry.logging import configure_logging
from taskforge.application.metrics_publisher import MetricsPublisher
from taskforge.application.scheduler import SchedulerTick
from taskforge.application.worker import Worker
from taskforge.entrypoints.container import Backend, make_container, serves_metrics
from taskforge.entrypoints.runtime import load_handlers

async def build() -> None:
    settings = _settings({"tracing_enabled": False})
    configure_logging(settings.log_level, "json")
    container = make_container(
        settings,
        Backend.MEMORY,
        load_handlers((), demo=True),
        prometheus=serves_metrics(settings, {"worker", "scheduler"}),
    )
    for role in (Worker, MetricsPublisher, SchedulerTick):
        await container.get(role)
    await container.close()

asyncio.run(build())
print(json.dumps(sorted(sys.modules)))
"""

LOADED = "sorted(name for name, module in sys.modules.items() if module is not None)"
CLI = f"import json, sys, taskforge.cli.app; print(json.dumps({LOADED}))"

# A whole `status` run against a port nothing listens on: the command, its client, its error.
CLI_STATUS = """
import json, socket, sys
from taskforge.cli.app import run

with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
job_id = "00000000-0000-0000-0000-000000000001"
code = run(["--api-url", f"http://127.0.0.1:{port}", "status", job_id])
loaded = sorted(name for name, module in sys.modules.items() if module is not None)
print(json.dumps([*loaded, f"exit code {code}"]))
"""

# The same command answered: a job from a stand-in API on this machine, printed as a table.
CLI_STATUS_ANSWERED = """
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from taskforge.cli.app import run

job = {
    "id": "7b5b4f8e-2a7d-4e6f-9d5b-3a6b7f9a0c12", "queue": "jobs:ready", "jobType": "email",
    "payload": {"to": "a@b.com"}, "state": "SUCCEEDED", "idempotencyKey": None,
    "uniqueKey": None, "attemptCount": 1, "retryCount": 0, "maxAttempts": 3,
    "initialDelay": 1.0, "backoff": 2.0, "maxDelay": 300.0, "jitter": False,
    "visibilityTimeout": 30.0, "timeout": 0.0, "priority": 5,
    "nextRunAt": "2026-01-02T03:04:05Z", "lastError": None, "reason": None,
    "leaseOwner": None, "leaseExpiresAt": None, "createdAt": "2026-01-02T03:04:05Z",
    "updatedAt": "2026-01-02T03:04:06Z", "startedAt": "2026-01-02T03:04:05Z",
    "finishedAt": "2026-01-02T03:04:06Z", "errors": [], "result": {"sent": True},
}

class Api(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(job).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
threading.Thread(target=server.serve_forever, daemon=True).start()
code = run(["--api-url", f"http://127.0.0.1:{server.server_port}", "status", job["id"]])
loaded = sorted(name for name, module in sys.modules.items() if module is not None)
print(json.dumps([*loaded, f"exit code {code}"]))
"""

NOT_IN_A_WORKER = (
    "litestar",
    "uvicorn",
    "jinja2",
    "rich",
    "httpx",
    "opentelemetry.sdk.trace",
    # redis-py would load it for client metrics TaskForge does not use (adapters/redis)
    "opentelemetry.sdk.metrics",
    # the exposition, without METRICS_ADDR (the job metrics still reach the API's /metrics)
    "prometheus_client",
)
NOT_IN_THE_CLI = (
    "litestar",
    "uvicorn",
    "jinja2",
    "asyncpg",
    "redis",
    "dishka",
    "opentelemetry",
    "prometheus_client",
    "asyncio",
    "taskforge.entrypoints",
    "taskforge.adapters",
    # httpx's own command line and what it loads
    "httpx._main",
    "click",
    "pygments",
    # the answers' decoding into values: the CLI prints them as the API sent them
    "taskforge.client.values",
    "msgspec",
    "typing_extensions",
    # drawn by `status --watch` and `dlq-replay --all` only
    "rich.live",
    "rich.progress",
)
NOT_IN_A_CLI_RUN = NOT_IN_THE_CLI


def _loaded(code: str) -> list[str]:
    printed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    modules: list[str] = json.loads(printed.stdout.strip().splitlines()[-1])
    return modules


def _offending(modules: list[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(
        {
            name
            for name in banned
            for module in modules
            if module == name or module.startswith(name + ".")
        }
    )


@pytest.fixture(scope="module")
def service_modules() -> list[str]:
    return _loaded(SERVICE_ROLES)


def test_a_worker_and_a_scheduler_start_without_web_template_or_tracing_modules(
    service_modules: list[str],
) -> None:
    assert _offending(service_modules, NOT_IN_A_WORKER) == []


def test_the_check_sees_what_a_role_loads(service_modules: list[str]) -> None:
    # The probe really built the roles: their own modules and drivers are loaded.
    assert _offending(service_modules, ("taskforge.application.worker", "asyncpg", "redis")) == [
        "asyncpg",
        "redis",
        "taskforge.application.worker",
    ]


def test_an_application_enqueueing_without_tracing_loads_no_opentelemetry() -> None:
    code = (
        "import json, sys, taskforge\n"
        "from taskforge.sdk.transactional import _new_jobs\n"
        "[job] = _new_jobs([{'job_type': 'email'}], batch=False)\n"
        "assert job.traceparent is None, job.traceparent\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    modules = _loaded(code)
    assert "taskforge.sdk.transactional" in modules
    assert _offending(modules, ("opentelemetry",)) == []


def test_the_operator_cli_starts_without_the_service_or_asyncio() -> None:
    assert _offending(_loaded(CLI), NOT_IN_THE_CLI) == []


def test_a_cli_command_runs_without_value_decoding_or_drawing_modules() -> None:
    modules = _loaded(CLI_STATUS)
    assert "exit code 6" in modules  # the command ran, up to its connection error
    assert _offending(modules, NOT_IN_A_CLI_RUN) == []


def test_a_cli_command_prints_an_answer_without_decoding_it_into_values() -> None:
    modules = _loaded(CLI_STATUS_ANSWERED)
    assert "exit code 0" in modules  # the job was fetched and printed
    assert _offending(modules, NOT_IN_A_CLI_RUN) == []
