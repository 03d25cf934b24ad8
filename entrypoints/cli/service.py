"""`taskforge`: run the service roles, migrate the database, benchmark."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated, TypeVar

from cyclopts import App, Parameter, validators

from taskforge.adapters.telemetry.logging import configure_logging
from taskforge.application.worker import TooManyAbandonedThreads
from taskforge.entrypoints.config import ConfigError, Settings, parse_address
from taskforge.entrypoints.container import Backend, make_container
from taskforge.entrypoints.runtime import load_handlers, run_event_loop, run_roles

T = TypeVar("T")

app = App(
    name="taskforge",
    help="TaskForge: a fault-tolerant distributed job queue and scheduler.",
    version="0.1.0",
)


def _run(
    role: str,
    backend: Backend,
    roles: set[str],
    flags: dict[str, str] | None = None,
    **overrides: object,
) -> None:
    """`flags` are command-line options given as the variables they stand for, so they are
    parsed and validated exactly like the environment."""
    settings = _settings({**overrides, "service_name": f"taskforge-{role}"}, flags)
    if backend is Backend.POSTGRES_REDIS:
        settings.require_postgres(role)
    configure_logging(settings.log_level)
    handlers = load_handlers(settings.handlers, settings.demo_handlers or role == "dev")
    container = make_container(settings, backend, handlers)
    run_event_loop(run_roles(container, settings, roles))


def _settings(overrides: dict[str, object], flags: dict[str, str] | None = None) -> Settings:
    import dataclasses

    settings = Settings.from_env({**os.environ, **(flags or {})})
    changes = {key: value for key, value in overrides.items() if value is not None}
    return dataclasses.replace(settings, **changes) if changes else settings  # type: ignore[arg-type]


@app.command
def dev(
    addr: Annotated[
        str | None, Parameter(help="Listen address, e.g. :8080 (default HTTP_ADDR)")
    ] = None,
) -> None:
    """API, worker and scheduler in one process on the in-memory backend; nothing to install.

    Example: taskforge dev --addr 127.0.0.1:8080
    """
    http_addr = parse_address("--addr", addr) if addr else None
    _run("dev", Backend.MEMORY, {"api", "worker", "scheduler"}, http_addr=http_addr)


@app.command
def api() -> None:
    """The REST API (needs POSTGRES_DSN and Redis).

    Example: POSTGRES_DSN=postgresql://postgres@localhost/taskforge taskforge api
    """
    settings = _settings({})
    if settings.api_workers > 1:
        _serve_api_processes(settings)
        return
    _run("api", Backend.POSTGRES_REDIS, {"api"})


def _serve_api_processes(settings: Settings) -> None:
    """API_WORKERS processes behind one socket, supervised by uvicorn (which then owns
    SIGTERM/SIGINT: each process finishes its requests and closes its pools)."""
    import uvicorn

    settings.require_postgres("api")
    configure_logging(settings.log_level)
    uvicorn.run(
        "taskforge.entrypoints.http.asgi:app_from_environment",
        factory=True,
        host=settings.http_addr.host,
        port=settings.http_addr.port,
        workers=settings.api_workers,
        log_config=None,
        access_log=False,
        server_header=False,
    )


@app.command
def worker(
    queues: Annotated[
        str | None, Parameter(help="Comma-separated queues (default QUEUE_NAME)")
    ] = None,
    concurrency: Annotated[int | None, Parameter(help="Slots (default WORKER_CONCURRENCY)")] = None,
    handlers: Annotated[
        str | None, Parameter(help="Modules that register handlers, comma-separated")
    ] = None,
    demo_handlers: Annotated[
        bool, Parameter(help="Also load the demo handlers (email, noop, sleep, fail)")
    ] = False,
) -> None:
    """Run jobs (needs POSTGRES_DSN and Redis).

    Example: taskforge worker --queues jobs:ready,emails --concurrency 20 --handlers myapp.jobs
    """
    flags = {
        name: str(value)
        for name, value in (
            ("WORKER_QUEUES", queues),
            ("TASKFORGE_HANDLERS", handlers),
            ("WORKER_CONCURRENCY", concurrency),
        )
        if value is not None
    }
    _run("worker", Backend.POSTGRES_REDIS, {"worker"}, flags, demo_handlers=demo_handlers or None)


@app.command
def scheduler() -> None:
    """Promote due retries, reap expired leases, re-publish lost hints (needs POSTGRES_DSN).

    Example: POSTGRES_DSN=postgresql://postgres@localhost/taskforge taskforge scheduler
    """
    _run("scheduler", Backend.POSTGRES_REDIS, {"scheduler"})


@app.command
def migrate() -> None:
    """Apply pending database migrations to POSTGRES_DSN (safe to run from several processes).

    Example: POSTGRES_DSN=postgresql://postgres@localhost/taskforge taskforge migrate
    """
    from taskforge.adapters.postgres.migrations import MigrationError, apply_migrations
    from taskforge.domain.errors import Unavailable

    settings = _settings({})
    dsn = settings.require_postgres("migrate")
    try:
        applied = asyncio.run(apply_migrations(dsn))
    except MigrationError as exc:
        print(f"taskforge migrate: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except (Unavailable, OSError) as exc:
        print(f"taskforge migrate: cannot reach Postgres: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if applied:
        print(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        print("database is up to date")


@app.command
def bench(
    quick: Annotated[bool, Parameter(help="Small sizes: finishes in well under a minute")] = False,
    out: Annotated[str, Parameter(help="Where to write the JSON report")] = "bench-results.json",
    runs: Annotated[
        int,
        Parameter(
            help="Run every scenario this many times and report the medians",
            validator=validators.Number(gte=1),
        ),
    ] = 1,
) -> None:
    """Benchmark enqueue, drain and latency on POSTGRES_DSN and Redis, in a scratch database.

    Example: POSTGRES_DSN=postgresql://postgres@localhost/postgres taskforge bench --quick
    """
    from pathlib import Path

    from taskforge.entrypoints.bench import main as bench_main

    settings = _settings({})
    settings.require_postgres("bench")
    raise SystemExit(bench_main(settings, quick, Path(out), runs))


RESTART_EXIT_CODE = 75
"""A worker stopped by itself and needs a new process (EX_TEMPFAIL: try again)."""


def main() -> None:
    try:
        app()
    except ConfigError as exc:
        print(f"taskforge: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except TooManyAbandonedThreads:  # already logged by the worker, with the reason
        raise SystemExit(RESTART_EXIT_CODE) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
