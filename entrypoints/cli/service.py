"""`taskforge`: run the service roles, migrate the database, benchmark.

Longer than most modules: every command of the service with its options and their help
text (the benchmark's sizes alone take a screen), each command a few lines that hand over to
`runtime`, `migrations` or `bench`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from cyclopts import App, Parameter, Token, validators
from cyclopts.exceptions import CycloptsError, UnknownOptionError

from taskforge.adapters.telemetry.logging import configure_logging
from taskforge.application.handlers import HandlerRegistry
from taskforge.application.worker import TooManyAbandonedThreads
from taskforge.domain.validation import whole_number
from taskforge.domain.version import taskforge_version
from taskforge.entrypoints.config import (
    MAX_RETENTION_PERIOD,
    Address,
    ConfigError,
    Settings,
    masked_dsn,
    parse_address,
    without_password,
)
from taskforge.entrypoints.container import Backend, make_container, serves_metrics
from taskforge.entrypoints.runtime import (
    HandlerModuleError,
    Interrupted,
    ListenError,
    check_redis,
    declared_schedules,
    listening_socket,
    load_handlers,
    report_store,
    run_event_loop,
    run_roles,
    run_service,
    serving_declared_queues,
    warn_when_token_is_short,
)

if TYPE_CHECKING:
    from pathlib import Path

T = TypeVar("T")

DEV_HTTP_ADDR = Address("127.0.0.1", 8080)
"""`taskforge dev` listens on this machine only unless told otherwise: it runs without a token."""

app = App(
    name="taskforge",
    help="TaskForge: a fault-tolerant distributed job queue and scheduler.",
    version=taskforge_version,
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
    configure_logging(settings.log_level, settings.log_format)
    handlers = load_handlers(settings.handlers, settings.demo_handlers or role == "dev")
    settings = serving_declared_queues(settings, handlers)
    if roles & {"worker", "scheduler"}:
        declared_schedules(settings, handlers)  # a bad declaration stops the start here
    container = make_container(
        settings, backend, handlers, prometheus=serves_metrics(settings, roles)
    )
    run_service(run_roles(container, settings, roles))


_FLAG_OF = {
    "WORKER_QUEUES": "--queues",
    "WORKER_CONCURRENCY": "--concurrency",
    "TASKFORGE_HANDLERS": "--handlers",
}
"""The command-line option that stands for each variable `flags` may carry."""


def _settings(overrides: dict[str, object], flags: dict[str, str] | None = None) -> Settings:
    """The settings from the environment, `flags` (options, as the variables they stand for)
    taking precedence. A bad option is named as given (`--concurrency`, not the variable),
    and one given empty is refused: as a variable it would read as not set at all."""
    import dataclasses

    flags = flags or {}
    for variable, value in flags.items():
        if not any(part.strip() for part in value.split(",")):
            raise ConfigError(
                _FLAG_OF[variable], value, "expected a value (leave it out for the default)"
            )
    try:
        settings = Settings.from_env({**os.environ, **flags})
    except ConfigError as exc:
        if exc.variable not in flags:
            raise
        raise ConfigError(_FLAG_OF[exc.variable], flags[exc.variable], exc.allowed) from None
    changes = {key: value for key, value in overrides.items() if value is not None}
    return dataclasses.replace(settings, **changes) if changes else settings  # type: ignore[arg-type]


def dev_http_addr(flag: str | None, env: Mapping[str, str]) -> Address | None:
    """Where `taskforge dev` listens: --addr, else HTTP_ADDR (None: the settings read it),
    else 127.0.0.1:8080. An --addr given empty is refused, as the other options are: it
    would read as left out."""
    if flag is not None:
        if not flag.strip():
            raise ConfigError("--addr", flag, "expected a value (leave it out for the default)")
        return parse_address("--addr", flag)
    if env.get("HTTP_ADDR", "").strip():
        return None
    return DEV_HTTP_ADDR


Handlers = Annotated[
    str | None,
    Parameter(
        help="Modules that register handlers, comma-separated; the current directory is"
        " searched first (default TASKFORGE_HANDLERS)"
    ),
]


@app.command
def dev(
    addr: Annotated[
        str | None,
        Parameter(
            help="Listen address (default HTTP_ADDR, else 127.0.0.1:8080); :8080 listens on "
            "every interface"
        ),
    ] = None,
    handlers: Handlers = None,
) -> None:
    """API, worker and scheduler in one process on the in-memory backend; nothing to install.

    The demo handlers (email, noop, sleep, fail) are always there; a job type your
    --handlers modules also register runs your handler.

    Example: taskforge dev --addr :8080 --handlers myjobs   (reachable from other machines)
    """
    http_addr = dev_http_addr(addr, os.environ)
    flags = {"TASKFORGE_HANDLERS": handlers} if handlers is not None else None
    _run("dev", Backend.MEMORY, {"api", "worker", "scheduler"}, flags, http_addr=http_addr)


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

    from taskforge.entrypoints.http.server import BoundedHttpProtocol

    settings.require_postgres("api")
    # uvicorn binds again in its supervisor; this only turns a taken port into one line.
    listening_socket(settings.http_addr).close()
    configure_logging(settings.log_level, settings.log_format)
    warn_when_token_is_short(settings)
    # As one API process checks Redis (run_roles), before the processes are forked: a
    # REDIS_DB the server does not have is one line and exit code 2 here too.
    run_event_loop(_checked_redis(settings))
    # TaskForge's own line, as one API process writes it, in place of uvicorn's (whose
    # "Press CTRL+C to quit" misleads under systemd or Kubernetes).
    logging.getLogger("uvicorn.error").addFilter(_without_uvicorn_running_on)
    logging.getLogger("taskforge.runtime").info(
        "API listening on http://%s (docs at /schema), %d processes",
        settings.http_addr,
        settings.api_workers,
    )
    with _store_reported(settings):
        uvicorn.run(
            "taskforge.entrypoints.http.asgi:app_from_environment",
            factory=True,
            host=settings.http_addr.host,
            port=settings.http_addr.port,
            workers=settings.api_workers,
            log_config=None,
            access_log=False,
            server_header=False,
            http=BoundedHttpProtocol,  # each process sets its limits from the environment
        )


def _without_uvicorn_running_on(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Uvicorn running on")


@contextlib.contextmanager
def _store_reported(settings: Settings) -> Iterator[None]:
    """The API's start-up check, as one API process runs it beside its serving, run by the
    supervising process on a thread of its own while the block runs: why the API processes
    cannot use Postgres (schema behind, database missing) is logged once for all of them,
    and so is its passing."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    checking = threading.Thread(
        target=loop.run_until_complete,
        args=(_report_store(settings, stop),),
        name="store-check",
        daemon=True,
    )
    checking.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        # A check under way against a database that does not answer must not hold up the
        # exit: the thread is a daemon, left to end with the process.
        checking.join(STORE_CHECK_STOP_WAIT)
        if not checking.is_alive():
            loop.close()


