"""What users write jobs against: the handler registry, the job context, TerminalError.

Re-exported by the public `taskforge` module::

    import taskforge

    @taskforge.handler("email")
    async def send_email(ctx: taskforge.JobContext) -> None:
        ...

Handlers may be `async def` or plain functions; plain ones run in a thread so they never
block the worker's event loop. Any exception is retryable unless it is a TerminalError;
raising Snooze asks to run the job later without using an attempt.
A job's `timeout` cancels an async handler; a sync one cannot be interrupted, so its attempt
ends without it and its thread is abandoned (it should poll `ctx.cancelled`).

`@taskforge.on_failure` registers a function the worker calls after an attempt fails, with
the handler's exception (see HandlerRegistry.on_failure).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeAlias, TypeVar
from uuid import UUID

from taskforge.application.threads import HandlerThreads
from taskforge.domain.errors import ValidationError
from taskforge.domain.policy import MAX_DURATION, attempts_exhausted
from taskforge.domain.validation import validate_delay, validate_job_type

JobHandler: TypeAlias = Callable[["JobContext"], Awaitable[Any] | Any]
FailureHook: TypeAlias = Callable[["JobContext", BaseException, bool], Awaitable[Any] | Any]
"""Called as `hook(ctx, exc, dead_lettered)` after an attempt fails (HandlerRegistry.on_failure)."""
Hook = TypeVar("Hook", bound=FailureHook)


class TerminalError(Exception):
    """Raise from a handler when retrying cannot help: the job goes straight to DLQ."""


class Snooze(Exception):
    """Raise from a handler to run the job again in `seconds` (a number or a timedelta),
    without using an attempt::

        if not await report_ready(ctx.payload["report_id"]):
            raise taskforge.Snooze(60)

    The job goes back to PENDING, due in `seconds`, and its `snoozes` count grows by one.
    A job that already snoozed as often as its cap allows (its task's `max_snoozes`, else
    MAX_SNOOZES, a worker setting, default 100) is dead-lettered instead, with the reason
    "snoozed too many times"."""

    def __init__(self, seconds: float | timedelta) -> None:
        """`seconds` may be a timedelta, as an enqueue's `delay` may."""
        given = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        try:
            self.seconds = validate_delay(given)  # the rule of a job's delay
        except ValidationError:
            raise ValueError(
                f"Snooze seconds must be a number from 0 to {MAX_DURATION:.0f}, not {seconds!r}"
            ) from None
        super().__init__(f"snoozed for {self.seconds:g}s")


class UnknownJobType(TerminalError):
    def __init__(self, job_type: str) -> None:
        super().__init__(f"no handler registered for jobType {job_type!r}")
        self.job_type = job_type


class Cancellation(asyncio.Event):
    """The signal that an attempt should stop. True exactly when set, so a sync handler polls
    it as `if ctx.cancelled:` (a plain Event object is always true); `is_set()` and `wait()`
    work as on any asyncio.Event."""

    def __bool__(self) -> bool:
        return self.is_set()


@dataclass(slots=True, kw_only=True)
class JobContext:
    """Everything a handler knows about the attempt it runs.

    `cancelled` is set when the job is cancelled, dead-lettered, its lease is lost or its
    time limit (`timeout`) passes while the handler runs; async handlers are also
    interrupted with CancelledError, sync ones should poll it between steps.
    """

    job_id: UUID
    queue: str
    job_type: str
    attempt: int
    max_attempts: int
    payload: dict[str, Any]
    lease_token: UUID | None = None
    """This attempt's lease. A later attempt of the same job (after this one's lease was
    lost) has another token, so external writes keyed on it can refuse stale attempts."""
    traceparent: str | None = None
    snoozes: int = 0
    """Times this job snoozed before this run (raise Snooze to add one)."""
    created_at: datetime | None = None
    """When the job was enqueued, by the store's clock: a handler can drop a job that waited
    too long to be worth running (`raise TerminalError`, as Dramatiq's max_age would)."""
    cancelled: Cancellation = field(default_factory=Cancellation)

    @property
    def is_last_attempt(self) -> bool:
        return attempts_exhausted(self.attempt, self.max_attempts)


