"""Typed tasks without a server: the payload checked at enqueue, decoded for the handler,
the task's queue and policy in the request, the queues a worker serves."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import importlib.util
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any, TypedDict, assert_type

import asyncpg
import httpx
import msgspec
import pytest

import taskforge
from taskforge.application.handlers import (
    DeclarationError,
    HandlerRegistry,
    JobContext,
    TerminalError,
)
from taskforge.domain.result import UnstorableResult, encode_result
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.runtime import serving_declared_queues
from taskforge.sdk.tasks import Task
from tests.unit.test_client_core import JOB

ROOT = Path(__file__).resolve().parents[2]


class Address(msgspec.Struct):
    city: str


class EmailStruct(msgspec.Struct):
    to: str
    retries: int = 0
    address: Address | None = None


@dataclasses.dataclass
class EmailDataclass:
    to: str
    retries: int = 0


class EmailDict(TypedDict):
    to: str
    retries: int


def declare(registry: HandlerRegistry, payload_type: type[Any]) -> Task[Any]:
    """A task taking `payload_type`, returning what it received."""
    if payload_type is EmailStruct:

        async def handle_struct(email: EmailStruct) -> Any:
            return email

        return taskforge.task("email", queue="mail", registry=registry)(handle_struct)
    if payload_type is EmailDataclass:

        def handle_dataclass(email: EmailDataclass) -> Any:
            return email

        return taskforge.task("email", queue="mail", registry=registry)(handle_dataclass)

    async def handle_dict(email: EmailDict) -> Any:
        return email

    return taskforge.task("email", queue="mail", registry=registry)(handle_dict)


def recording_client() -> tuple[taskforge.SyncClient, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(201, json=JOB)

    return taskforge.SyncClient(transport=httpx.MockTransport(answer)), sent


def context(payload: dict[str, Any]) -> JobContext:
    return JobContext(
        job_id=uuid.uuid4(), queue="mail", job_type="email", attempt=1, max_attempts=3,
        payload=payload,
    )  # fmt: skip


async def run(registry: HandlerRegistry, job_type: str, payload: dict[str, Any]) -> Any:
    handler = registry.get(job_type)
    answer = handler(context(payload))
    return await answer if asyncio.iscoroutine(answer) else answer


PAYLOAD_TYPES = [EmailStruct, EmailDataclass, EmailDict]


@pytest.mark.parametrize("payload_type", PAYLOAD_TYPES)
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"retries": 1}, "payload.to"),  # missing
        ({"to": 5, "retries": 1}, "payload.to"),  # wrong type
        ({"to": "a@b.com", "retries": "x"}, "payload.retries"),
    ],
)
def test_a_payload_that_does_not_fit_is_refused_naming_the_field_and_nothing_is_sent(
    payload_type: type[Any], payload: dict[str, Any], field: str
) -> None:
    send_email = declare(HandlerRegistry(), payload_type)
    client, sent = recording_client()
    with client, pytest.raises(taskforge.ValidationError) as refused:
        send_email.enqueue(client, payload)
    assert refused.value.code == "validation_error"
    assert refused.value.details == {"field": field}
    assert refused.value.message.startswith(f"{field}: ")
    assert sent == []


def test_a_nested_field_is_named_by_its_path() -> None:
    send_email = declare(HandlerRegistry(), EmailStruct)
    with pytest.raises(taskforge.ValidationError) as refused:
        send_email.encode({"to": "a@b.com", "address": {}})
    assert refused.value.details == {"field": "payload.address.city"}


def test_a_target_that_is_neither_a_client_nor_a_connection_is_refused_naming_both() -> None:
    task = declare(HandlerRegistry(), EmailStruct)
    with pytest.raises(TypeError) as refused:
        task.enqueue("http://localhost:8080", EmailStruct(to="a@b.c"))  # type: ignore[call-overload]
    assert str(refused.value) == (
        "handle_struct.enqueue takes a taskforge Client or SyncClient, or an "
        "asyncpg or psycopg 3 connection, not str"
    )


async def test_a_pool_given_as_the_target_is_told_to_acquire_a_connection() -> None:
    task = declare(HandlerRegistry(), EmailStruct)
    pool = asyncpg.create_pool("postgresql://127.0.0.1/unused")  # never started: no server
    with pytest.raises(TypeError) as refused:
        task.enqueue(pool, EmailStruct(to="a@b.c"))  # type: ignore[call-overload]
    assert str(refused.value) == (
        "handle_struct.enqueue takes a taskforge Client or SyncClient, or an asyncpg or "
        "psycopg 3 connection, not Pool; acquire one (`async with pool.acquire() as conn:`) "
        "and enqueue in its transaction"
    )


def test_the_request_carries_the_encoded_payload_the_task_queue_and_policy() -> None:
    registry = HandlerRegistry()

    @taskforge.task(
        "email", queue="mail", registry=registry, max_attempts=5, timeout=30, priority=2
    )
    async def send_email(email: EmailStruct) -> None: ...

    client, sent = recording_client()
    with client:
        job = send_email.enqueue(client, EmailStruct(to="a@b.com", address=Address("Oslo")))
    assert job.job_type == "email"
    [body] = sent
    assert body["jobType"] == "email"
    assert body["payload"] == {"to": "a@b.com", "retries": 0, "address": {"city": "Oslo"}}
    assert (body["queue"], body["maxAttempts"], body["timeout"]) == ("mail", 5, 30)
    assert body["priority"] == 2


def test_an_enqueue_overrides_the_task_queue_and_policy() -> None:
    registry = HandlerRegistry()

    @taskforge.task("email", queue="mail", registry=registry, max_attempts=5, priority=7)
    def send_email(email: EmailDataclass) -> None: ...

    client, sent = recording_client()
    with client:
        send_email.enqueue(
            client, EmailDataclass(to="a@b.com"), queue="urgent", max_attempts=1, priority=0
        )
    assert (sent[0]["queue"], sent[0]["maxAttempts"], sent[0]["priority"]) == ("urgent", 1, 0)


def test_an_override_of_none_keeps_the_tasks_own_value() -> None:
    registry = HandlerRegistry()

    @taskforge.task("email", queue="mail", registry=registry, max_attempts=5)
    def send_email(email: EmailDataclass) -> None: ...

    client, sent = recording_client()
    enqueue: Any = send_email.enqueue  # None is not in the options' declared types
    with client:
        enqueue(client, EmailDataclass(to="a@b.com"), queue=None, max_attempts=None)
    assert (sent[0]["queue"], sent[0]["maxAttempts"]) == ("mail", 5)


COUNTDOWN_REFUSED = r"^unknown enqueue option\(s\): countdown \(use delay, in seconds\)$"


@pytest.mark.parametrize(
    "value",
    [
        60,
        None,  # as refused as any value: `eta=maybe_eta` must not pass while it is None
    ],
)
def test_an_unknown_enqueue_option_is_a_type_error_and_nothing_is_sent(value: Any) -> None:
    registry = HandlerRegistry()

    @taskforge.task("email", registry=registry)
    def send_email(email: EmailDataclass) -> None: ...

    client, sent = recording_client()
    enqueue: Any = send_email.enqueue
    with client, pytest.raises(TypeError, match=COUNTDOWN_REFUSED):
        enqueue(client, EmailDataclass(to="a@b.com"), countdown=value)
    assert sent == []
    spec: Any = send_email.spec
    with client, pytest.raises(TypeError, match=COUNTDOWN_REFUSED):
        client.enqueue_many([spec(EmailDataclass(to="a@b.com"), countdown=value)])
    assert sent == []


async def test_the_async_client_is_awaited() -> None:
    registry = HandlerRegistry()

    @taskforge.task("email", registry=registry)
    async def send_email(email: EmailDict) -> None: ...

    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(201, json=JOB)

    async with taskforge.Client(transport=httpx.MockTransport(answer)) as client:
        job = await send_email.enqueue(client, {"to": "a@b.com", "retries": 0})
    assert job.job_type == "email"
    assert "queue" not in json.loads(sent[0].content)  # no queue declared: the API's default


def test_a_spec_is_checked_and_carries_the_task_settings_for_enqueue_many() -> None:
    send_email = declare(HandlerRegistry(), EmailStruct)
    assert send_email.spec(EmailStruct(to="a@b.com"), delay=5) == {
        "job_type": "email",
        "payload": {"to": "a@b.com", "retries": 0, "address": None},
        "queue": "mail",
        "delay": 5,
    }
    with pytest.raises(taskforge.ValidationError):
        send_email.spec({"to": 1})


@pytest.mark.parametrize("payload_type", PAYLOAD_TYPES)
async def test_the_handler_receives_the_payload_decoded(payload_type: type[Any]) -> None:
    registry = HandlerRegistry()
    declare(registry, payload_type)
    received = await run(registry, "email", {"to": "a@b.com", "retries": 2})
    # A Struct or dataclass the handler returns is kept as its fields.
    expected = {"to": "a@b.com", "retries": 2}
    if payload_type is EmailStruct:
        expected["address"] = None
    assert received == expected


class Tally(msgspec.Struct):
    counts: dict[int, str]


async def test_a_payload_with_number_keys_comes_back_to_the_handler_as_it_was_sent() -> None:
    registry = HandlerRegistry()

    @taskforge.task("tally", registry=registry)
    def tally(payload: Tally) -> Any:
        return list(payload.counts)

    stored = json.loads(json.dumps(tally.encode(Tally({1: "one"}))))  # JSON keys are text

    assert stored == {"counts": {"1": "one"}}
    assert await run(registry, "tally", stored) == [1]


async def test_a_returned_struct_with_number_keys_is_kept_with_them_as_text() -> None:
    registry = HandlerRegistry()

    @taskforge.task("tally", registry=registry)
    def tally(payload: Tally) -> Tally:
        return payload

    result = await run(registry, "tally", {"counts": {"1": "one"}})

    assert result == {"counts": {"1": "one"}}
    assert encode_result(result, 1000) == '{"counts":{"1":"one"}}'  # storable as it is


class Line(msgspec.Struct):
    sku: str
    at: datetime


@dataclasses.dataclass
class Total:
    amount: Decimal
    lines: list[Line]


async def test_structs_and_dataclasses_anywhere_in_a_returned_value_are_kept_as_their_fields() -> (
    None
):
    registry = HandlerRegistry()
    at = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)

    @taskforge.task("lines", registry=registry)
    def lines(ctx: JobContext) -> Any:
        return {
            "lines": [Line("a", at), Line("b", at)],
            "totals": (Total(Decimal("1.50"), [Line("c", at)]),),
            "tags": {"x"},
            "id": uuid.UUID(int=1),
        }

    stored = encode_result(await run(registry, "lines", {}), 10_000)

    line = {"sku": "a", "at": "2026-12-07T09:30:00Z"}
    assert stored is not None
    assert json.loads(stored) == {
        "lines": [line, {**line, "sku": "b"}],
        "totals": [{"amount": "1.50", "lines": [{**line, "sku": "c"}]}],
        "tags": ["x"],
        "id": "00000000-0000-0000-0000-000000000001",
    }


class Opaque:
    """Has no JSON form."""


@dataclasses.dataclass
class Report:
    lines: list[Any]


@pytest.mark.parametrize(
    ("returned", "refusal"),
    [
        ([Line("a", datetime(2026, 1, 1, tzinfo=UTC)), Opaque()], "Opaque at $[1]"),
        ({"deep": [{"x": Opaque()}]}, "Opaque at $.deep[0].x"),
        (
            Report(lines=[Line("a", datetime(2026, 1, 1, tzinfo=UTC)), {1, 2}, Opaque()]),
            "Opaque at $.lines[2]",
        ),
        ({"rows": (n for n in range(3))}, "generator at $.rows"),
        ({Opaque(): 1}, "a key of type Opaque at $"),
    ],
    ids=["beside Structs", "nested", "in a dataclass", "a generator", "a key"],
)
async def test_a_returned_value_holding_what_has_no_json_form_is_refused_naming_where(
    returned: Any, refusal: str
) -> None:
    # As the worker names it in any handler's result: msgspec's message named no place.
    registry = HandlerRegistry()

    @taskforge.task("opaque", registry=registry)
    def opaque(ctx: JobContext) -> Any:
        return returned

    with pytest.raises(UnstorableResult) as refused:
        await run(registry, "opaque", {})
    assert str(refused.value) == f"not JSON: {refusal}"


async def test_a_returned_value_nested_too_deeply_to_convert_is_refused() -> None:
    registry = HandlerRegistry()
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]

    @taskforge.task("deep", registry=registry)
    def nested(ctx: JobContext) -> Any:
        return [Line("a", datetime(2026, 1, 1, tzinfo=UTC)), deep]

    with pytest.raises(UnstorableResult, match=r"^not JSON: "):
        await run(registry, "deep", {})


async def test_a_stored_payload_that_does_not_fit_fails_the_job_for_good() -> None:
    registry = HandlerRegistry()
    declare(registry, EmailStruct)
    with pytest.raises(TerminalError, match=r"does not fit EmailStruct: payload\.to: "):
        await run(registry, "email", {"retries": 1})


async def test_the_context_is_passed_after_the_payload() -> None:
    registry = HandlerRegistry()

    @taskforge.task("email", registry=registry)
    async def send_email(email: EmailStruct, ctx: JobContext) -> str:
        return f"{email.to} attempt {ctx.attempt}"

    assert await run(registry, "email", {"to": "a@b.com"}) == "a@b.com attempt 1"


async def test_a_handler_written_the_current_way_receives_the_context() -> None:
    registry = HandlerRegistry()

    @taskforge.task("email", registry=registry)
    def send_email(ctx: JobContext) -> Any:
        return ctx.payload

    assert await run(registry, "email", {"anything": [1]}) == {"anything": [1]}
    client, sent = recording_client()
    with client:
        send_email.enqueue(client, {"anything": [1]})
    assert sent[0]["payload"] == {"anything": [1]}


async def test_an_unchecked_payload_is_passed_as_the_mapping() -> None:
    registry = HandlerRegistry()

    @taskforge.task("email", registry=registry)
    async def send_email(payload: Mapping[str, Any]) -> Any:
        return dict(payload)

    assert await run(registry, "email", {"to": 1}) == {"to": 1}
    with pytest.raises(taskforge.ValidationError, match="payload: must be a JSON object"):
        send_email.encode(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_the_handler_stays_callable_and_keeps_its_kind() -> None:
    registry = HandlerRegistry()
    send_email = declare(registry, EmailStruct)
    assert asyncio.iscoroutinefunction(registry.get("email"))
    assert not asyncio.iscoroutinefunction(declare(HandlerRegistry(), EmailDataclass).function)
    assert registry.get("email").__name__ == send_email.function.__name__


def declare_cleanup(registry: HandlerRegistry) -> Task[None]:
    """A task whose handler takes no parameter, as periodic clean-ups are written."""

    @taskforge.task("cleanup", queue="maintenance", registry=registry, max_attempts=2)
    def cleanup() -> str:
        return "cleaned"

    return cleanup


def test_a_task_taking_no_parameter_is_enqueued_with_an_empty_payload() -> None:
    cleanup = declare_cleanup(HandlerRegistry())
    client, sent = recording_client()
    with client:
        cleanup.enqueue(client)
        cleanup.enqueue(client, priority=1)
        cleanup.enqueue(client, {})  # type: ignore[call-overload]  # as a raw producer sends it
    assert [body["payload"] for body in sent] == [{}, {}, {}]
    assert (sent[1]["queue"], sent[1]["maxAttempts"], sent[1]["priority"]) == (
        "maintenance", 2, 1,
    )  # fmt: skip
    assert cleanup.spec(delay=5) == {
        "job_type": "cleanup", "payload": {}, "queue": "maintenance", "max_attempts": 2,
        "delay": 5,
    }  # fmt: skip


async def test_an_async_task_taking_no_parameter_is_enqueued_on_the_async_client() -> None:
    @taskforge.task("cleanup", registry=HandlerRegistry())
    async def cleanup() -> None: ...

    sent: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(201, json=JOB)

    async with taskforge.Client(transport=httpx.MockTransport(answer)) as client:
        await cleanup.enqueue(client)
    assert sent[0]["payload"] == {}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"dry_run": True}, "payload.dry_run"),  # the first key it would drop
        ([], "payload"),  # no JSON object at all
        (EmailStruct(to="a@b.com"), "payload"),
    ],
)
def test_a_payload_for_a_task_taking_none_is_refused_naming_it_and_nothing_is_sent(
    payload: Any, field: str
) -> None:
    cleanup = declare_cleanup(HandlerRegistry())
    client, sent = recording_client()
    with client, pytest.raises(taskforge.ValidationError) as refused:
        cleanup.enqueue(client, payload)
    assert refused.value.details == {"field": field}
    assert refused.value.message == f"{field}: cleanup takes no payload: send none, or {{}}"
    assert sent == []


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_a_worker_calls_a_task_taking_no_parameter_with_none(asynchronous: bool) -> None:
    registry = HandlerRegistry()
    if asynchronous:

        @taskforge.task("cleanup", registry=registry)
        async def cleanup() -> str:
            return "cleaned"

    else:
        declare_cleanup(registry)
    assert await run(registry, "cleanup", {}) == "cleaned"


async def test_a_stored_payload_for_a_task_taking_none_fails_the_job_for_good() -> None:
    # Enqueued by a producer that does not know the task (raw HTTP): the handler would
    # never see what was sent, so the job is refused as a payload that does not fit is.
    registry = HandlerRegistry()
    declare_cleanup(registry)
    refused = r"^the payload does not fit cleanup\(\), which takes none: payload\.dry_run$"
    with pytest.raises(TerminalError, match=refused):
        await run(registry, "cleanup", {"dry_run": True, "older_than": 30})


async def test_calling_a_task_calls_its_handler_as_written() -> None:
    registry = HandlerRegistry()

    @taskforge.task("cleanup", registry=registry)
    def cleanup() -> str:
        return "cleaned"

    @taskforge.task("email", registry=registry)
    async def send_email(email: EmailStruct, ctx: JobContext) -> EmailStruct:
        return email

    @taskforge.task("tally", registry=registry)
    def tally(payload: Tally) -> Tally:
        return payload

    email = EmailStruct(to="a@b.com")
    sent = await send_email(email, context({}))
    # Not run as a job: no payload check, no result conversion, the caller's own objects.
    assert assert_type(sent, EmailStruct) is email
    assert assert_type(tally(Tally({1: "one"})), Tally) == Tally({1: "one"})
    assert assert_type(cleanup(), str) == "cleaned"


def test_a_typed_task_is_refused_as_the_handler_of_another_job_type() -> None:
    registry = HandlerRegistry()
    send_email = declare(registry, EmailStruct)
    # Called with the JobContext, the task would pass it to its handler for the payload.
    with pytest.raises(DeclarationError, match=r"is the typed task 'email', which registers"):
        registry.register("newsletter", send_email)
    assert list(registry) == ["email"]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"queue": "taskforge:mail"}, "queue"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": [3]}, "max_attempts"),  # unhashable: still named
        ({"backoff": 0.5}, "backoff"),
        ({"priority": 10}, "priority"),
        ({"max_snoozes": -1}, "max_snoozes"),
        ({"max_snoozes": 1_000_001}, "max_snoozes"),
        ({"max_snoozes": 2.5}, "max_snoozes"),
    ],
)
def test_a_bad_declaration_is_refused_at_import_time(options: dict[str, Any], field: str) -> None:
    with pytest.raises(taskforge.ValidationError) as refused:
        taskforge.task("email", registry=HandlerRegistry(), **options)(lambda ctx: None)
    assert refused.value.details == {"field": field}


def test_a_handler_taking_more_than_payload_and_context_is_refused() -> None:
    def three(a: EmailStruct, b: JobContext, c: int) -> None: ...

    with pytest.raises(TypeError, match="must take"):
        taskforge.task("email", registry=HandlerRegistry())(three)  # type: ignore[arg-type]


def _two_numbers(a: int, b: int) -> int:
    return a + b


def _numbers(numbers: list[int]) -> int:
    return sum(numbers)


@pytest.mark.parametrize(
    ("function", "message"),
    [
        # Dramatiq's and Celery's form: arguments by position. `b` would get the JobContext.
        (_two_numbers, "its second parameter receives the JobContext, and b: int is not one"),
        (_numbers, "a job's payload is a JSON object, and numbers: list[int] cannot hold one"),
    ],
)
def test_a_handler_whose_parameters_cannot_take_a_payload_and_context_is_refused(
    function: Callable[..., Any], message: str
) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        taskforge.task("add", registry=HandlerRegistry())(function)


def test_a_payload_taken_as_a_mapping_or_as_anything_is_accepted() -> None:
    def as_dict(payload: dict[str, Any], ctx: JobContext) -> None: ...
    def as_mapping(payload: Mapping[str, Any], context: JobContext) -> None: ...
    def as_anything(payload: Any, ctx) -> None: ...  # type: ignore[no-untyped-def]

    for function in (as_dict, as_mapping, as_anything):
        task = taskforge.task("email", registry=HandlerRegistry())(function)
        assert task.payload_type is None


class Pair(msgspec.Struct, array_like=True):
    to: str
    subject: str


def test_a_payload_struct_encoded_as_an_array_is_refused_at_declaration() -> None:
    def send(payload: Pair) -> None: ...

    # Every enqueue would be refused: a payload is a JSON object, this Struct an array.
    with pytest.raises(TypeError, match="Pair is a Struct with array_like=True"):
        taskforge.task("email", registry=HandlerRegistry())(send)


class Mixed(enum.Enum):
    LOW = "low"
    ONE = 1


class Tagged(msgspec.Struct):
    tag: Mixed


def test_a_payload_type_msgspec_cannot_decode_is_refused_at_declaration() -> None:
    def send(payload: Tagged) -> None: ...

    # Accepted, it refused every enqueue, and a job stored otherwise failed every attempt
    # with the decoder's TypeError, retried as any error, then dead-lettered.
    with pytest.raises(TypeError, match=r"send: its payload type Tagged cannot be decoded: Enums"):
        taskforge.task("email", registry=HandlerRegistry())(send)


def import_module_text(path: Path, text: str) -> ModuleType:
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SHIPPING = """
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec
import taskforge
{imports}

