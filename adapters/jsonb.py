"""JSON values as Postgres keeps them in a jsonb column, for every store to keep them so.

A job's payload, its result and a schedule's payload are jsonb columns; jsonb orders an
object's keys and rewrites some numbers. The Postgres store's answers read them back that
way, and the in-memory store keeps them in the same form, so `taskforge dev` shows what
production will: the same request gets the same answer from either backend.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any

import msgspec


def stored_json(value: Any) -> Any:
    """`value` as a jsonb column gives it back, whatever Python values it holds: a tuple,
    a set, a datetime, a UUID or a Decimal as msgspec writes it (as the Postgres store's
    codec does), then in jsonb's form. Always a new object, never the caller's."""
    return jsonb_form(msgspec.json.decode(msgspec.json.encode(value)))


def jsonb_form(value: Any) -> Any:
    """`value` (JSON values, as a payload holds them) as Postgres reads it back from a jsonb
    column: an object's keys shortest first, then in byte order; a float that msgspec writes
    with an exponent (1e16 and up, the smallest ones) as its plain digits, which read back as
    an int when they have no fraction; -0.0 as 0.0. Strings, ints, bools and null are as
    they were."""
    if type(value) is dict and not value:
        return value
    # Iterative, as the payload checks are: a payload may nest deeper than Python's recursion
    # limit allows. Each container is made empty, its keys in order, and filled as its values
    # come off the stack.
    top: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, top, 0)]
    while stack:
        item, into, at = stack.pop()
        kind = type(item)
        if kind is dict:
            ordered = _in_jsonb_order(tuple(item))
            made: Any = dict.fromkeys(ordered)
            stack.extend((item[key], made, key) for key in ordered)
            into[at] = made
        elif kind is list:
            made = [None] * len(item)
            stack.extend((each, made, index) for index, each in enumerate(item))
            into[at] = made
        elif kind is float:
            into[at] = _jsonb_number(item)
        else:
            into[at] = item
    return top[0]


def _jsonb_number(value: float) -> Any:
    written = msgspec.json.encode(value)
    if b"e" in written:
        return msgspec.json.decode(format(Decimal(written.decode()), "f"))
    return value + 0.0  # -0.0 is stored as 0


@functools.lru_cache(maxsize=4096)
def _in_jsonb_order(keys: tuple[str, ...]) -> tuple[str, ...]:
    """Sorted once per set of keys: a batch's payloads mostly share theirs."""
    return tuple(sorted(keys, key=_jsonb_key_order))


def _jsonb_key_order(key: str) -> tuple[int, bytes]:
    encoded = key.encode()
    return len(encoded), encoded
