"""A typed task's return value as its job keeps it: converted for JSON as msgspec converts
values, or refused naming the first part that has no JSON form."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec

from taskforge.domain.result import MAX_RESULT_DEPTH, UnstorableResult


def stored_result(value: Any) -> Any:
    """A typed task's return value as the job keeps it: converted as msgspec converts values
    for JSON, wherever they sit (a Struct, or a list or dict of them): Structs and dataclasses
    as their fields, datetimes, UUIDs and Decimals as their text, enums as their values,
    sets as lists, bytes as base64, number keys as their text (as msgspec's JSON and the
    payloads write them; a dict holding both 1 and "1" keeps one of the two, as msgspec's
    JSON would). What has no such form (any other object) is refused as the worker refuses
    such a result (UnstorableResult), not retried; what converts to a value JSON cannot hold
    (a NaN) the worker refuses as any handler's. The conversion copies the whole value, a
    too large one included, before the worker's size check refuses it."""
    try:
        return msgspec.to_builtins(value, str_keys=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise UnstorableResult(f"not JSON: {_unconvertible(value) or exc}") from None


def _unconvertible(value: Any) -> str | None:
    """`Opaque at $.rows[2]`: the first part of `value` that has no JSON form, named as the
    worker names it in any handler's result, found by walking the containers, Structs and
    dataclasses it holds (None: none found within MAX_RESULT_DEPTH levels)."""
    stack: list[tuple[Any, str, int]] = [(value, "$", 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_RESULT_DEPTH:
            return None
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str) and not _converts({key: None}):
                    return f"a key of type {type(key).__name__} at {path}"
            members = [(member, f"{path}.{key}") for key, member in item.items()]
        elif isinstance(item, list | tuple | set | frozenset):
            members = [(member, f"{path}[{index}]") for index, member in enumerate(item)]
        elif isinstance(item, msgspec.Struct):
            members = [(getattr(item, name), f"{path}.{name}") for name in item.__struct_fields__]
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            fields = dataclasses.fields(item)
            members = [(getattr(item, field.name), f"{path}.{field.name}") for field in fields]
        elif _converts(item):
            continue
        else:
            return f"{type(item).__name__} at {path}"
        stack.extend((member, where, depth + 1) for member, where in reversed(members))
    return None


def _converts(value: Any) -> bool:
    try:
        msgspec.to_builtins(value, str_keys=True)
    except (TypeError, ValueError):
        return False
    return True