class DeclarationError(ValueError):
    """A handler, task or schedule declared in code is invalid (a job type registered twice,
    a schedule that cannot fire); the message names it and what is wrong."""


class SignatureError(DeclarationError, TypeError):
    """A handler or task that TaskForge cannot call as it calls them (a handler takes the
    JobContext; a task its payload, then optionally the context), or a task option that does
    not exist. A TypeError too, as calling it wrongly would raise."""


class HandlerRegistry:
    """Maps jobType to handler. Registering a jobType twice is an error, not an override, and
    so is a jobType the API would refuse or a handler that cannot be called with a JobContext.

    A handler may declare the queue its jobs go to (typed tasks do): a worker loading the
    registry serves those queues unless it is told which to serve. It may also declare how
    many times its jobs may snooze, in place of the worker's MAX_SNOOZES.

    It also holds the failure hooks (`on_failure`), which apply to every jobType.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, JobHandler] = {}
        self._queues: dict[str, str | None] = {}
        self._max_snoozes: dict[str, int | None] = {}
        self._failure_hooks: list[FailureHook] = []

    def register(
        self,
        job_type: str,
        handler: JobHandler,
        *,
        queue: str | None = None,
        max_snoozes: int | None = None,
    ) -> JobHandler:
        """`queue`: where this jobType's jobs are enqueued; None, the default queue.
        `max_snoozes`: the snoozes a job of this type may take; None, the worker's cap."""
        _check_handler(job_type, handler)
        if job_type in self._handlers and self._handlers[job_type] is not handler:
            raise DeclarationError(f"a handler for jobType {job_type!r} is already registered")
        self._handlers[job_type] = handler
        self._queues[job_type] = queue
        self._max_snoozes[job_type] = max_snoozes
        return handler

    def handler(self, job_type: str) -> Callable[[JobHandler], JobHandler]:
        """Decorator form of `register`."""

        def decorate(handler: JobHandler) -> JobHandler:
            return self.register(job_type, handler)

        return decorate

    def on_failure(self, hook: Hook) -> Hook:
        """Register `hook`, as a decorator or a plain call: a worker calls it in its process
        after an attempt of any jobType fails with an exception from its handler, as
        `hook(ctx, exc, dead_lettered)`; `dead_lettered` is True when that failure sends the
        job to the DLQ (a TerminalError, its last attempt, a result it cannot store). Called
        once the store has recorded the failure, never for a Snooze, a hand-back, a job
        cancelled or whose lease was lost. An async hook is awaited on the worker's loop, a
        plain one runs in a thread; the worker waits for it at most five seconds, and what it
        raises is logged, never changing the job's outcome. Registering a hook again is a
        no-op; hooks run concurrently, in no set order."""
        _check_failure_hook(hook)
        if hook not in self._failure_hooks:
            self._failure_hooks.append(hook)
        return hook

    @property
    def failure_hooks(self) -> tuple[FailureHook, ...]:
        """The hooks `on_failure` registered, in registration order."""
        return tuple(self._failure_hooks)

    def get(self, job_type: str) -> JobHandler:
        try:
            return self._handlers[job_type]
        except KeyError:
            raise UnknownJobType(job_type) from None

    def __contains__(self, job_type: object) -> bool:
        return job_type in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._handlers))

    def merge(self, other: HandlerRegistry) -> None:
        for job_type in other:
            self.register(
                job_type,
                other.get(job_type),
                queue=other._queues[job_type],
                max_snoozes=other._max_snoozes[job_type],
            )
        for hook in other._failure_hooks:
            self.on_failure(hook)

    def job_types_of(self, handler: object) -> list[str]:
        """The job types `handler` itself is registered for, in name order."""
        return [job_type for job_type in self if self._handlers[job_type] is handler]

    def declared_queue(self, job_type: str) -> str | None:
        """The queue `job_type` was registered with; None: the default queue (or unknown)."""
        return self._queues.get(job_type)

    def declared_max_snoozes(self, job_type: str) -> int | None:
        """The snooze cap `job_type` was registered with; None: the worker's MAX_SNOOZES."""
        return self._max_snoozes.get(job_type)

    def queues(self, default: str) -> tuple[str, ...]:
        """The queues the registered jobTypes declare, `default` standing for those that
        declare none; sorted, each once. Empty when nothing is registered."""
        return tuple(sorted({queue or default for queue in self._queues.values()}))


