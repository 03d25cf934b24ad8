"""Process roles: API, worker, scheduler, and all three in one (`dev`), with signal handling.

SIGTERM or SIGINT asks for a graceful stop (workers finish or hand back their jobs); a
second signal exits at once, leaving leases for the scheduler to recover.
Longer than most modules: what every role does around its work (signals, handler modules,
declared schedules, the listening socket, waiting for the store), each a short function
that the roles share.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import importlib
import logging
import os
import signal
import socket
import sys
import traceback
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from dishka import AsyncContainer
from dishka.exceptions import NoFactoryError

from taskforge.adapters.cron import CronsimCalendar
from taskforge.adapters.jsonb import stored_json
from taskforge.adapters.redis.checks import (
    START_CHECK_TIMEOUT,
    Refusal,
    refusal,
    warn_about_eviction,
)
from taskforge.adapters.telemetry.tracing import OpenTelemetryTracing
from taskforge.application.handlers import DeclarationError, HandlerRegistry, default_registry
from taskforge.application.metrics_publisher import MetricsPublisher
from taskforge.application.periodic import default_schedules
from taskforge.application.ports import JobNotices, JobStore
from taskforge.application.scheduler import (
    SchedulerSettings,
    SchedulerTick,
    listen_for_new_jobs,
    run_scheduler,
)
from taskforge.application.schedules import DeclareSchedules
from taskforge.application.timing import settle_within, sleep_unless
from taskforge.application.worker import Worker
from taskforge.domain.errors import Unavailable, ValidationError
from taskforge.domain.schedule import ScheduleDefinition
from taskforge.entrypoints.config import (
    Address,
    ConfigError,
    Settings,
    masked_dsn,
    module_name_hint,
    without_password,
)
from taskforge.entrypoints.demo_handlers import demo_registry

if TYPE_CHECKING:
    from redis.asyncio import Redis

T = TypeVar("T")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when it is installed (the `fast` extra), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


LEFTOVER_TASK_GRACE = 1.0
"""Seconds the tasks still running when a service's roles have stopped get to end once
cancelled."""


def run_service(main: Coroutine[Any, Any, None]) -> None:
    """`run_event_loop` for a service process. When `main` has returned, the tasks still
    running are cancelled and given LEFTOVER_TASK_GRACE; one that ignores its cancellation
    (an async handler that swallows it: the worker has handed its job back) does not keep
    the process alive, as the event loop's own close would by waiting for it for ever."""
    run_event_loop(_leaving_stuck_tasks(main))


