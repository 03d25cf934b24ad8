"""encode_result: which return values a job keeps as its result, and what it says of the rest."""

from __future__ import annotations

import json
from typing import Any

import pytest

from taskforge.domain.result import MAX_RESULT_DEPTH, UnstorableResult, encode_result

LIMIT = 1000


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_none_is_no_result() -> None:
    assert encode_result(None, LIMIT) is None


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"b": [1, 2.5, True, None], "a": "é"}, '{"b":[1,2.5,true,null],"a":"é"}'),
        ((1, "two"), '[1,"two"]'),  # a tuple is kept as a list
        ("text", '"text"'),  # any JSON value, not only objects
        (0, "0"),
        (False, "false"),
        (nested(MAX_RESULT_DEPTH), json.dumps(nested(MAX_RESULT_DEPTH), separators=(",", ":"))),
    ],
    ids=["object", "tuple", "string", "zero", "false", "deepest"],
)
def test_json_values_are_kept_as_compact_json(value: Any, text: str) -> None:
    assert encode_result(value, LIMIT) == text


def test_the_limit_counts_utf8_bytes() -> None:
    fits = "é" * 499  # 998 bytes and two quotes: exactly the limit
    assert encode_result(fits, LIMIT) == f'"{fits}"'
    with pytest.raises(UnstorableResult, match=r"too large: 1002 bytes as JSON, over 1000 bytes"):
        encode_result(fits + "é", LIMIT)


def test_a_value_far_over_the_limit_is_refused_before_it_is_encoded() -> None:
    with pytest.raises(UnstorableResult, match=r"^too large: over 1000 bytes \(MAX_RESULT_BYTES\)"):
        encode_result(list(range(10_000_000)), LIMIT)


def test_a_value_nested_too_deeply_is_refused() -> None:
    with pytest.raises(UnstorableResult, match=rf"nested deeper than {MAX_RESULT_DEPTH} levels"):
        encode_result(nested(MAX_RESULT_DEPTH + 1), 10 * LIMIT)


def test_a_value_that_contains_itself_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(UnstorableResult, match="nested deeper"):
        encode_result(loop, LIMIT)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": [1, {2, 3}]}, "not JSON: set at $.a[1]"),
        (b"raw", "not JSON: bytes at $"),
        ([float("inf")], "not JSON: inf at $[0]"),
        ({"at": object()}, "not JSON: object at $.at"),
        ({None: 1}, "not JSON: a key of type NoneType at $ (keys are strings)"),
        (["\ud800"], "not UTF-8 encodable: a lone surrogate at $[0]"),
        ({"k\x00": 1}, "a NUL character (\\u0000) at $ key 'k\\x00' cannot be stored"),
        # Was Python's own advice to raise its limit, naming no place.
        ({"n": [10**5000]}, "not JSON: an integer of more than 4,300 digits at $.n[0]"),
    ],
    ids=["set", "bytes", "infinity", "object", "none-key", "surrogate", "nul-key", "huge-int"],
)
def test_other_values_are_refused_naming_where(value: Any, message: str) -> None:
    with pytest.raises(UnstorableResult) as refused:
        encode_result(value, 10**6)
    assert str(refused.value).startswith(message)


def test_a_result_s_numbers_count_as_written_out_in_full() -> None:
    # 300 numbers of 6 bytes each as JSON, 309 digits each as stored and read back.
    with pytest.raises(UnstorableResult, match=r"too large: over 65536 bytes .* as stored"):
        encode_result([1e308] * 300, 64 * 1024)
    assert encode_result([1e308] * 200, 64 * 1024) == json.dumps([1e308] * 200).replace(" ", "")