class Order(msgspec.Struct):
    order_id: int


def ship(order: Order, ctx: JobContext) -> Decimal: ...


def ship_annotated(order: Annotated[Order, "checked"], ctx: JobContext) -> Decimal: ...


def ship_quoted(order: "Order", ctx: "JobContext") -> Decimal: ...


def audit(ctx: taskforge.JobContext) -> Decimal: ...


def log(ctx: JobContext) -> Decimal: ...


def log_quoted(ctx: "JobContext") -> Decimal: ...
"""

AT_RUN_TIME = """
from decimal import Decimal

from taskforge import JobContext
"""

FOR_TYPE_CHECKERS_ALONE = """
if TYPE_CHECKING:  # where linters move imports used only in annotations
    from decimal import Decimal

    from taskforge import JobContext
"""


@pytest.mark.parametrize(
    "imports", [AT_RUN_TIME, FOR_TYPE_CHECKERS_ALONE], ids=["at run time", "for type checkers"]
)
def test_the_context_and_return_types_may_be_imported_for_type_checkers_alone(
    tmp_path: Path, imports: str
) -> None:
    module = import_module_text(tmp_path / "shipping.py", SHIPPING.format(imports=imports))
    registry = HandlerRegistry()

    for name in ("ship", "ship_annotated", "ship_quoted"):
        task = taskforge.task(name, registry=registry)(getattr(module, name))
        assert (task.payload_type, task._takes_payload, task._takes_context) == (
            module.Order, True, True
        ), name  # fmt: skip
    for name in ("audit", "log", "log_quoted"):
        task = taskforge.task(name, registry=registry)(getattr(module, name))
        assert (task._takes_payload, task._takes_context) == (False, True), name


def test_a_payload_type_imported_for_type_checkers_alone_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    module = import_module_text(
        tmp_path / "billing.py",
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from orders import Invoice\n"
        "def bill(invoice: Invoice) -> None: ...\n",
    )

    # Enqueues check payloads against the type: it must exist at run time.
    with pytest.raises(TypeError, match="the payload annotation of bill, Invoice, cannot be"):
        taskforge.task("bill", registry=HandlerRegistry())(module.bill)


def test_a_job_type_is_declared_once() -> None:
    registry = HandlerRegistry()
    declare(registry, EmailStruct)
    with pytest.raises(ValueError, match="already registered"):
        declare(registry, EmailStruct)


@pytest.mark.parametrize("job_type", ["", "x" * 129, "café", "bad type"])
def test_a_handler_is_refused_a_job_type_the_api_refuses_as_a_task_is(job_type: str) -> None:
    registry = HandlerRegistry()
    with pytest.raises(DeclarationError) as as_handler:
        registry.handler(job_type)(lambda ctx: None)
    with pytest.raises(taskforge.ValidationError) as as_task:
        taskforge.task(job_type, registry=registry)(lambda ctx: None)

    rule = "job_type: must be 1-128 characters of letters, digits and _ - . :"
    assert str(as_handler.value) == str(as_task.value) == rule
    assert list(registry) == []


def _needs_two(ctx: JobContext, extra: int) -> None: ...


@pytest.mark.parametrize(
    ("handler", "problem"),
    [
        (None, "must be callable, not NoneType"),
        (lambda: None, "must take the JobContext as its one argument; <lambda>() cannot"),
        (_needs_two, "must take the JobContext as its one argument; _needs_two(ctx, extra) cannot"),
        (lambda *, ctx: None, "must take the JobContext as its one argument; <lambda>(*, ctx)"),
    ],
)
def test_a_handler_that_cannot_take_the_context_is_refused_when_registered(
    handler: Any, problem: str
) -> None:
    registry = HandlerRegistry()
    with pytest.raises(DeclarationError) as refused:
        registry.register("email", handler)

    assert str(refused.value).startswith("the handler for jobType 'email' ")
    assert problem in str(refused.value)
    assert list(registry) == []


def _takes_two(ctx: JobContext, exc: BaseException) -> None: ...


@pytest.mark.parametrize(
    ("hook", "problem"),
    [
        (None, "a failure hook must be callable, not NoneType"),
        (_takes_two, "(ctx, exc, dead_lettered); _takes_two(ctx, exc) cannot"),
    ],
)
def test_a_failure_hook_that_cannot_take_the_failure_is_refused_when_registered(
    hook: Any, problem: str
) -> None:
    registry = HandlerRegistry()
    with pytest.raises(DeclarationError, match=re.escape(problem)):
        registry.on_failure(hook)

    assert registry.failure_hooks == ()


def test_failure_hooks_are_registered_once_and_carried_by_a_merge() -> None:
    """Workers load the hooks of the default registry through a merge (load_handlers)."""

    def report(ctx: JobContext, exc: BaseException, dead_lettered: bool) -> None: ...

    declared = HandlerRegistry()
    declared.on_failure(report)
    declared.on_failure(report)  # a module imported twice
    loaded = HandlerRegistry()
    loaded.merge(declared)

    assert declared.failure_hooks == loaded.failure_hooks == (report,)


class CallableHandler:
    def __call__(self, ctx: JobContext) -> None: ...


@pytest.mark.parametrize(
    "handler",
    [
        lambda ctx, retries=3: None,  # later parameters with defaults
        lambda *args: None,
        CallableHandler(),
        print,  # a builtin
    ],
)
def test_any_callable_that_takes_the_context_alone_is_registered(handler: Any) -> None:
    registry = HandlerRegistry()
    registry.register("email", handler)
    assert registry.get("email") is handler


def test_a_worker_serves_the_queues_its_tasks_declare_unless_told_otherwise() -> None:
    registry = HandlerRegistry()
    declare(registry, EmailStruct)  # queue "mail"
    settings = Settings(queue_name="jobs:ready")
    assert serving_declared_queues(settings, registry).queues == ("mail",)
    registry.register("plain", lambda ctx: None)  # no queue: the default one
    assert serving_declared_queues(settings, registry).queues == ("jobs:ready", "mail")
    told = Settings(queue_name="jobs:ready", worker_queues=("other",))
    assert serving_declared_queues(told, registry).queues == ("other",)
    assert serving_declared_queues(settings, HandlerRegistry()).queues == ("jobs:ready",)


def test_a_merged_registry_keeps_the_declared_queues() -> None:
    registry = HandlerRegistry()
    declare(registry, EmailStruct)
    merged = HandlerRegistry()
    merged.merge(registry)
    assert merged.queues("jobs:ready") == ("mail",)


def test_a_task_declares_its_own_snooze_cap_and_a_merged_registry_keeps_it() -> None:
    registry = HandlerRegistry()
    poll = taskforge.task("poll", max_snoozes=3, registry=registry)(lambda ctx: None)
    taskforge.task("export", registry=registry)(lambda ctx: None)
    merged = HandlerRegistry()
    merged.merge(registry)

    assert poll.max_snoozes == 3
    assert merged.declared_max_snoozes("poll") == 3
    assert merged.declared_max_snoozes("export") is None  # the worker's MAX_SNOOZES


def test_importing_a_typed_task_does_not_load_the_http_client_or_drivers() -> None:
    code = (
        "import sys, taskforge\n"
        "@taskforge.task('email', queue='mail')\n"
        "def send(ctx): pass\n"
        "print([m in sys.modules for m in ('httpx', 'taskforge.client', 'asyncpg', 'psycopg')])"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert loaded.stdout.strip() == "[False, False, False, False]"
