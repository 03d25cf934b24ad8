"""taskforge.testing: one job run through a handler as a worker runs it, without a backend."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

import taskforge
import taskforge.testing
from taskforge.application.handlers import HandlerRegistry, JobContext, Snooze, TerminalError
from taskforge.domain.result import UnstorableResult
from taskforge.testing import perform, perform_async

seen: list[JobContext] = []


@taskforge.handler("testing.greet")
def greet(ctx: JobContext) -> dict[str, Any]:
    seen.append(ctx)
    return {"greeting": f"hello {ctx.payload['name']}", "pair": (1, 2)}


@taskforge.handler("testing.greet-async")
async def greet_async(ctx: JobContext) -> str:
    return f"hello {ctx.payload['name']}"


@taskforge.handler("testing.thread")
def thread_name(ctx: JobContext) -> str:
    return threading.current_thread().name


@taskforge.handler("testing.tags")
def tags(ctx: JobContext) -> set[str]:
    return {"a", "b"}


@taskforge.handler("testing.snooze")
async def not_ready(ctx: JobContext) -> None:
    raise Snooze(60)


class Order(msgspec.Struct):
    order_id: str
    quantity: int


class Invoice(msgspec.Struct):
    order_id: str
    total: float


registry = HandlerRegistry()


@taskforge.task("testing.invoice", queue="billing", max_attempts=5, registry=registry)
async def invoice(order: Order, ctx: JobContext) -> Invoice:
    seen.append(ctx)
    return Invoice(order_id=order.order_id, total=order.quantity * 2.5)


@pytest.fixture(autouse=True)
def _forget_contexts() -> None:
    seen.clear()


def test_a_sync_handler_gets_a_first_attempt_and_returns_its_result_as_stored() -> None:
    assert perform(greet, {"name": "Ada"}) == {"greeting": "hello Ada", "pair": [1, 2]}
    [ctx] = seen
    assert (ctx.job_type, ctx.queue, ctx.attempt, ctx.max_attempts, ctx.snoozes) == (
        "testing.greet", "jobs:ready", 1, 3, 0,
    )  # fmt: skip
    assert isinstance(ctx.job_id, uuid.UUID)


def test_a_sync_handler_runs_in_the_callers_thread() -> None:
    assert perform(thread_name) == threading.current_thread().name


def test_an_async_handler_runs_on_an_event_loop() -> None:
    assert perform(greet_async, {"name": "Ada"}) == "hello Ada"


async def test_perform_async_awaits_an_async_handler() -> None:
    assert await perform_async(greet_async, {"name": "Ada"}) == "hello Ada"


async def test_perform_async_runs_a_sync_handler_on_a_thread_as_a_worker_does() -> None:
    assert await perform_async(thread_name) != threading.current_thread().name


def test_a_typed_task_gets_its_payload_decoded_and_its_result_converted() -> None:
    result = perform(invoice, {"order_id": "o-42", "quantity": 3})
    assert result == {"order_id": "o-42", "total": 7.5}
    [ctx] = seen
    assert (ctx.job_type, ctx.queue, ctx.max_attempts) == ("testing.invoice", "billing", 5)


def test_a_typed_task_takes_its_payload_as_its_enqueue_does() -> None:
    result = perform(invoice, Order(order_id="o-42", quantity=2))
    assert result == {"order_id": "o-42", "total": 5.0}


def test_a_payload_that_does_not_fit_the_task_is_a_terminal_error() -> None:
    with pytest.raises(TerminalError, match=r"does not fit Order: payload.quantity"):
        perform(invoice, {"order_id": "o-42", "quantity": "three"})


@taskforge.task("testing.cleanup", queue="maintenance", registry=registry)
def cleanup() -> str:
    return "cleaned"


def test_a_typed_task_taking_no_parameter_runs_without_a_payload() -> None:
    assert perform(cleanup) == perform(cleanup, {}) == "cleaned"
    with pytest.raises(TerminalError, match=r"cleanup\(\), which takes none: payload\.dry_run"):
        perform(cleanup, {"dry_run": True})


@pytest.mark.parametrize(
    "payload",
    [
        ["not", "an", "object"],
        {1: "a number key"},
        {"when": object()},  # nothing JSON could store
    ],
)
def test_a_payload_no_job_could_hold_is_refused_as_an_enqueue_refuses_it(payload: Any) -> None:
    with pytest.raises(taskforge.ValidationError, match="payload"):
        perform(greet, payload)


def test_a_result_the_job_could_not_store_fails_as_on_a_worker() -> None:
    with pytest.raises(UnstorableResult, match="not JSON: set"):
        perform(tags)


def test_a_failure_propagates_without_calling_the_failure_hooks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The test sees the exception itself; hooks (Sentry ...) are a worker's business."""
    monkeypatch.setattr(taskforge.default_registry, "_failure_hooks", [])
    heard: list[BaseException] = []

    @taskforge.on_failure
    def report(ctx: JobContext, exc: BaseException, dead_lettered: bool) -> None:
        heard.append(exc)

    with pytest.raises(UnstorableResult):
        perform(tags)
    assert heard == []


def test_snooze_propagates_unchanged() -> None:
    with pytest.raises(Snooze) as raised:
        perform(not_ready)
    assert raised.value.seconds == 60


def test_context_overrides_reach_the_handler() -> None:
    job_id = uuid.uuid4()
    perform(greet, {"name": "Ada"}, job_id=job_id, queue="q", attempt=3, max_attempts=3,
            snoozes=2)  # fmt: skip
    [ctx] = seen
    assert (ctx.job_id, ctx.queue, ctx.attempt, ctx.max_attempts, ctx.snoozes) == (
        job_id, "q", 3, 3, 2,
    )  # fmt: skip
    assert ctx.is_last_attempt


def test_the_job_was_created_now_unless_told_when() -> None:
    before = datetime.now(UTC)
    perform(greet, {"name": "Ada"})
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    perform(greet, {"name": "Ada"}, created_at=long_ago)

    [fresh, old] = seen
    assert fresh.created_at is not None and before <= fresh.created_at <= datetime.now(UTC)
    assert old.created_at == long_ago  # a handler dropping jobs too old to run is testable


async def test_perform_inside_a_running_loop_points_to_perform_async() -> None:
    with pytest.raises(RuntimeError, match="perform_async"):
        perform(greet_async, {"name": "Ada"})


def test_a_function_no_registration_knows_is_refused() -> None:
    def unregistered(ctx: JobContext) -> None:
        pass

    with pytest.raises(TypeError, match="is not registered"):
        perform(unregistered)


def test_the_testing_module_exposes_perform_perform_async_and_the_harness_only() -> None:
    assert taskforge.testing.__all__ == ["InMemoryTaskForge", "perform", "perform_async"]
    for name in taskforge.testing.__all__:
        assert getattr(taskforge.testing, name) is not None, name
