"""Typed tasks: a job type declared once, with its handler, its queue and its policy.

    class Email(msgspec.Struct):
        to: str
        subject: str

    @taskforge.task("email", queue="mail", max_attempts=5)
    async def send_email(email: Email) -> None:
        await deliver(email.to, email.subject)

    await send_email.enqueue(client, Email(to="a@b.com", subject="Hi"))

The handler's first parameter is the payload. Annotated with a `msgspec.Struct`, a
dataclass or a `TypedDict`, the payload is checked when the job is enqueued (a
`ValidationError` naming the field, nothing written) and the handler receives it decoded;
any other annotation, or none, passes the payload mapping as it is. A second parameter
receives the `JobContext`. A handler taking only a `JobContext` (as `@taskforge.handler`
ones do) receives it as before; one taking no parameter takes no payload (`{}`).

Calling the task calls the handler as written (`send_email(email)`), in the caller's process.

Importing this module registers nothing with the HTTP client or the database drivers:
worker processes import it through their handler modules.
"""

from __future__ import annotations

import functools
import inspect
import sys
import typing
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Generic, Unpack, overload

import msgspec

from taskforge.application.handlers import (
    HandlerRegistry,
    JobContext,
    JobHandler,
    SignatureError,
    TerminalError,
    default_registry,
)
from taskforge.domain import errors as domain_errors
from taskforge.domain.new_job import build_new_job
from taskforge.domain.policy import PolicyOptions
from taskforge.domain.validation import DEFAULT_QUEUE, validate_max_snoozes
from taskforge.sdk.refusals import declaration_refused, field_of, validation_error
from taskforge.sdk.results import stored_result
from taskforge.sdk.signatures import signature_of

if sys.version_info >= (3, 13):
    from typing import ParamSpec, TypeVar
else:  # the defaults below (PEP 696)
    from typing_extensions import ParamSpec, TypeVar

if TYPE_CHECKING:
    import asyncpg
    import psycopg
    from asyncpg.pool import PoolConnectionProxy

    from taskforge.client import Client, EnqueueOptions, Job, JobSpec, SyncClient, ValidationError

P = TypeVar("P")
Params = ParamSpec("Params", default=...)
Returns = TypeVar("Returns", default=Any)


class TaskDefaults(PolicyOptions, total=False):
    """The policy a task's jobs get unless an enqueue overrides it (`enqueue`'s names)."""


