"""TaskForge: a fault-tolerant distributed job queue and scheduler.

This module is the public surface for people who write job handlers::

    import taskforge

    @taskforge.handler("email")
    async def send_email(ctx: taskforge.JobContext) -> None:
        await deliver(ctx.payload["to"])

Point workers at the module that registers them: `taskforge worker --handlers myapp.jobs`
(or TASKFORGE_HANDLERS=myapp.jobs). Raise `taskforge.TerminalError` when a retry cannot
help; any other exception is retried with the job's backoff policy.
"""

from taskforge.application.handlers import (
    HandlerRegistry,
    JobContext,
    JobHandler,
    TerminalError,
    UnknownJobType,
    default_registry,
)

__all__ = [
    "HandlerRegistry",
    "JobContext",
    "JobHandler",
    "TerminalError",
    "UnknownJobType",
    "default_registry",
    "handler",
    "register",
]

handler = default_registry.handler
"""Decorator: `@taskforge.handler("email")` registers a function for that jobType."""

register = default_registry.register
"""`taskforge.register("email", send_email)`: the explicit form of `handler`."""
