from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

from taskforge.domain.errors import ValidationError
from taskforge.domain.new_job import JobBuilder, NewJob, build_new_job
from taskforge.domain.policy import RetryPolicy
from taskforge.domain.validation import (
    MAX_PAYLOAD_DEPTH,
    MAX_WRITTEN_OUT_GROWTH,
    Page,
    parse_job_id,
    validate_delay,
    validate_idempotency_key,
    validate_job_type,
    validate_payload,
    validate_queue_name,
    validate_run_at,
    validate_timeout,
    whole_number,
)

JOB_ID = "01900000-0000-7000-8000-00000000000a"


@pytest.mark.parametrize("name", ["jobs:ready", "email", "a", "A-b_c.d:e", "x" * 128])
def test_valid_queue_names_are_accepted(name: str) -> None:
    assert validate_queue_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "x" * 129, "has space", "slash/", "ünicode", "taskforge:internal", 42]
)
def test_invalid_queue_names_are_rejected_naming_the_field(name: object) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_queue_name(name)
    assert caught.value.field == "queue"


def test_job_type_errors_name_job_type() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_job_type("bad type")
    assert caught.value.field == "job_type"


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", 7])
def test_invalid_idempotency_keys_are_rejected(key: object) -> None:
    with pytest.raises(ValidationError, match="idempotency_key"):
        validate_idempotency_key(key)


@pytest.mark.parametrize("delay", [-1, float("inf"), float("nan"), True, "5"])
def test_invalid_delays_are_rejected(delay: object) -> None:
    with pytest.raises(ValidationError, match="delay"):
        validate_delay(delay)


@pytest.mark.parametrize(
    ("validate", "field"), [(validate_delay, "delay"), (validate_timeout, "timeout")]
)
def test_a_duration_out_of_range_states_its_bound_in_full_as_the_api_does(
    validate: Callable[[object], float], field: str
) -> None:
    with pytest.raises(ValidationError, match="between 0 and 315360000 seconds") as caught:
        validate(-1)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "run_at",
    [
        datetime.min.replace(tzinfo=UTC),  # asyncpg stores it as -infinity
        datetime.max.replace(tzinfo=UTC),  # ... and this one as infinity
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=14))),  # > year 9999
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),  # before year 1 in UTC
        datetime(2030, 1, 1),  # no offset: ambiguous for a producer that is not the API
        "2030-01-01T00:00:00Z",
    ],
    ids=repr,
)
def test_run_at_outside_the_due_time_range_is_rejected(run_at: object) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_run_at(run_at)
    assert caught.value.field == "run_at"


@pytest.mark.parametrize(
    ("run_at", "in_utc"),
    [
        (datetime(1970, 1, 1, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC)),
        (
            datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
        ),
        (
            datetime(1970, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))),
            datetime(1970, 1, 1, tzinfo=UTC),
        ),
    ],
)
def test_run_at_inside_the_range_is_kept_in_utc(run_at: datetime, in_utc: datetime) -> None:
    assert validate_run_at(run_at) == in_utc
    assert validate_run_at(run_at).utcoffset() == timedelta(0)


def test_every_new_job_checks_its_run_at() -> None:
    # Not only the HTTP body: whoever builds a NewJob (CLI, SDK, tests) gets the rule.
    with pytest.raises(ValidationError, match="run_at"):
        NewJob(id=UUID(JOB_ID), queue="q", job_type="t", run_at=datetime.min.replace(tzinfo=UTC))


@pytest.mark.parametrize(
    "payload",
    [
        {"to": "a\x00b"},  # in a value
        {"a\x00": 1},  # in a key
        {"deep": [[{"list": ["fine", "not\x00fine"]}]]},  # nested in lists
        {"tags": {"a\x00b"}},  # in a set, which an encoder writes as an array
        {"tags": frozenset({("x", "a\x00")})},
    ],
)
def test_every_new_job_refuses_nul_in_its_payload(payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="NUL") as caught:
        NewJob(id=UUID(JOB_ID), queue="q", job_type="t", payload=payload)
    assert caught.value.field == "payload"