async def _leaving_stuck_tasks(main: Coroutine[Any, Any, None]) -> None:
    await main
    current = asyncio.current_task()
    leftovers = [task for task in asyncio.all_tasks() if task is not current]
    if not leftovers:
        return
    for task in leftovers:
        task.cancel()
    _, stuck = await asyncio.wait(leftovers, timeout=LEFTOVER_TASK_GRACE)
    if stuck:
        log.warning(
            "exiting with %d task(s) that did not stop when cancelled (%s)",
            len(stuck),
            ", ".join(sorted(task.get_name() for task in stuck)),
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # the roles have stopped: nothing else is left to finish


def signal_exit_code(sig: signal.Signals) -> int:
    """The shell's convention for a process ended by `sig`: 128 + its number (130 for
    SIGINT, 143 for SIGTERM)."""
    return 128 + int(sig)


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped a run after its cleanup; `exit_code` is the signal's
    (`signal_exit_code`)."""

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(f"interrupted by {sig.name}")
        self.signal = sig
        self.exit_code = signal_exit_code(sig)


def run_until_interrupted(main: Coroutine[Any, Any, T]) -> T:
    """`run_event_loop` for a run that owns processes and data: SIGINT or SIGTERM cancels
    `main`, so its `finally` blocks remove what it made, then raises `Interrupted`. A further
    signal does not cut that cleanup short (it is bounded: processes get SIGTERM, then
    SIGKILL)."""
    return run_event_loop(_cancelled_by_signals(main))


async def _cancelled_by_signals(main: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if not received:
            task.cancel()
        received.append(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        result = await main
    except asyncio.CancelledError:
        if received:
            raise Interrupted(received[0]) from None
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if received:  # `main` swallowed the cancellation: the signal still ends the run
        raise Interrupted(received[0])
    return result


log = logging.getLogger("taskforge.runtime")


class StopSignals:
    """First SIGTERM/SIGINT sets `stop`; the second ends the process immediately, with that
    signal's exit code (`signal_exit_code`: 143 for SIGTERM, 130 for SIGINT)."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self._received = 0

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._received += 1
        if self._received == 1:
            log.info("received %s: stopping gracefully (send again to force)", sig.name)
            self.stop.set()
        else:
            log.warning("received %s again: exiting now", sig.name)
            os._exit(signal_exit_code(sig))


class HandlerModuleError(Exception):
    """A handler module that cannot be imported; the message is the one line shown."""


def load_handlers(modules: tuple[str, ...], demo: bool) -> HandlerRegistry:
    """Import the user's handler modules (they register into `taskforge.handler`).

    As Celery, RQ and Dramatiq do, the current directory goes first on the import path
    when there are modules to import, so `--handlers myjobs` finds `./myjobs.py`. With
    `demo`, the demo handlers serve the job types the user's modules leave free: a module
    may register its own `email` in dev mode.
    """
    if modules:
        _put_current_directory_on_path()
    for module in modules:
        _import_handler_module(module)
    registry = HandlerRegistry()
    registry.merge(default_registry)
    if demo:
        demos = demo_registry()
        for job_type in demos:
            if job_type in registry:
                log.info("jobType %r runs your handler instead of the demo one", job_type)
            else:
                registry.register(job_type, demos.get(job_type))
    return registry


def serving_declared_queues(settings: Settings, handlers: HandlerRegistry) -> Settings:
    """A worker not told its queues (--queues, WORKER_QUEUES) serves the queues its handlers
    declare (typed tasks' `queue=`; QUEUE_NAME for handlers that declare none)."""
    declared = handlers.queues(settings.queue_name)
    if settings.worker_queues or not declared:
        return settings
    return dataclasses.replace(settings, worker_queues=declared)


def _put_current_directory_on_path() -> None:
    # "" is the current directory as `python -c` and `python -m` put it on the path.
    directory = os.getcwd()
    if directory not in sys.path and "" not in sys.path:
        sys.path.insert(0, directory)


def _import_handler_module(module: str) -> None:
    """Missing or broken imports become a HandlerModuleError; an exception raised by the
    module's own code keeps its traceback (that is a bug to debug), with a note naming it."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or module
        if module == missing or module.startswith(missing + "."):
            raise HandlerModuleError(
                f"cannot import handler module {module!r}: no module named {missing!r} in the"
                f" current directory ({os.getcwd()}) or the installed packages"
                + module_name_hint(module)
            ) from None
        raise HandlerModuleError(
            f"cannot import handler module {module!r}: it imports {missing!r},"
            " which is not installed"
        ) from None
    except (ImportError, SyntaxError) as exc:
        raise HandlerModuleError(
            f"cannot import handler module {module!r}: {type(exc).__name__}: {exc}"
        ) from None
    except DeclarationError as exc:
        # A declaration TaskForge refuses (a job type registered twice, a task's policy out
        # of range) says what is wrong; where it was written is the one frame left to show.
        raise HandlerModuleError(f"handler module {module!r}, {_declared_at(exc)}: {exc}") from None
    except Exception as exc:
        exc.add_note(f"(raised while importing handler module {module!r})")
        raise


def _declared_at(exc: BaseException) -> str:
    """The file and line outside TaskForge and the import machinery that the exception was
    raised through last: the declaration in the user's module."""
    folders = (*_taskforge_folders(), os.path.dirname(os.path.realpath(importlib.__file__)))
    skipped = tuple(folder + os.sep for folder in folders)
    outside = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen ")
        and not os.path.realpath(frame.filename).startswith(skipped)
    ]
    if not outside:
        return "at import"
    frame = outside[-1]
    return f"{os.path.relpath(frame.filename)}:{frame.lineno}"


