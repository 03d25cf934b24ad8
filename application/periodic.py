"""Periodic jobs declared in code, beside their handlers. Re-exported by `taskforge`::

    import taskforge

    @taskforge.periodic("*/5 * * * *", name="refresh-rates", timezone="Europe/Berlin")
    @taskforge.handler("refresh_rates")
    async def refresh_rates(ctx: taskforge.JobContext) -> None:
        ...

    @taskforge.periodic("0 * * * *")          # above a typed task too: its type and queue
    @taskforge.task("prune", queue="maintenance")
    async def prune(ctx: taskforge.JobContext) -> None:
        ...

    taskforge.schedule("nightly-report", "30 2 * * *", "report", {"kind": "daily"})

A worker or scheduler that loads the module (`--handlers`) upserts these schedules by name
when it starts (source "code"); the API can pause and resume them like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, Unpack

from taskforge.application.handlers import DeclarationError, HandlerRegistry, SignatureError
from taskforge.domain.errors import ValidationError
from taskforge.domain.policy import POLICY_OPTIONS, PolicyOptions
from taskforge.domain.schedule import (
    ScheduleDefinition,
    ScheduleSource,
    build_schedule_definition,
)

F = TypeVar("F")


@dataclass(frozen=True, slots=True, kw_only=True)
class Declaration:
    """One declared schedule, as written: checked when a process starts with it."""

    cron: str
    name: str | None = None
    job_type: str | None = None
    handler: Any = None
    """The decorated handler, when declared with `periodic`: its job type is the one it is
    registered for (found when the declarations are read, so decorator order is free)."""
    payload: Mapping[str, Any] | None = None
    queue: str | None = None
    timezone: str | None = None
    catch_up: bool = False
    policy: Mapping[str, Any] = field(default_factory=dict)


class ScheduleDeclarations:
    """The schedules declared in code, by name (declaring one name twice is an error)."""

    def __init__(self) -> None:
        self._declarations: list[Declaration] = []

    def add(self, declaration: Declaration) -> None:
        unknown = sorted(set(declaration.policy) - POLICY_OPTIONS)
        if unknown:
            raise SignatureError(f"unknown schedule option(s): {', '.join(unknown)}")
        self._declarations.append(declaration)

    def definitions(
        self, default_queue: str, default_timeout: float, handlers: HandlerRegistry
    ) -> list[ScheduleDefinition]:
        """Every declaration checked (except its cron fields, which the calendar reads);
        DeclarationError names the first bad one."""
        found: dict[str, ScheduleDefinition] = {}
        for declaration in self._declarations:
            definition = _definition(declaration, default_queue, default_timeout, handlers)
            if definition.name in found and found[definition.name] != definition:
                raise DeclarationError(
                    f"schedule {definition.name!r} is declared twice, differently: give each "
                    "its own name= (a schedule's name defaults to its job type)"
                )
            found[definition.name] = definition
        return list(found.values())

    def __len__(self) -> int:
        return len(self._declarations)

    def clear(self) -> None:
        self._declarations.clear()


def _definition(
    declaration: Declaration, default_queue: str, default_timeout: float, handlers: HandlerRegistry
) -> ScheduleDefinition:
    job_type = declaration.job_type or _job_type_of(declaration.handler, handlers)
    name = declaration.name or job_type
    task = _typed_task(declaration.handler, job_type, handlers)
    # A typed task's policy applies unless the declaration names its own.
    task_defaults = getattr(task, "defaults", None)
    inherited = dict(task_defaults) if isinstance(task_defaults, Mapping) else {}
    policy = {**inherited, **declaration.policy}
    queue = declaration.queue or handlers.declared_queue(job_type) or default_queue
    payload: Any = declaration.payload
    # A typed task checks the payload against its handler's type, as its enqueues do: one
    # that does not fit would dead-letter the job of every tick.
    encode_declared = getattr(task, "encode_declared", None)
    try:
        if callable(encode_declared):
            payload = encode_declared({} if payload is None else payload)
        return build_schedule_definition(
            name=name,
            cron=declaration.cron,
            job_type=job_type,
            queue=queue,
            payload=payload,
            timezone=declaration.timezone,
            catch_up=declaration.catch_up,
            source=ScheduleSource.CODE,
            timeout=policy.pop("timeout", default_timeout),
            **policy,
        )
    except (ValidationError, DeclarationError) as exc:
        raise DeclarationError(f"schedule {name!r} declared in code: {exc}") from None


def _job_type_of(handler: Any, handlers: HandlerRegistry) -> str:
    """The job type `handler` serves: a typed task's (`@taskforge.task`), or the one the
    function is registered for (as a handler, or as the function of a typed task that
    `periodic` sits below)."""
    declared = getattr(handler, "job_type", None)
    if isinstance(declared, str) and declared in handlers:
        return declared
    registered = handlers.job_types_of(handler) or [
        job_type for job_type in handlers if _typed_task(handler, job_type, handlers) is not None
    ]
    if registered:
        return registered[0]
    name = getattr(handler, "__qualname__", repr(handler))
    raise DeclarationError(
        f"@taskforge.periodic on {name}: it is not registered as a handler; register it with "
        "@taskforge.handler(job_type) too, or pass job_type="
    )


def _typed_task(handler: Any, job_type: str, handlers: HandlerRegistry) -> Any:
    """The typed task (`@taskforge.task`) of `job_type` that `periodic` was put on: the task
    itself (periodic above it), or the task whose function it is (periodic below it, where
    the registered handler names its task); None for a plain handler."""
    if getattr(handler, "job_type", None) == job_type and hasattr(handler, "encode_declared"):
        return handler
    task = getattr(handlers.get(job_type), "task", None) if job_type in handlers else None
    return task if getattr(task, "function", None) is handler else None


default_schedules = ScheduleDeclarations()
"""Where `taskforge.periodic` and `taskforge.schedule` declare; processes read it at start."""


def periodic(
    cron: str,
    *,
    name: str | None = None,
    job_type: str | None = None,
    queue: str | None = None,
    timezone: str | None = None,
    payload: Mapping[str, Any] | None = None,
    catch_up: bool = False,
    **policy: Unpack[PolicyOptions],
) -> Callable[[F], F]:
    """Decorator: run the decorated handler's job type on `cron` (in `timezone`, default
    UTC), above `@taskforge.handler` or `@taskforge.task` (or below: the type is looked up
    when a process starts). `name` defaults to the job type, `queue` to the one the type
    was registered with, else QUEUE_NAME; `policy` takes the job options of an enqueue
    (PolicyOptions: max_attempts, initial_delay, backoff, max_delay, jitter,
    visibility_timeout, timeout, priority: 0 highest to 9, default 5)."""

    def declare(handler: F) -> F:
        default_schedules.add(
            Declaration(
                cron=cron,
                name=name,
                job_type=job_type,
                handler=handler,
                payload=payload,
                queue=queue,
                timezone=timezone,
                catch_up=catch_up,
                policy=policy,
            )
        )
        return handler

    return declare


def schedule(
    name: str,
    cron: str,
    job_type: str,
    payload: Mapping[str, Any] | None = None,
    queue: str | None = None,
    timezone: str | None = None,
    *,
    catch_up: bool = False,
    **policy: Unpack[PolicyOptions],
) -> None:
    """Declare schedule `name`: a `job_type` job with `payload` on `queue` (default
    QUEUE_NAME) at every tick of `cron` in `timezone` (default UTC); `policy` takes the job
    options of `periodic` (`priority` among them)."""
    default_schedules.add(
        Declaration(
            cron=cron,
            name=name,
            job_type=job_type,
            payload=payload,
            queue=queue,
            timezone=timezone,
            catch_up=catch_up,
            policy=policy,
        )
    )


__all__ = ["DeclarationError", "default_schedules", "periodic", "schedule"]