@pytest.mark.parametrize(
    "payload",
    [{"x": math.nan}, {"x": [1.0, math.inf]}, {"x": {"y": -math.inf}}, {"x": {math.nan}}],
)
def test_every_new_job_refuses_nan_and_infinities_in_its_payload(
    payload: dict[str, object],
) -> None:
    """JSON has none: an encoder writes null, and the job would hold another value."""
    with pytest.raises(ValidationError, match="NaN or infinite") as caught:
        NewJob(id=UUID(JOB_ID), queue="q", job_type="t", payload=payload)
    assert caught.value.field == "payload"


def levels(count: int, inner: Any = None) -> dict[str, Any]:
    """A payload `count` levels deep: the object, then lists inside lists around `inner`."""
    value: Any = [] if inner is None else inner
    for _ in range(count - 2):
        value = [value]
    return {"a": value}


@pytest.mark.parametrize(
    "innermost",
    [[], {}, ("tuple",), {"set"}, MappingProxyType({"k": 1})],
    ids=["list", "dict", "tuple", "set", "mapping"],
)
def test_a_payload_nests_at_most_max_payload_depth_levels(innermost: Any) -> None:
    # Deeper, the API's encoder fails on it after it is stored: every answer holding the
    # job (GET /jobs among them) would be a 500.
    deepest = levels(MAX_PAYLOAD_DEPTH, innermost)
    assert NewJob(id=UUID(JOB_ID), queue="q", job_type="t", payload=deepest).payload == deepest

    with pytest.raises(ValidationError, match="payload: must not nest deeper than 128 levels"):
        NewJob(id=UUID(JOB_ID), queue="q", job_type="t", payload=levels(129, innermost))


def test_a_payload_nested_past_the_recursion_limit_is_refused_without_recursing() -> None:
    with pytest.raises(ValidationError, match="must not nest deeper") as caught:
        NewJob(id=UUID(JOB_ID), queue="q", job_type="t", payload=levels(100_000))
    assert caught.value.field == "payload"


