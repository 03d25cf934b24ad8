"""Unit-testing handlers: one job run through a handler as a worker runs it, in the test's
own process, with no API, database or Redis.

    def test_a_welcome_email_names_its_recipient() -> None:
        assert taskforge.testing.perform(send_email, {"to": "a@b.com"}) == {"sent": "a@b.com"}

Exposed as `taskforge.testing`. Nothing here is loaded by a worker.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from taskforge.application.handlers import JobContext, JobHandler, default_registry, invoke
from taskforge.application.threads import HandlerThreads
from taskforge.domain import errors as domain_errors
from taskforge.domain.policy import RetryPolicy
from taskforge.domain.result import DEFAULT_MAX_RESULT_BYTES, encode_result
from taskforge.domain.validation import DEFAULT_QUEUE, validate_payload
from taskforge.sdk.refusals import validation_error
from taskforge.sdk.tasks import Task

__all__ = ["perform", "perform_async"]


def perform(
    handler: JobHandler | Task[Any],
    payload: Any = None,
    *,
    job_id: uuid.UUID | None = None,
    queue: str | None = None,
    attempt: int = 1,
    max_attempts: int | None = None,
    snoozes: int = 0,
    created_at: datetime | None = None,
) -> Any:
    """Run one job of `handler` (a function registered with `@taskforge.handler`, or a
    `@taskforge.task`) and return its result as the job would store it: JSON read back,
    None for none.

    `payload` is the job's payload as stored, a JSON object (None: `{}`); a typed task also
    takes what its `enqueue` takes (a Struct, a dataclass ...). The JobContext is the first
    attempt's of a fresh job on the task's queue (else the default queue) with the task's
    `max_attempts` (else 3), created now; the keywords set its fields instead. A payload
    that does not fit a typed task's type raises TerminalError, as on a worker; whatever the
    handler raises (Snooze, TerminalError, any other exception) propagates as it is; a
    result the job could not store raises UnstorableResult. Async handlers run on an event
    loop of their own, so this cannot be called where one runs: await `perform_async` there."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "taskforge.testing.perform cannot run inside a running event loop: "
            "in an async test, await taskforge.testing.perform_async(...) instead"
        )
    function, context = _job(
        handler, payload, job_id, queue, attempt, max_attempts, snoozes, created_at
    )
    if inspect.iscoroutinefunction(function):
        value = asyncio.run(function(context))
    else:
        value = function(context)
        if inspect.isawaitable(value):  # as the worker awaits what a plain function returns
            value = asyncio.run(_awaited(value))
    return _stored(value)


async def perform_async(
    handler: JobHandler | Task[Any],
    payload: Any = None,
    *,
    job_id: uuid.UUID | None = None,
    queue: str | None = None,
    attempt: int = 1,
    max_attempts: int | None = None,
    snoozes: int = 0,
    created_at: datetime | None = None,
) -> Any:
    """`perform`, awaited on the running loop: an async handler runs on it, a plain one on a
    thread of its own, as a worker runs it."""
    function, context = _job(
        handler, payload, job_id, queue, attempt, max_attempts, snoozes, created_at
    )
    threads = HandlerThreads(1, name="taskforge-perform")
    try:
        value = await invoke(function, context, threads)
    finally:
        threads.shutdown()
    return _stored(value)


def _job(
    handler: JobHandler | Task[Any],
    payload: Any,
    job_id: uuid.UUID | None,
    queue: str | None,
    attempt: int,
    max_attempts: int | None,
    snoozes: int,
    created_at: datetime | None,
) -> tuple[JobHandler, JobContext]:
    """The function a worker calls for `handler`'s jobs, and the context of this one."""
    if isinstance(handler, Task):
        function: JobHandler = handler._registered
        job_type = handler.job_type
        declared_queue = handler.queue
        declared_attempts = handler.defaults.get("max_attempts")
        if payload is not None and not isinstance(payload, Mapping):
            payload = handler.encode(payload)  # as its enqueue stores it
    else:
        function = handler
        job_type = _registered_job_type(handler)
        declared_queue = default_registry.declared_queue(job_type)
        declared_attempts = None
    context = JobContext(
        job_id=uuid.uuid4() if job_id is None else job_id,
        queue=queue or declared_queue or DEFAULT_QUEUE,
        job_type=job_type,
        attempt=attempt,
        max_attempts=max_attempts or declared_attempts or RetryPolicy().max_attempts,
        payload=_stored_payload({} if payload is None else payload),
        snoozes=snoozes,
        created_at=datetime.now(UTC) if created_at is None else created_at,
    )
    return function, context


def _registered_job_type(handler: JobHandler) -> str:
    job_types = default_registry.job_types_of(handler)
    if len(job_types) != 1:
        name = getattr(handler, "__qualname__", repr(handler))
        registered = "is not registered" if not job_types else "is registered more than once"
        raise TypeError(
            f"taskforge.testing.perform runs a function registered with @taskforge.handler or "
            f"a @taskforge.task; {name} {registered} in the default registry"
        )
    return job_types[0]


def _stored_payload(payload: Any) -> dict[str, Any]:
    """`payload` as a worker reads it back: checked as an enqueue checks it (a
    ValidationError), then written as JSON and read again (tuples become lists ...)."""
    try:
        checked = validate_payload(payload)
        stored: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(checked))
    except domain_errors.ValidationError as exc:
        raise validation_error(exc.field, exc.message) from None
    except (TypeError, msgspec.EncodeError) as exc:
        raise validation_error("payload", f"must be JSON: {exc}") from None
    return stored


def _stored(value: Any) -> Any:
    """The result as the job keeps it and reads it back; UnstorableResult when it cannot."""
    text = encode_result(value, DEFAULT_MAX_RESULT_BYTES)
    return None if text is None else json.loads(text)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