def _check_handler(job_type: str, handler: JobHandler) -> None:
    """A DeclarationError when no job of `job_type` could be enqueued, or `handler` could not
    be called as `invoke` calls it: with the JobContext as its one argument."""
    try:
        validate_job_type(job_type)
    except ValidationError as exc:
        raise DeclarationError(str(exc)) from None
    if not callable(handler):
        raise DeclarationError(
            f"the handler for jobType {job_type!r} must be callable, not {type(handler).__name__}"
        )
    declared = getattr(handler, "job_type", None)
    if isinstance(declared, str) and hasattr(handler, "encode_declared"):
        # A typed task (`@taskforge.task`) is called as its handler is written, with its
        # payload: given a JobContext, it would take the context for the payload.
        raise DeclarationError(
            f"the handler for jobType {job_type!r} is the typed task {declared!r}, which "
            "registers itself: declare a task of its own for this jobType"
        )
    try:
        # The handler's own signature, not that of a function it wraps: a typed task's
        # handler wraps the function as written, whose first parameter is the payload.
        signature = inspect.signature(handler, follow_wrapped=False)
    except (ValueError, NameError):
        # No signature to read (some builtins; on Python 3.14 an annotation naming something
        # undefined): the first call tells.
        return
    try:
        signature.bind(None)
    except TypeError:
        name = getattr(handler, "__qualname__", repr(handler))
        parameters = [p.replace(annotation=p.empty) for p in signature.parameters.values()]
        written = signature.replace(parameters=parameters, return_annotation=signature.empty)
        raise SignatureError(
            f"the handler for jobType {job_type!r} must take the JobContext as its one "
            f"argument; {name}{written} cannot"
        ) from None


def _check_failure_hook(hook: FailureHook) -> None:
    """A DeclarationError when `hook` could not be called as `call_failure_hook` calls it:
    with the JobContext, the exception and whether the job was dead-lettered."""
    if not callable(hook):
        raise DeclarationError(f"a failure hook must be callable, not {type(hook).__name__}")
    try:
        signature = inspect.signature(hook)
    except (ValueError, NameError):
        return  # no signature to read: the first call tells (see _check_handler)
    try:
        signature.bind(None, None, None)
    except TypeError:
        name = getattr(hook, "__qualname__", repr(hook))
        parameters = [p.replace(annotation=p.empty) for p in signature.parameters.values()]
        written = signature.replace(parameters=parameters, return_annotation=signature.empty)
        raise SignatureError(
            "a failure hook must take the JobContext, the exception and whether the job was "
            f"dead-lettered, (ctx, exc, dead_lettered); {name}{written} cannot"
        ) from None


async def invoke(
    handler: JobHandler,
    ctx: JobContext,
    threads: HandlerThreads,
    on_abandon: Callable[[str], None] | None = None,
) -> Any:
    """Run one handler for one attempt: coroutines on the loop, plain functions on `threads`
    (`on_abandon` as for HandlerThreads.run)."""
    if inspect.iscoroutinefunction(handler):
        return await handler(ctx)
    result = await threads.run(handler, ctx, on_abandon)
    if inspect.isawaitable(result):
        return await result
    return result


async def call_failure_hook(
    hook: FailureHook,
    ctx: JobContext,
    exc: BaseException,
    dead_lettered: bool,
    threads: HandlerThreads,
    on_abandon: Callable[[str], None] | None = None,
) -> None:
    """Call one failure hook as `invoke` runs a handler: coroutines on the loop, plain
    functions on `threads`."""
    if inspect.iscoroutinefunction(hook):
        await hook(ctx, exc, dead_lettered)
        return
    result = await threads.run(functools.partial(hook, ctx, exc), dead_lettered, on_abandon)
    if inspect.isawaitable(result):
        await result


default_registry = HandlerRegistry()
"""The registry `taskforge.handler` registers into and workers load by default."""
