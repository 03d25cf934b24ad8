"""TaskForge: a fault-tolerant distributed job queue and scheduler.

This module is the public surface for people who write job handlers::

    import taskforge

    @taskforge.handler("email")
    async def send_email(ctx: taskforge.JobContext) -> None:
        await deliver(ctx.payload["to"])

Point workers at the module that registers them: `taskforge worker --handlers myapp.jobs`
(or TASKFORGE_HANDLERS=myapp.jobs). Raise `taskforge.TerminalError` when a retry cannot
help; any other exception is retried with the job's backoff policy. `raise
taskforge.Snooze(seconds)` runs the job again later without using an attempt.
`@taskforge.on_failure` registers `hook(ctx, exc, dead_lettered)`, which workers call after
an attempt fails (to report it to Sentry, say).

To enqueue from Python, `taskforge.Client` (asyncio) and `taskforge.SyncClient` talk to the
API; they and their errors (`taskforge.ClientError` and its subclasses) load on first use.
`taskforge.enqueue(conn, ...)` and `taskforge.enqueue_many(conn, ...)` store jobs through the
application's own Postgres connection, inside its transaction (asyncpg or psycopg 3).
`@taskforge.task("email", queue="mail")` declares a job type once (handler, queue, policy,
payload type) and enqueues it through either: `await send_email.enqueue(client, email)`.

Periodic jobs are declared beside their handlers: `@taskforge.periodic("*/5 * * * *")` on a
handler, or `taskforge.schedule(name, cron, job_type, payload)`; a worker or scheduler
that loads the module upserts them when it starts.

To unit-test a handler, `taskforge.testing.perform(send_email, {"to": "a@b.com"})` runs one
job through it as a worker would, without a backend, and returns its result as stored;
`taskforge.testing.InMemoryTaskForge` runs the API, a worker and a scheduler in the test's
event loop, with a client and `drain()`.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskforge.application.handlers import (
        HandlerRegistry,
        JobContext,
        JobHandler,
        Snooze,
        TerminalError,
        UnknownJobType,
        default_registry,
    )
    from taskforge.application.periodic import periodic, schedule
    from taskforge.client import (
        Client,
        ClientClosed,
        ClientError,
        ConnectionFailed,
        InvalidResponse,
        InvalidTransition,
        JobFailed,
        JobNotFound,
        ScheduleNotFound,
        SyncClient,
        Unauthorized,
        Unavailable,
        ValidationError,
        WaitTimeout,
    )
    from taskforge.sdk import Task, TaskDefaults, enqueue, enqueue_many, task

    handler = default_registry.handler
    on_failure = default_registry.on_failure
    register = default_registry.register

_HANDLER_NAMES = frozenset(
    {"HandlerRegistry", "JobContext", "JobHandler", "Snooze", "TerminalError", "UnknownJobType"}
)
_PERIODIC_NAMES = frozenset({"periodic", "schedule"})
_SDK_NAMES = frozenset({"Task", "TaskDefaults", "enqueue", "enqueue_many", "task"})
_CLIENT_NAMES = frozenset(
    {
        "Client",
        "ClientClosed",
        "ClientError",
        "ConnectionFailed",
        "InvalidResponse",
        "InvalidTransition",
        "JobFailed",
        "JobNotFound",
        "ScheduleNotFound",
        "SyncClient",
        "Unauthorized",
        "Unavailable",
        "ValidationError",
        "WaitTimeout",
    }
)

__all__ = [
    "Client",
    "ClientClosed",
    "ClientError",
    "ConnectionFailed",
    "HandlerRegistry",
    "InvalidResponse",
    "InvalidTransition",
    "JobContext",
    "JobFailed",
    "JobHandler",
    "JobNotFound",
    "ScheduleNotFound",
    "Snooze",
    "SyncClient",
    "Task",
    "TaskDefaults",
    "TerminalError",
    "Unauthorized",
    "Unavailable",
    "UnknownJobType",
    "ValidationError",
    "WaitTimeout",
    "default_registry",
    "enqueue",
    "enqueue_many",
    "handler",
    "on_failure",
    "periodic",
    "register",
    "schedule",
    "task",
]


def __getattr__(name: str) -> Any:
    """Every public name loads on first use: a worker importing `taskforge` does not pay for
    httpx, nor `taskforge-cli` (which lives in this package) for the handler machinery.

    `handler` is the decorator `@taskforge.handler("email")` that registers a function for
    that jobType; `register("email", send_email)` is its explicit form. `@taskforge.on_failure`
    registers a function workers call with the exception when an attempt fails."""
    if name in _HANDLER_NAMES:
        from taskforge.application import handlers

        return getattr(handlers, name)
    if name in ("default_registry", "handler", "on_failure", "register"):
        from taskforge.application.handlers import default_registry

        if name == "default_registry":
            return default_registry
        return getattr(default_registry, name)
    if name in _PERIODIC_NAMES:
        from taskforge.application import periodic

        return getattr(periodic, name)
    if name in _CLIENT_NAMES:
        from taskforge import client

        return getattr(client, name)
    if name in _SDK_NAMES:
        from taskforge import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'taskforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    """What `dir(taskforge)` and a REPL's completion show: the public names, loaded or not."""
    return sorted({*globals(), *__all__})