def test_a_payload_s_numbers_may_grow_by_a_bounded_amount_when_written_out_in_full() -> None:
    # Stored, 1e308 reads back as 309 digits: a body of such numbers would read back tens
    # of times its size. 1e308 counts its exponent, 308.
    most = MAX_WRITTEN_OUT_GROWTH // 308
    payload = {"big": [1e308] * most, "int": 10**308, "usual": [6.02e23, 1.6e-19, 0.1]}
    assert NewJob(id=UUID(JOB_ID), queue="q", job_type="t", payload=payload).payload == payload

    with pytest.raises(ValidationError, match="payload: must not hold so many very large") as no:
        NewJob(id=UUID(JOB_ID), queue="q", job_type="t", payload={"big": [1e308] * (most + 1)})
    assert no.value.field == "payload"
    small = {"small": [-1e-300] * (MAX_WRITTEN_OUT_GROWTH // 300 + 1)}
    with pytest.raises(ValidationError, match="send such numbers as strings"):
        NewJob(id=UUID(JOB_ID), queue="q", job_type="t", payload=small)


def test_a_new_job_takes_run_at_or_delay_not_both() -> None:
    with pytest.raises(ValidationError, match="run_at"):
        NewJob(id=UUID(JOB_ID), queue="q", job_type="t", run_at=datetime.now(UTC), delay=5.0)


@pytest.mark.parametrize(
    ("now", "delay", "accepted"),
    [
        (datetime(2026, 1, 1, tzinfo=UTC), 3600.0, True),
        (datetime(9999, 12, 31, 23, 59, tzinfo=UTC), 59.0, True),  # ends at the last second
        (datetime(9999, 12, 31, 23, 59, tzinfo=UTC), 60.0, False),  # one second past it
        (datetime(9995, 1, 1, tzinfo=UTC), 10 * 365 * 24 * 3600.0, False),  # overflows
    ],
)
def test_a_delay_must_end_inside_the_due_time_range(
    now: datetime, delay: float, accepted: bool
) -> None:
    job = NewJob(id=UUID(JOB_ID), queue="q", job_type="t", delay=delay)

    if accepted:
        assert job.due_at(now) == now + timedelta(seconds=delay)
    else:
        with pytest.raises(ValidationError) as caught:
            job.due_at(now)
        assert caught.value.field == "delay"


@pytest.mark.parametrize("raw", [JOB_ID, JOB_ID.upper()])
def test_a_canonical_job_id_is_parsed(raw: str) -> None:
    assert parse_job_id(raw) == UUID(JOB_ID)


@pytest.mark.parametrize(
    "raw",
    [
        f"urn:uuid:{JOB_ID}",
        JOB_ID.replace("-", ""),
        f"{{{JOB_ID}}}",
        "\uff10" + JOB_ID[1:],  # a full-width digit
        JOB_ID + "\n",
        f" {JOB_ID}",
        JOB_ID[:-1],
        "",
    ],
    ids=repr,
)
def test_a_job_id_in_any_other_form_is_rejected_naming_id(raw: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_job_id(raw)
    assert caught.value.field == "id"


@pytest.mark.parametrize(("text", "number"), [("7", 7), ("+7", 7), ("-3", -3), ("007", 7)])
def test_a_whole_number_is_read_as_written(text: str, number: int) -> None:
    assert whole_number(text) == number


@pytest.mark.parametrize("text", ["1.5", "2.0", "0x10", "1e3", "", " 7", "7\n", "\uff17", "1_000"])
def test_anything_but_decimal_digits_is_not_a_whole_number(text: str) -> None:
    with pytest.raises(ValueError, match=f"^must be a whole number, not {re.escape(repr(text))}$"):
        whole_number(text)


@pytest.mark.parametrize(
    ("limit", "offset", "expected"),
    [
        (None, None, Page(50, 0)),  # defaults
        (10, 20, Page(10, 20)),  # as asked
        (201, 0, Page(200, 0)),  # above the hard max: clamped
        (10_000, 5, Page(200, 5)),
        (1, -3, Page(1, 0)),  # negative offset normalised to 0
    ],
)
def test_pagination_is_clamped(limit: int | None, offset: int | None, expected: Page) -> None:
    assert Page.clamp(limit, offset) == expected


@pytest.mark.parametrize("limit", [0, -1])
def test_limit_below_one_is_an_error(limit: int) -> None:
    with pytest.raises(ValidationError, match="limit"):
        Page.clamp(limit, 0)


def test_a_traced_copy_of_a_new_job_changes_only_its_traceparent() -> None:
    job = NewJob(id=UUID(JOB_ID), queue="q", job_type="t", payload={"a": [1]}, delay=5.0)

    traced = job.with_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")

    assert traced.traceparent == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert job.traceparent is None
    assert dataclasses.replace(traced, traceparent=None) == job


OTHER_ID = UUID("01900000-0000-7000-8000-00000000000b")


def test_a_batch_builder_gives_each_job_its_own_id_and_payload_with_the_settings_asked() -> None:
    builder = JobBuilder()
    settings: dict[str, Any] = {"job_type": "t", "queue": "q", "max_attempts": 7, "delay": 5}

    first = builder.build_from(UUID(JOB_ID), {"n": 1}, dict(settings))
    second = builder.build_from(OTHER_ID, MappingProxyType({"n": 2}), dict(settings))

    assert second == dataclasses.replace(first, id=OTHER_ID, payload={"n": 2})
    assert type(second.payload) is dict
    assert second == build_new_job(job_id=OTHER_ID, payload={"n": 2}, **settings)


def test_a_copy_for_another_job_carries_every_field_of_its_kind() -> None:
    # Every field set apart from its default, so a field left out or swapped shows.
    kind = NewJob(
        id=UUID(JOB_ID), queue="q", job_type="t", payload={"a": 1},
        policy=RetryPolicy(max_attempts=7, initial_delay=2, backoff=3, max_delay=40, jitter=True),
        visibility_timeout=11, timeout=12, priority=3, idempotency_key="k", unique_key="u",
        delay=13, traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )  # fmt: skip
    timed = dataclasses.replace(kind, delay=None, run_at=datetime(2030, 1, 1, tzinfo=UTC))

    copy = kind.like(OTHER_ID, {"b": 2}, idempotency_key="k2", unique_key="u2")
    timed_copy = timed.like(OTHER_ID, None, run_at=datetime(2031, 1, 1, tzinfo=UTC))

    assert copy == dataclasses.replace(
        kind, id=OTHER_ID, payload={"b": 2}, idempotency_key="k2", unique_key="u2"
    )
    assert timed_copy == dataclasses.replace(
        timed, id=OTHER_ID, payload={}, idempotency_key=None, unique_key=None,
        run_at=datetime(2031, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    assert kind.with_traceparent(None) == dataclasses.replace(kind, traceparent=None)


def test_a_builder_keeps_each_kind_without_its_first_jobs_data_and_a_bounded_number() -> None:
    # A builder may live as long as the process: it must not hold on to a job's payload,
    # nor grow with every kind it ever met.
    builder = JobBuilder(kinds=2)
    first = builder.build_from(
        UUID(JOB_ID), {"big": "x" * 1000}, dict(job_type="t", queue="q", idempotency_key="k")
    )
    later = builder.build_from(OTHER_ID, None, dict(job_type="t", queue="q"))

    assert first.payload == {"big": "x" * 1000} and first.idempotency_key == "k"
    assert later == dataclasses.replace(first, id=OTHER_ID, payload={}, idempotency_key=None)
    assert [(kind.payload, kind.idempotency_key) for kind in builder._built.values()] == [
        ({}, None)
    ]
    for queue in ("q2", "q3", "q4"):
        builder.build_from(OTHER_ID, {}, dict(job_type="t", queue=queue))
    assert len(builder._built) <= 2


def test_a_batch_builder_turns_each_kind_of_settings_into_keywords_once() -> None:
    seen: list[dict[str, Any]] = []

    def keywords_of(settings: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(settings))
        return {"queue": "q", **settings}

    builder = JobBuilder(keywords_of)
    jobs = [
        builder.build_from(job_id, {}, {"job_type": "t", "idempotency_key": key})
        for job_id, key in ((UUID(JOB_ID), "k1"), (OTHER_ID, "k2"))
    ]

    assert seen == [{"job_type": "t"}]  # the job's own key is not a setting
    assert [(job.queue, job.idempotency_key) for job in jobs] == [("q", "k1"), ("q", "k2")]


def test_a_batch_builder_checks_each_payload_even_when_the_settings_were_checked() -> None:
    builder = JobBuilder()
    builder.build_from(UUID(JOB_ID), {}, dict(job_type="t", queue="q"))

    with pytest.raises(ValidationError) as caught:
        builder.build_from(OTHER_ID, {"text": "a\x00b"}, dict(job_type="t", queue="q"))
    assert caught.value.field == "payload"
    with pytest.raises(ValidationError, match="JSON object"):
        builder.build_from(OTHER_ID, ["not", "an", "object"], dict(job_type="t", queue="q"))  # type: ignore[arg-type]


def test_a_batch_builder_tells_equal_settings_of_other_types_apart() -> None:
    # True == 1 in Python, but a max_attempts of True is refused: reusing the job built with 1
    # would let it through.
    builder = JobBuilder()
    builder.build_from(UUID(JOB_ID), {}, dict(job_type="t", queue="q", max_attempts=1))

    with pytest.raises(ValidationError) as caught:
        builder.build_from(OTHER_ID, {}, dict(job_type="t", queue="q", max_attempts=True))
    assert caught.value.field == "max_attempts"


def test_a_batch_builder_keeps_and_checks_each_jobs_own_keys_and_run_at() -> None:
    builder = JobBuilder()
    first = builder.build_from(
        UUID(JOB_ID), {}, dict(job_type="t", queue="q", idempotency_key="k1", unique_key="u1",
        run_at=datetime(2030, 1, 1, tzinfo=UTC)),
    )  # fmt: skip

    second = builder.build_from(OTHER_ID, {}, dict(job_type="t", queue="q", idempotency_key="k2"))

    assert (first.idempotency_key, first.unique_key) == ("k1", "u1")
    assert (second.idempotency_key, second.unique_key, second.run_at) == ("k2", None, None)
    with pytest.raises(ValidationError) as caught:
        builder.build_from(OTHER_ID, {}, dict(job_type="t", queue="q", unique_key=""))
    assert caught.value.field == "unique_key"


def test_a_batch_builder_refuses_a_run_at_beside_the_delay_its_settings_ask_for() -> None:
    builder = JobBuilder()
    builder.build_from(UUID(JOB_ID), {}, dict(job_type="t", queue="q", delay=5))

    with pytest.raises(ValidationError, match="not both") as caught:
        builder.build_from(
            OTHER_ID,
            {},
            dict(job_type="t", queue="q", delay=5, run_at=datetime(2030, 1, 1, tzinfo=UTC)),
        )
    assert caught.value.field == "run_at"


def test_a_run_at_in_the_hour_a_clock_turns_back_is_told_from_its_twin() -> None:
    # 01:30 on 2030-11-03 happens twice in New York; the two compare equal in Python.
    new_york = ZoneInfo("America/New_York")
    earlier = datetime(2030, 11, 3, 1, 30, tzinfo=new_york)
    later = earlier.replace(fold=1)
    builder = JobBuilder()

    jobs = [
        builder.build_from(job_id, {}, dict(job_type="t", queue="q", run_at=run_at))
        for job_id, run_at in ((UUID(JOB_ID), earlier), (OTHER_ID, later))
    ]

    assert [job.run_at for job in jobs] == [
        datetime(2030, 11, 3, 5, 30, tzinfo=UTC),
        datetime(2030, 11, 3, 6, 30, tzinfo=UTC),
    ]


def test_a_batch_builder_checks_unhashable_settings_every_time() -> None:
    builder = JobBuilder()

    for job_id in (UUID(JOB_ID), OTHER_ID):
        with pytest.raises(ValidationError) as caught:
            builder.build_from(job_id, {}, dict(job_type="t", queue=["q"]))
        assert caught.value.field == "queue"


def _build(**fields: object) -> NewJob:
    from taskforge.domain.new_job import build_new_job

    request: dict[str, object] = {"job_id": UUID(JOB_ID), "job_type": "email", "payload": {}}
    return build_new_job(**{"queue": "jobs:ready", **request, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"payload": ["not", "an", "object"]}, "payload"),
        ({"payload": {1: "key not a string"}}, "payload"),
        ({"payload": {"to": "a\x00b"}}, "payload"),
        ({"initial_delay": "1"}, "initial_delay"),  # a string is not a number of seconds
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"initial_delay": 10, "max_delay": 5}, "max_delay"),
        ({"visibility_timeout": 0}, "visibility_timeout"),
        ({"jitter": "yes"}, "jitter"),
        ({"timeout": -1}, "timeout"),
        ({"queue": "taskforge:internal"}, "queue"),
        ({"job_type": None}, "job_type"),
    ],
)
def test_a_job_request_from_any_caller_is_checked_field_by_field(
    fields: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        _build(**fields)
    assert caught.value.field == field


def test_a_job_request_stores_a_read_only_mapping_payload_as_a_dict() -> None:
    job = _build(payload=MappingProxyType({"to": "a@b.com"}))
    assert type(job.payload) is dict
    assert job.payload == {"to": "a@b.com"}


def test_a_job_request_scans_its_payload_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import taskforge.domain.new_job as job_module

    scanned: list[object] = []

    def counting(payload: object) -> dict[str, object]:
        scanned.append(payload)
        return validate_payload(payload)

    monkeypatch.setattr(job_module, "validate_payload", counting)
    _build(payload={"to": "a@b.com"})
    assert len(scanned) == 1


def test_a_job_request_takes_the_api_defaults() -> None:
    job = _build(payload=None, initial_delay=600)
    assert job.payload == {}
    assert job.policy.max_delay == 600  # at least initial_delay when max_delay is left out
    assert job.policy.max_attempts == 3
    assert job.visibility_timeout == 30
