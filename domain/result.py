"""A handler's return value as a job keeps it: its `result`, JSON bounded in size and depth.

JSON here is what reads back as the same value on every store: None, booleans, integers,
finite floats, strings, lists (or tuples, kept as lists) and dicts with string keys. A set,
bytes, NaN, a non-string key or any other object is refused rather than converted, and so
is a string holding NUL (Postgres cannot store it in jsonb, as for payloads) or a lone
surrogate (UTF-8 cannot encode it). A typed task's value is converted before it gets here
(sdk.tasks: Structs as their fields, datetimes as text, number keys as text, ...).
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from taskforge.domain.validation import written_out_growth

DEFAULT_MAX_RESULT_BYTES = 64 * 1024
MAX_RESULT_DEPTH = 128
"""How deeply a result may nest: JSON decoders (the API's included) recurse on nesting."""
RESULT_REFUSED_REASON = "the handler's result cannot be stored"
"""The dead-letter reason of an attempt whose return value is not storable JSON."""


class UnstorableResult(ValueError):
    """A handler returned a value the job cannot keep as its result; the message says why."""


def encode_result(value: Any, max_bytes: int) -> str | None:
    """`value` as compact JSON text (UTF-8, at most `max_bytes` bytes), or None for None
    (the job then has no result). Raises UnstorableResult naming the first part that is
    not JSON (`$.items[2]`), or the size. The value is checked before it is encoded, and the
    check stops as soon as the value must be too large, so a huge value costs little."""
    if value is None:
        return None
    _check(value, max_bytes)
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. an int of 5,000 digits
        raise UnstorableResult(f"not JSON: {exc}") from None
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise UnstorableResult(f"too large: {size} bytes as JSON, over {_limit(max_bytes)}")
    return text


_Path = tuple[Any, str] | None
"""Where a value sits, as (parent path, step) links: built in constant time per value and
spelled out (`$.items[2]`) only for the error message."""


def _check(value: Any, max_bytes: int) -> None:
    # Iterative, with a lower bound of the encoded size so far (every value takes at least
    # one byte, a string at least its characters and quotes): a value far over the limit is
    # refused after about `max_bytes` steps.
    least = 0
    stack: list[tuple[Any, _Path, int]] = [(value, None, 0)]
    while stack:
        item, path, depth = stack.pop()
        least += 1
        if item is None or isinstance(item, bool):
            pass
        elif isinstance(item, int):
            if item.bit_length() > _SHORTEST_LONG_INT_BITS:
                least += _digits(item, path)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise UnstorableResult(f"not JSON: {item} at {_spell(path)}")
            # Stored, a number is written out in full when read (1e308 as 309 digits):
            # counted so, a result cannot read back far over the limit.
            if grown := written_out_growth(item):
                least += grown
                if least > max_bytes:
                    raise UnstorableResult(
                        f"too large: over {_limit(max_bytes)} as stored, its numbers written "
                        "out in full (1e308 as 309 digits)"
                    )
        elif isinstance(item, str):
            _check_text(item, path)
            least += len(item) + 1
        elif isinstance(item, list | tuple | dict):
            if depth >= MAX_RESULT_DEPTH:
                where = _spell(path)
                raise UnstorableResult(f"nested deeper than {MAX_RESULT_DEPTH} levels at {where}")
            least += len(item)
            if least > max_bytes:  # before its members are stacked: there may be millions
                raise UnstorableResult(_over(max_bytes))
            if isinstance(item, dict):
                for key, member in item.items():
                    if not isinstance(key, str):
                        kind, where = type(key).__name__, _spell(path)
                        raise UnstorableResult(
                            f"not JSON: a key of type {kind} at {where} (keys are strings)"
                        )
                    _check_text(key, (path, f" key {key[:40]!r}"))
                    least += len(key) + 2
                    stack.append((member, (path, f".{key}"), depth + 1))
            else:
                stack.extend(
                    (member, (path, f"[{index}]"), depth + 1) for index, member in enumerate(item)
                )
        else:
            raise UnstorableResult(f"not JSON: {type(item).__name__} at {_spell(path)}")
        if least > max_bytes:
            raise UnstorableResult(_over(max_bytes))


_SHORTEST_LONG_INT_BITS = 14_000
"""Below this many bits an integer has fewer than 4,300 digits, the least number Python
refuses to write out by default (sys.set_int_max_str_digits): it needs no closer look."""


def _digits(number: int, path: _Path) -> int:
    """How many characters `number` takes written out; one Python refuses to write out
    (over sys.get_int_max_str_digits() digits) is refused naming where it is."""
    try:
        return len(str(number))
    except ValueError:
        limit = sys.get_int_max_str_digits()
        raise UnstorableResult(
            f"not JSON: an integer of more than {limit:,} digits at {_spell(path)}"
        ) from None


def _spell(path: _Path) -> str:
    steps = []
    while path is not None:
        path, step = path
        steps.append(step)
    return "$" + "".join(reversed(steps))


def _check_text(text: str, path: _Path) -> None:
    if "\x00" in text:
        raise UnstorableResult(f"a NUL character (\\u0000) at {_spell(path)} cannot be stored")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UnstorableResult(
                f"not UTF-8 encodable: a lone surrogate at {_spell(path)}"
            ) from None


def _over(max_bytes: int) -> str:
    return f"too large: over {_limit(max_bytes)} as JSON"


def _limit(max_bytes: int) -> str:
    return f"{max_bytes} bytes (MAX_RESULT_BYTES)"
