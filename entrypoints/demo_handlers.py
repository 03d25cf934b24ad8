"""Demo handlers: on by default in `taskforge dev`, opt-in for workers (--demo-handlers)."""

from __future__ import annotations

import asyncio
import logging

from taskforge.application.handlers import HandlerRegistry, JobContext, TerminalError

log = logging.getLogger("taskforge.demo")


async def email(ctx: JobContext) -> None:
    """Logs the message it would send."""
    log.info(
        "would send email to %s",
        ctx.payload.get("to", "<nobody>"),
        extra={"job_id": str(ctx.job_id), "subject": ctx.payload.get("subject")},
    )


async def noop(ctx: JobContext) -> None:
    return None


async def sleep(ctx: JobContext) -> None:
    """Sleeps `payload.seconds` (default 1); cancellable at any point."""
    seconds = ctx.payload.get("seconds", 1)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise TerminalError("payload.seconds must be a number >= 0")
    await asyncio.sleep(seconds)


async def fail(ctx: JobContext) -> None:
    """Always fails: retryable, or terminal with `payload.terminal=true`."""
    message = str(ctx.payload.get("message", f"demo failure on attempt {ctx.attempt}"))
    if ctx.payload.get("terminal") is True:
        raise TerminalError(message)
    raise RuntimeError(message)


def demo_registry() -> HandlerRegistry:
    registry = HandlerRegistry()
    for name, handler in (("email", email), ("noop", noop), ("sleep", sleep), ("fail", fail)):
        registry.register(name, handler)
    return registry
