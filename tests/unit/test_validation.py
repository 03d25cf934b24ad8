from __future__ import annotations

import pytest

from taskforge.domain.errors import ValidationError
from taskforge.domain.validation import (
    Page,
    validate_delay,
    validate_idempotency_key,
    validate_job_type,
    validate_queue_name,
)


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
    assert caught.value.field == "jobType"


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", 7])
def test_invalid_idempotency_keys_are_rejected(key: object) -> None:
    with pytest.raises(ValidationError, match="idempotencyKey"):
        validate_idempotency_key(key)


@pytest.mark.parametrize("delay", [-1, float("inf"), float("nan"), True, "5"])
def test_invalid_delays_are_rejected(delay: object) -> None:
    with pytest.raises(ValidationError, match="delay"):
        validate_delay(delay)


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