def _taskforge_folders() -> tuple[str, ...]:
    """Where TaskForge's own code is: the package folder, and each of its subpackages where
    it really is (in a source checkout they are links to folders beside it, among which a
    project's own modules may live)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with os.scandir(package) as entries:
        subpackages = [os.path.realpath(entry.path) for entry in entries if entry.is_dir()]
    return (os.path.realpath(package), *subpackages)


def declared_schedules(settings: Settings, handlers: HandlerRegistry) -> list[ScheduleDefinition]:
    """The schedules the handler modules declared (`@taskforge.periodic`,
    `taskforge.schedule`), each checked, cron expression included: a bad one is a
    HandlerModuleError naming it, before the process starts anything."""
    calendar = CronsimCalendar()
    try:
        definitions = default_schedules.definitions(
            settings.queue_name, settings.job_timeout, handlers
        )
        for definition in definitions:
            try:
                calendar.check(definition.cron)
                _check_json_payload(definition.payload)
            except ValidationError as exc:
                raise DeclarationError(
                    f"schedule {definition.name!r} declared in code: {exc}"
                ) from None
    except DeclarationError as exc:
        raise HandlerModuleError(str(exc)) from None
    return definitions


def _check_json_payload(payload: object) -> None:
    """A ValidationError naming the payload when it holds a value with no JSON text (an
    object msgspec cannot write), which storing the schedule would otherwise find."""
    try:
        stored_json(payload)
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError) as exc:
        raise ValidationError("payload", f"must be JSON: {exc}") from None


async def declare_schedules(container: AsyncContainer, role: str) -> None:
    """Upsert the schedules declared in code, as this worker or scheduler starts. When the
    store fails meanwhile, the schedules stay as they were (the next start declares them)."""
    settings = await container.get(Settings)
    handlers = await container.get(HandlerRegistry)
    definitions = declared_schedules(settings, handlers)
    if not definitions:
        return
    declare = await container.get(DeclareSchedules)
    try:
        await declare(definitions)
    except Unavailable as exc:
        log.error("%s could not declare its %d schedule(s): %s", role, len(definitions), exc)


class ListenError(Exception):
    """HTTP_ADDR or METRICS_ADDR cannot be listened on (taken, not local, no permission): one
    line."""


def listening_socket(address: Address) -> socket.socket:
    """A TCP socket bound to `address`, bound as uvicorn binds (SO_REUSEADDR), or ListenError.
    Bound before anything else starts, so a taken port stops the process at once."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        raise _cannot_listen(address, exc, "HTTP_ADDR (or --addr for taskforge dev)") from None
    sock.set_inheritable(True)
    return sock


def _cannot_listen(address: Address, exc: OSError, setting: str) -> ListenError:
    reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
    return ListenError(
        f"cannot listen on {address}: {reason or exc}; choose another address with {setting}"
    )