class Task(Generic[P, Params, Returns]):
    """A declared job type; `P` is the payload its handler takes (None: it takes none),
    `Params` and `Returns` the handler's parameters and return type, which calling the
    task has (`Task[Email]` leaves them open). Made by `task`."""

    def __init__(
        self,
        job_type: str,
        function: Callable[Params, Returns],
        *,
        queue: str | None,
        defaults: TaskDefaults,
        registry: HandlerRegistry,
        max_snoozes: int | None = None,
    ) -> None:
        _check_declaration(job_type, queue, defaults, max_snoozes)
        self.job_type = job_type
        self.queue = queue
        """Where its jobs go unless an enqueue says `queue=`; None: the default queue."""
        self.max_snoozes = max_snoozes
        """How many times a job of this type may snooze, its next snooze dead-letters it;
        None: as many as the worker's MAX_SNOOZES."""
        self.defaults = defaults
        self.function = function
        """The handler as written, which calling the task calls."""
        self._takes_payload, self._takes_context, self.payload_type = signature_of(function)
        self._registered = self._handler()
        """What the worker calls for its jobs (`taskforge.testing.perform` calls it too)."""
        registry.register(job_type, self._registered, queue=queue, max_snoozes=max_snoozes)

    def __repr__(self) -> str:
        return f"<Task {self.job_type!r} queue={self.queue!r} {self.function.__qualname__}>"

    def __call__(self, *args: Params.args, **kwargs: Params.kwargs) -> Returns:
        """The handler as written, called here and now (as Celery's tasks are): no job, no
        payload check or decoding, the result as it returns it (a coroutine for an async
        handler). `taskforge.testing.perform` runs it as a worker would."""
        return self.function(*args, **kwargs)

    @overload
    def enqueue(
        self: Task[None, Params, Returns],
        target: SyncClient | psycopg.Connection[Any],
        payload: None = None,
        **overrides: Unpack[EnqueueOptions],
    ) -> Job: ...

    @overload
    def enqueue(
        self: Task[None, Params, Returns],
        target: Client | asyncpg.Connection | PoolConnectionProxy | psycopg.AsyncConnection[Any],
        payload: None = None,
        **overrides: Unpack[EnqueueOptions],
    ) -> Coroutine[Any, Any, Job]: ...

    @overload
    def enqueue(
        self,
        target: SyncClient | psycopg.Connection[Any],
        payload: P,
        **overrides: Unpack[EnqueueOptions],
    ) -> Job: ...

    @overload
    def enqueue(
        self,
        target: Client | asyncpg.Connection | PoolConnectionProxy | psycopg.AsyncConnection[Any],
        payload: P,
        **overrides: Unpack[EnqueueOptions],
    ) -> Coroutine[Any, Any, Job]: ...

    def enqueue(
        self, target: Any, payload: Any = None, **overrides: Any
    ) -> Job | Coroutine[Any, Any, Job]:
        """Enqueue one job through `target`: over HTTP with a `Client` (awaited) or a
        `SyncClient` (plain), or in the current transaction of an asyncpg or psycopg 3
        connection (awaited, plain for a sync psycopg connection), as `taskforge.enqueue`
        does. The task's queue and policy apply unless `overrides` name others. A payload
        that does not fit the handler's type raises ValidationError before anything is
        sent or written; a task whose handler takes none is enqueued without one."""
        from taskforge.client import Client, SyncClient
        from taskforge.sdk.transactional import NotAConnection, enqueue

        body = self.encode(payload)
        options = self._options(overrides)
        if isinstance(target, Client | SyncClient):
            return target.enqueue(self.job_type, body, **options)
        try:
            job: Job | Coroutine[Any, Any, Job] = enqueue(target, self.job_type, body, **options)
        except NotAConnection as exc:
            raise TypeError(
                f"{self.function.__name__}.enqueue takes a taskforge Client or SyncClient, "
                f"or an asyncpg or psycopg 3 connection, not {exc.given}{exc.hint}"
            ) from None
        return job

    @overload
    def spec(
        self: Task[None, Params, Returns],
        payload: None = None,
        **overrides: Unpack[EnqueueOptions],
    ) -> JobSpec: ...

    @overload
    def spec(self, payload: P, **overrides: Unpack[EnqueueOptions]) -> JobSpec: ...

    def spec(self, payload: Any = None, **overrides: Any) -> JobSpec:
        """The job as `enqueue_many` takes it (on a client or a connection), checked as
        `enqueue` checks it: `tf.enqueue_many([send_email.spec(e) for e in emails])`."""
        spec: Any = {"job_type": self.job_type, "payload": self.encode(payload)}
        spec.update(self._options(dict(overrides)))
        return typing.cast("JobSpec", spec)

    def _options(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The task's defaults and queue, then the call's overrides; an override of None is
        one left out (as the clients read it): the task's own value stays. Other options of
        None go on as they are, so that the target refuses an unknown one whatever its value."""
        options: dict[str, Any] = {**self.defaults}
        if self.queue is not None:
            options["queue"] = self.queue
        options.update(
            (name, value)
            for name, value in overrides.items()
            if value is not None or name not in options
        )
        return options

    def encode(self, payload: P) -> dict[str, Any]:
        """The payload as the job stores it (JSON-ready), checked against the handler's type."""
        return self._encode(payload, None)

    def encode_declared(self, payload: Any) -> dict[str, Any]:
        """A payload declared in code for this task's jobs (a schedule's), checked as `encode`
        checks an enqueued one; one that does not fit raises a DeclarationError naming the
        field, which stops the start of a process loading it."""
        return self._encode(payload, declaration_refused())

    def _encode(self, payload: Any, kind: type[ValidationError] | None) -> dict[str, Any]:
        if self._takes_nothing:
            sent = self._sent_to_nothing(payload)
            if sent is not None:
                raise validation_error(
                    sent, f"{self.function.__name__} takes no payload: send none, or {{}}", kind
                )
            return {}
        if self.payload_type is None:
            if not isinstance(payload, Mapping):
                raise validation_error("payload", "must be a JSON object", kind)
            return dict(payload)
        try:
            # Keys as the stored JSON has them (text), so what passes here decodes below.
            builtins = msgspec.to_builtins(payload, str_keys=True)
            value = msgspec.convert(builtins, self.payload_type, str_keys=True)
        except msgspec.ValidationError as exc:
            field, message = field_of(exc)
            raise validation_error(field, message, kind) from None
        except TypeError as exc:
            raise validation_error("payload", f"must be JSON: {exc}", kind) from None
        encoded: dict[str, Any] = msgspec.to_builtins(value, str_keys=True)
        return encoded

    def decode(self, payload: Mapping[str, Any]) -> Any:
        """A stored payload as the handler takes it (None for a handler taking none); a
        payload that does not fit its type raises TerminalError naming the field (a retry
        cannot make it fit), as does any payload but `{}` for a handler taking none."""
        if self._takes_nothing:
            sent = self._sent_to_nothing(payload)
            if sent is not None:
                name = self.function.__name__
                raise TerminalError(f"the payload does not fit {name}(), which takes none: {sent}")
            return None
        if self.payload_type is None:
            return payload
        try:
            return msgspec.convert(payload, self.payload_type, str_keys=True)
        except msgspec.ValidationError as exc:
            field, message = field_of(exc)
            name = getattr(self.payload_type, "__name__", str(self.payload_type))
            raise TerminalError(f"the payload does not fit {name}: {field}: {message}") from None

    @property
    def _takes_nothing(self) -> bool:
        return not self._takes_payload and not self._takes_context

    @staticmethod
    def _sent_to_nothing(payload: Any) -> str | None:
        """The field a payload for a handler taking none names, its first key (`payload.x`),
        or `payload` when it is no JSON object; None when it is none, or `{}`."""
        if payload is None or (isinstance(payload, Mapping) and not payload):
            return None
        return f"payload.{next(iter(payload))}" if isinstance(payload, Mapping) else "payload"

    def _handler(self) -> JobHandler:
        """What the worker calls: the handler given its payload (decoded) and its context.
        A coroutine function stays one, a plain function stays plain (it runs in a thread)."""
        function: Callable[..., Any] = self.function

        def arguments(ctx: JobContext) -> list[Any]:
            decoded = self.decode(ctx.payload)  # a handler taking none refuses one too
            if not self._takes_payload:
                return [ctx] if self._takes_context else []
            return [decoded, ctx] if self._takes_context else [decoded]

        if inspect.iscoroutinefunction(function):

            async def run_async(ctx: JobContext) -> Any:
                return stored_result(await function(*arguments(ctx)))

            handler: JobHandler = run_async
        else:

            def run(ctx: JobContext) -> Any:
                return stored_result(function(*arguments(ctx)))

            handler = run
        functools.update_wrapper(handler, function, updated=())
        handler.task = self  # type: ignore[attr-defined]  # found by `periodic` below the task
        return handler


class _Declare:
    """`task(...)`'s decorator: the payload type the handler takes becomes the Task's."""

    def __init__(
        self,
        job_type: str,
        queue: str | None,
        defaults: TaskDefaults,
        registry: HandlerRegistry,
        max_snoozes: int | None,
    ) -> None:
        self._job_type = job_type
        self._queue = queue
        self._defaults = defaults
        self._registry = registry
        self._max_snoozes = max_snoozes

    @overload
    def __call__(self, function: Callable[[], Returns]) -> Task[None, [], Returns]: ...

    @overload
    def __call__(
        self, function: Callable[[JobContext], Returns]
    ) -> Task[Mapping[str, Any], [JobContext], Returns]: ...

    @overload
    def __call__(self, function: Callable[[P], Returns]) -> Task[P, [P], Returns]: ...

    @overload
    def __call__(
        self, function: Callable[[P, JobContext], Returns]
    ) -> Task[P, [P, JobContext], Returns]: ...

    def __call__(self, function: Callable[..., Any]) -> Task[Any]:
        return Task(
            self._job_type,
            function,
            queue=self._queue,
            defaults=self._defaults,
            registry=self._registry,
            max_snoozes=self._max_snoozes,
        )


def task(
    job_type: str,
    *,
    queue: str | None = None,
    registry: HandlerRegistry | None = None,
    max_snoozes: int | None = None,
    **defaults: Unpack[TaskDefaults],
) -> _Declare:
    """Declare a job type: `@taskforge.task("email", queue="mail", max_attempts=5)` on its
    handler registers the handler (in `registry`, by default the one workers load) and
    returns a `Task` to enqueue with. `max_snoozes` caps how often a job of this type may
    raise Snooze before its next snooze dead-letters it (default: the worker's
    MAX_SNOOZES). A bad name, queue, cap or policy raises ValidationError here, at import
    time."""
    return _Declare(job_type, queue, defaults, registry or default_registry, max_snoozes)


def _check_declaration(
    job_type: str, queue: str | None, defaults: TaskDefaults, max_snoozes: int | None
) -> None:
    unknown = sorted(set(defaults) - set(TaskDefaults.__annotations__))
    if unknown:
        raise SignatureError(f"unknown task option(s): {', '.join(unknown)}")
    try:
        build_new_job(
            job_id=uuid.uuid4(), job_type=job_type, payload={}, queue=queue or DEFAULT_QUEUE,
            **defaults,
        )  # fmt: skip
        if max_snoozes is not None:
            validate_max_snoozes(max_snoozes)
    except domain_errors.ValidationError as exc:
        raise validation_error(exc.field, exc.message, declaration_refused()) from None