STORE_CHECK_STOP_WAIT = 5.0
"""At shutdown, how long the supervising process waits for its store check to end."""


async def _report_store(settings: Settings, stop: asyncio.Event) -> None:
    container = make_container(settings, Backend.POSTGRES_REDIS, HandlerRegistry())
    try:
        await report_store(container, stop)
    finally:
        await container.close()


async def _checked_redis(settings: Settings) -> None:
    container = make_container(settings, Backend.POSTGRES_REDIS, HandlerRegistry())
    try:
        await check_redis(container)
    finally:
        await container.close()


@app.command
def worker(
    queues: Annotated[
        str | None,
        Parameter(
            help="Comma-separated queues (default WORKER_QUEUES, else the queues the --handlers"
            " tasks declare, else QUEUE_NAME)"
        ),
    ] = None,
    # Text, read as WORKER_CONCURRENCY is: as an int, cyclopts would round 2.5 to 2 slots.
    concurrency: Annotated[str | None, Parameter(help="Slots (default WORKER_CONCURRENCY)")] = None,
    handlers: Handlers = None,
    demo_handlers: Annotated[
        bool,
        Parameter(
            help="Also load the demo handlers (email, noop, sleep, fail) for the job"
            " types your modules leave free"
        ),
    ] = False,
    with_scheduler: Annotated[
        bool,
        Parameter(
            help="Also run a scheduler in this process (retries, delayed and periodic jobs,"
            " crashed workers' jobs), as `taskforge scheduler` does; any number may run"
        ),
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
    roles = {"worker", "scheduler"} if with_scheduler else {"worker"}
    _run("worker", Backend.POSTGRES_REDIS, roles, flags, demo_handlers=demo_handlers or None)


@app.command
def scheduler(handlers: Handlers = None) -> None:
    """Fire periodic jobs, promote due retries, reap expired leases, re-publish lost hints
    (needs POSTGRES_DSN and Redis). --handlers modules are loaded for the schedules they
    declare.

    Example: POSTGRES_DSN=postgresql://postgres@localhost/taskforge taskforge scheduler
    """
    flags = {"TASKFORGE_HANDLERS": handlers} if handlers is not None else None
    _run("scheduler", Backend.POSTGRES_REDIS, {"scheduler"}, flags)


@app.command
def migrate() -> None:
    """Apply pending database migrations (safe to run from several processes).

    Connects to POSTGRES_DIRECT_DSN, else POSTGRES_DSN: migrating holds a session-level
    lock, which a pooler in transaction mode cannot carry.

    Example: POSTGRES_DSN=postgresql://postgres@localhost/taskforge taskforge migrate
    """
    from taskforge.adapters.postgres.migrations import MigrationError, apply_migrations
    from taskforge.domain.errors import Unavailable

    settings = Settings.postgres_from_env(os.environ)
    dsn = settings.require_direct_postgres("migrate")

    def waiting(holders: list[int]) -> None:
        held_by = f" (Postgres backend pid {', '.join(map(str, holders))})" if holders else ""
        print(
            f"taskforge migrate: another migrate holds the migration lock{held_by}; "
            "waiting for it to finish",
            file=sys.stderr,
            flush=True,
        )

    try:
        applied = asyncio.run(apply_migrations(dsn, on_wait=waiting))
    except MigrationError as exc:
        print(f"taskforge migrate: {without_password(str(exc), dsn)}", file=sys.stderr)
        raise SystemExit(1) from None
    except Unavailable as exc:
        reason = without_password(exc.cause, dsn)
        print(f"taskforge migrate: cannot use {masked_dsn(dsn)}: {reason}", file=sys.stderr)
        raise SystemExit(1) from None
    if applied:
        print(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        print("database is up to date")


def _whole_number(type_: Any, tokens: Sequence[Token]) -> int:
    """A whole-number option as typed: cyclopts would round "1.5" to 2 and run that."""
    return whole_number(tokens[0].value)


def _count(help: str, least: int) -> Parameter:
    """An option counting something: a whole number from `least`."""
    return Parameter(help=help, converter=_whole_number, validator=validators.Number(gte=least))


@app.command
def bench(
    quick: Annotated[bool, Parameter(help="Small sizes: finishes in well under a minute")] = False,
    out: Annotated[str, Parameter(help="Where to write the JSON report")] = "bench-results.json",
    runs: Annotated[
        int, _count("Run every scenario this many times and report the medians", least=1)
    ] = 1,
    big_tables: Annotated[
        bool,
        Parameter(
            help="Measure reads, sweeps, a drain and latency on an empty database, fill it "
            "with --big-jobs jobs and --dead-letters, and measure again"
        ),
    ] = False,
    big_jobs: Annotated[
        int,
        _count("Jobs the big tables hold: 90% finished within retention, 10% delayed", least=10),
    ] = 1_000_000,
    dead_letters: Annotated[int, _count("Dead letters the big tables hold", least=0)] = 50_000,
    soak: Annotated[
        str | None,
        Parameter(
            help="Run load at half the measured drain rate for this long (300, 90s, 15m, 1h) "
            "with short retention, sampling memory, sizes and latency"
        ),
    ] = None,
    soak_retention: Annotated[
        float,
        Parameter(
            help="RETENTION_PERIOD during the soak, in seconds",
            # The soak's worker and scheduler read it as RETENTION_PERIOD: a value that
            # variable refuses would stop them at start, unseen, and the soak would wait
            # for its first job until it gave up.
            validator=validators.Number(gt=0, lte=MAX_RETENTION_PERIOD),
        ),
    ] = 60.0,
    soak_rate: Annotated[
        float | None,
        Parameter(
            help="Jobs per second during the soak instead of half the measured drain rate",
            validator=validators.Number(gt=0),
        ),
    ] = None,
    workers: Annotated[
        str,
        Parameter(
            help="Drain with each of these numbers of worker processes, as 1,2,4: the report"
            " shows the rate and the CPU share of Postgres and of the workers for each"
        ),
    ] = "1,2",
    api_workers: Annotated[
        str | None,
        Parameter(
            help="Run the HTTP scenarios against an API with each of these API_WORKERS, as "
            "1,2 (default: once, with the API_WORKERS of the environment)"
        ),
    ] = None,
) -> None:
    """Benchmark enqueue, drain and latency on POSTGRES_DSN and Redis, in a scratch database.

    Besides the JSON report it writes a PNG next to it (with the `bench` extra installed).

    Example: POSTGRES_DSN=postgresql://postgres@localhost/postgres taskforge bench --quick
    """
    from pathlib import Path

    from taskforge.bench.run import parse_worker_counts

    _check_report_path(Path(out))
    if soak is not None:
        from taskforge.bench.soak import SoakSettings, parse_duration
        from taskforge.bench.soak import main as soak_main

        try:
            duration = parse_duration(soak)
        except ValueError as exc:
            raise ConfigError("--soak", soak, str(exc)) from None
    try:
        worker_counts = parse_worker_counts(workers)
        api_worker_counts = (
            () if api_workers is None else parse_worker_counts(api_workers, "--api-workers")
        )
    except ValueError as exc:
        print(f"taskforge bench: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    settings = _settings({})
    settings.require_postgres("bench")
    from taskforge.bench.stack import cannot_use
    from taskforge.domain.errors import Unavailable

    try:
        if soak is not None:
            soak_settings = SoakSettings(
                duration=duration, retention=soak_retention, rate=soak_rate
            )
            raise SystemExit(
                soak_main(settings, soak_settings.quick() if quick else soak_settings, Path(out))
            )
        if big_tables:
            from taskforge.bench.scale import ScaleSizes
            from taskforge.bench.scale import main as scale_main

            sizes = ScaleSizes(jobs=big_jobs, dead_letters=dead_letters)
            raise SystemExit(scale_main(settings, sizes.quick() if quick else sizes, Path(out)))

        from taskforge.bench.run import main as bench_main

        raise SystemExit(
            bench_main(settings, quick, Path(out), runs, worker_counts, api_worker_counts)
        )
    except Unavailable as exc:  # a server it could not use; its scratch data is removed
        print(f"taskforge bench: {cannot_use(exc, settings)}", file=sys.stderr)
        raise SystemExit(1) from None


def _check_report_path(out: Path) -> None:
    """--out is written after the benchmark's first run: a path it cannot be written to is
    refused before anything starts, not found with a traceback after minutes of running."""
    folder = out.parent
    if out.is_dir():
        problem = "a folder; expected a file to write the report to"
    elif not folder.is_dir():
        problem = f"no folder {folder} to write the report in"
    elif not os.access(folder, os.W_OK | os.X_OK):
        problem = f"cannot write in {folder}"
    elif out.suffix == ".png":  # the picture, written next to the report, would replace it
        problem = (
            "its picture would be written over it (the report's name with .png); use another"
            " suffix, as .json"
        )
    else:
        return
    raise ConfigError("--out", str(out), problem)


LISTEN_OPTIONS = frozenset({"--port", "-p", "--host", "--bind", "-b"})
"""What other servers (uvicorn, flask run, gunicorn) take for where to listen."""

LISTEN_HINTS = {
    "dev": "; taskforge dev listens on --addr HOST:PORT (as --addr 127.0.0.1:9000)",
    "api": "; taskforge api listens on HTTP_ADDR (as HTTP_ADDR=0.0.0.0:9000 taskforge api)",
}


def _listen_hint(exc: CycloptsError) -> str:
    """Where the command does take its listen address, when `exc` refused another server's
    option for it: `--port` alone would not say that `--addr` or HTTP_ADDR is the way."""
    if not isinstance(exc, UnknownOptionError) or not exc.command_chain:
        return ""
    option = (exc.token.keyword or exc.token.value).partition("=")[0]
    if option not in LISTEN_OPTIONS:
        return ""
    return LISTEN_HINTS.get(exc.command_chain[-1], "")


RESTART_EXIT_CODE = 75
"""A worker stopped by itself and needs a new process (EX_TEMPFAIL: try again)."""


def main() -> None:
    try:
        app(print_error=False, exit_on_error=False)
    except CycloptsError as exc:  # an unknown command or option, a value of the wrong type
        shown = " ".join(str(exc).split())
        print(f"taskforge: {shown} (see --help){_listen_hint(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except (ConfigError, HandlerModuleError, ListenError) as exc:  # start-up errors
        print(f"taskforge: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except TooManyAbandonedThreads:  # already logged by the worker, with the reason
        raise SystemExit(RESTART_EXIT_CODE) from None
    except Interrupted as exc:  # a bench, after removing its processes and database
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