async def serve_http(
    container: AsyncContainer, settings: Settings, stop: asyncio.Event, sock: socket.socket
) -> None:
    """Serve the API on `sock` (from `listening_socket`) until `stop`."""
    # The web framework and the server load here, in the API's process only: a worker or
    # a scheduler starts without them.
    import uvicorn

    from taskforge.entrypoints.http.app import create_app
    from taskforge.entrypoints.http.server import SignalFreeServer, bounded_protocol

    app = create_app(container, settings)
    config = uvicorn.Config(
        app,
        host=settings.http_addr.host,
        port=settings.http_addr.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        http=bounded_protocol(settings),
    )
    server = SignalFreeServer(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    # uvicorn says where it listens only when it binds the socket itself.
    log.info("API listening on http://%s (docs at /schema)", settings.http_addr)
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if serving in done:
        stopping.cancel()
        serving.result()
        if not server.started:
            raise SystemExit(f"could not serve HTTP on {settings.http_addr}")
        return
    server.should_exit = True
    await serving


REDIS_RECHECK_INTERVAL = 5.0


async def check_redis(container: AsyncContainer, stop: asyncio.Event | None = None) -> bool:
    """The Redis adapter's start-up checks, when this process has a Redis (dev has none).
    Each try is bounded: a Redis that does not answer must not hold up the roles (the API
    serves /healthz meanwhile); they wait for it as during any outage. With `stop` (beside
    the roles), one that did not answer, or whose answer came late because the start-up
    kept the process busy, is asked again every REDIS_RECHECK_INTERVAL until it answers or
    `stop` is set, so a setting it refuses still ends the process; without, it is asked
    once. True when the checks are done (Redis answered, or there is none); False when it
    did not answer or `stop` came first."""
    from redis.asyncio import Redis

    try:
        client = await container.get(Redis)
    except NoFactoryError:  # no Redis in this process (dev): nothing to check
        return True
    while True:
        try:
            async with asyncio.timeout(START_CHECK_TIMEOUT):
                if (refused := await refusal(client)) is None:
                    await warn_about_eviction(client)
            break
        except TimeoutError:
            log.debug("Redis did not answer the start-up checks within %gs", START_CHECK_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - away: the roles wait for it
            log.debug("could not reach Redis at start-up: %s", exc)
        if stop is None:
            return False
        await sleep_unless(stop, REDIS_RECHECK_INTERVAL)
        if stop.is_set():
            return False
    if refused is not None:
        raise refusal_error(refused, client)
    return True


def refusal_error(refused: Refusal, client: Redis) -> ConfigError:
    """The setting Redis refuses for good, as the one line a role stops with (the benchmark
    says the same)."""
    if refused.setting == "REDIS_DB":
        database = client.connection_pool.connection_kwargs.get("db", 0)
        return ConfigError(
            "REDIS_DB",
            str(database),
            f"the Redis server refuses it ({refused.reason}): its `databases` setting is lower",
        )
    if refused.setting == "REDIS_ADDR":
        options = client.connection_pool.connection_kwargs
        if options.get("host") is None:  # Sentinels named the server
            return ConfigError(
                "REDIS_SENTINELS",
                None,
                f"the master they name does not speak the Redis protocol ({refused.reason})",
            )
        return ConfigError(
            "REDIS_ADDR",
            f"{options['host']}:{options.get('port')}",
            f"the server there does not speak the Redis protocol ({refused.reason})",
        )
    if refused.setting == "REDIS_TLS":
        return ConfigError("REDIS_TLS", None, refused.reason)
    # The password itself is never shown.
    return ConfigError(refused.setting, None, f"the Redis server refuses it ({refused.reason})")


STORE_CHECK_TIMEOUT = 5.0
STORE_RECHECK_INTERVAL = 5.0


async def wait_for_store(container: AsyncContainer, role: str, stop: asyncio.Event) -> bool:
    """Check the job store (reachable, schema current) until it passes; False when `stop`
    comes first. Why it fails is logged once, as one line (again only when the reason
    changes), and its passing after that: a process started before the database was
    created or migrated waits and starts by itself, rather than exiting into a restart loop
    that would repeat the same line."""
    settings = await container.get(Settings)
    jobs = await container.get(JobStore)
    dsn = settings.postgres_dsn
    store = f"Postgres at {masked_dsn(dsn)}" if dsn else "the job store"
    reported: str | None = None
    while not stop.is_set():
        [outcome] = await settle_within(STORE_CHECK_TIMEOUT, [jobs.ping()])
        if not isinstance(outcome, BaseException):
            if reported is not None:
                log.info("%s: %s is ready now", role, store)
            return True
        reason = _why(outcome, dsn)
        if reason != reported:
            log.error(
                "%s cannot use %s: %s (re-checking every %gs)",
                role,
                store,
                reason,
                STORE_RECHECK_INTERVAL,
            )
            reported = reason
        await sleep_unless(stop, STORE_RECHECK_INTERVAL)
    return False


def _why(exc: BaseException, dsn: str | None) -> str:
    if isinstance(exc, Unavailable):
        reason = exc.cause
    elif isinstance(exc, TimeoutError):
        reason = f"no answer within {STORE_CHECK_TIMEOUT:g}s"
    else:
        reason = str(exc) or type(exc).__name__
    return without_password(reason, dsn)


async def report_store(container: AsyncContainer, stop: asyncio.Event) -> None:
    """The API's start-up check. The API serves meanwhile (/readyz and the data routes
    answer 503 with the reason); this only puts the reason in the log."""
    await wait_for_store(container, "api", stop)


async def work(container: AsyncContainer, settings: Settings, stop: asyncio.Event) -> None:
    """Once the job store passes its check, run a worker until `stop`, publishing its
    metrics to the cluster-wide store every METRICS_FLUSH_INTERVAL; the last flush follows
    the worker's drain."""
    if not await wait_for_store(container, "worker", stop):
        return
    await declare_schedules(container, "worker")
    _warn_when_no_handler(settings, await container.get(HandlerRegistry))
    worker = await container.get(Worker)
    publisher = await container.get(MetricsPublisher)
    log.info(
        "worker serving %s with %d slot(s)", ",".join(settings.queues), settings.worker_concurrency
    )
    worker_stopped = asyncio.Event()
    publishing = asyncio.create_task(publisher.run(worker_stopped), name="metrics-publisher")
    try:
        await worker.run(stop)
    finally:
        worker_stopped.set()
        await publishing


SHORT_TOKEN = 16
"""An API_TOKEN shorter than this many characters is warned about at start."""


def warn_when_token_is_short(settings: Settings) -> None:
    """The API does not slow down guesses of its bearer token (a lockout would also stop
    every producer behind the guesser's address): the token itself must be too long to guess.
    Said once as the API starts; its length, never its value."""
    token = settings.api_token
    if token is not None and len(token) < SHORT_TOKEN:
        log.warning(
            "API_TOKEN is %d characters long: the API does not slow down guesses of its bearer"
            " token, so give it a long random one (openssl rand -hex 32)",
            len(token),
        )


def _warn_when_no_handler(settings: Settings, handlers: HandlerRegistry) -> None:
    """A worker without a handler runs no job: every job it pops is handed back. Said as it
    starts working (after every start-up check), naming why: modules that register none,
    or none given at all."""
    if any(True for _ in handlers):
        return
    if settings.handlers:
        why = (
            f"handler module(s) {', '.join(settings.handlers)} registered no handler"
            " (@taskforge.handler or @taskforge.task)"
        )
    else:
        why = (
            "no handler module given (--handlers or TASKFORGE_HANDLERS; --demo-handlers for"
            " the demo handlers)"
        )
    log.warning("%s: this worker runs no job; every job it pops is handed back", why)


async def schedule(container: AsyncContainer, stop: asyncio.Event) -> None:
    """Once the job store passes its check, tick until `stop`, and at once when jobs an
    application committed itself (transactional enqueue) wait for their hints."""
    if not await wait_for_store(container, "scheduler", stop):
        return
    await declare_schedules(container, "scheduler")
    tick = await container.get(SchedulerTick)
    notices = await container.get(JobNotices | None)
    woken = asyncio.Event()
    listening = (
        None
        if notices is None
        else asyncio.create_task(listen_for_new_jobs(notices, woken, stop), name="job-notices")
    )
    try:
        await run_scheduler(tick, await container.get(SchedulerSettings), stop, woken)
    finally:
        if listening is not None:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening


async def serve_process_metrics(container: AsyncContainer, settings: Settings) -> None:
    """This process's own metrics on METRICS_ADDR, for scraping each worker and scheduler."""
    if settings.metrics_addr is None:
        return
    from prometheus_client import start_http_server

    from taskforge.adapters.telemetry.metrics import PrometheusMetrics

    metrics = await container.get(PrometheusMetrics)
    address = settings.metrics_addr
    try:
        start_http_server(  # a thread of its own; the recorder it reads is thread-safe
            address.port, addr=address.host, registry=metrics.registry
        )
    except OSError as exc:  # taken, not local, a name that does not resolve
        raise _cannot_listen(address, exc, "METRICS_ADDR") from None
    log.info("process metrics on http://%s/metrics", address)


async def run_roles(container: AsyncContainer, settings: Settings, roles: set[str]) -> None:
    """Run the given roles ("api", "worker", "scheduler") until a stop signal. ListenError
    before anything starts when the API's address cannot be listened on."""
    sock = listening_socket(settings.http_addr) if "api" in roles else None
    if sock is not None:
        warn_when_token_is_short(settings)
    signals = StopSignals()
    signals.install()
    tracing = await container.get(OpenTelemetryTracing | None)
    if tracing is not None:
        tracing.install()
    if "api" not in roles:
        await serve_process_metrics(container, settings)
    tasks: list[asyncio.Task[Any]] = []
    try:
        # A REDIS_DB the server does not have ends the process (ConfigError) as a port taken
        # does. A worker or a scheduler checks before it works, so that line is all it
        # prints; the API checks beside its serving (/healthz answers meanwhile), as do the
        # others when Redis did not answer in time.
        checked = "api" not in roles and await check_redis(container)
        if not checked:
            tasks.append(
                asyncio.create_task(check_redis(container, signals.stop), name="redis-check")
            )
        if "scheduler" in roles:
            tasks.append(asyncio.create_task(schedule(container, signals.stop), name="scheduler"))
        if "worker" in roles:
            tasks.append(
                asyncio.create_task(work(container, settings, signals.stop), name="worker")
            )
        if sock is not None:
            tasks.append(
                asyncio.create_task(serve_http(container, settings, signals.stop, sock), name="api")
            )
            if roles == {"api"}:
                tasks.append(asyncio.create_task(report_store(container, signals.stop)))
        # One role failing for good (e.g. the port is taken) stops the others.
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                signals.stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            task.result()
    finally:
        await container.close()
