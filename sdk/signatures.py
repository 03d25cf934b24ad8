"""What a typed task's handler takes, read from its signature: its payload first (and the
type enqueues are checked against), the JobContext after it or alone, or nothing.

Only the payload's annotation has to resolve: the context's and the return's may name what
the module imports for type checkers alone (`if TYPE_CHECKING:`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import sys
import typing
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from taskforge.application.handlers import JobContext, SignatureError


def signature_of(function: Callable[..., Any]) -> tuple[bool, bool, type[Any] | None]:
    """Whether the handler takes the payload first, whether it takes the context (after the
    payload, or alone), and the payload type enqueues are checked against (None: any JSON
    object, or none for a handler taking neither).

    Only the payload's annotation has to resolve: the context's and the return's may name
    what the module imports for type checkers alone (`if TYPE_CHECKING:`, where linters
    move imports used only in annotations)."""
    parameters = list(_signature(function).parameters.values())
    if len(parameters) > 2:
        raise SignatureError(
            f"{function.__qualname__} must take (payload), (payload, ctx), (ctx) or (), "
            f"not {len(parameters)} parameters"
        )
    if not parameters:
        return False, False, None
    hints = _hints(function, parameters)
    first = parameters[0]
    if _is_context(first, hints):
        if len(parameters) > 1:
            raise SignatureError(f"{function.__qualname__}: the JobContext goes after the payload")
        return False, True, None
    if len(parameters) == 2 and not _may_be_context(parameters[1], hints):
        second = parameters[1]
        raise SignatureError(
            f"{function.__qualname__}: its second parameter receives the JobContext, and "
            f"{second.name}: {_named(hints[second.name])} is not one. A job's payload is one "
            "JSON object: take it as one parameter (a Struct, a dataclass, a TypedDict or a "
            "dict), then optionally `ctx: JobContext`"
        )
    annotation = hints.get(first.name)
    if _cannot_hold_an_object(annotation):
        raise SignatureError(
            f"{function.__qualname__}: a job's payload is a JSON object, and {first.name}: "
            f"{_named(annotation)} cannot hold one: annotate it with a Struct, a dataclass, "
            "a TypedDict or a dict"
        )
    if isinstance(annotation, str):
        raise SignatureError(
            f"the payload annotation of {function.__qualname__}, {annotation}, cannot be "
            "resolved: a task's payload type must be importable where the handler is defined"
        )
    payload_type = annotation if _is_typed_payload(annotation) else None
    if payload_type is not None and _is_array_like(payload_type):
        raise SignatureError(
            f"{function.__qualname__}: a payload is a JSON object, and "
            f"{payload_type.__qualname__} is a Struct with array_like=True (encoded as an "
            "array): declare it without array_like"
        )
    if payload_type is not None:
        try:  # what every enqueue's check and every job's decoding would otherwise refuse
            msgspec.json.Decoder(payload_type)
        except TypeError as exc:
            name = getattr(payload_type, "__qualname__", str(payload_type))
            raise SignatureError(
                f"{function.__qualname__}: its payload type {name} cannot be decoded: {exc}"
            ) from None
    return True, len(parameters) == 2, payload_type


def _signature(function: Callable[..., Any]) -> inspect.Signature:
    """The signature, without evaluating the annotations Python defers (on 3.14, where it
    would otherwise evaluate them, a name it cannot resolve is left as a reference)."""
    if sys.version_info >= (3, 14):
        from annotationlib import Format

        return inspect.signature(function, annotation_format=Format.FORWARDREF)
    return inspect.signature(function)


def _hints(function: Callable[..., Any], parameters: list[inspect.Parameter]) -> dict[str, Any]:
    """The parameters' annotations as typing.get_type_hints resolves them. When one names
    what the module does not define at run time, each is resolved on its own, and those
    that cannot be are left as their text."""
    try:
        return typing.get_type_hints(function)
    except NameError:
        pass
    namespace = getattr(inspect.unwrap(function), "__globals__", {})
    hints: dict[str, Any] = {}
    for parameter in parameters:
        if parameter.annotation is inspect.Parameter.empty:
            continue
        # A deferred annotation's text (on 3.14, the reference's); quoted under
        # `from __future__ import annotations`, the text of a text.
        value = getattr(parameter.annotation, "__forward_arg__", parameter.annotation)
        with contextlib.suppress(NameError):  # then `value` stays the text it could not
            for _ in range(2):
                if isinstance(value, str):
                    value = eval(value, namespace)  # noqa: S307 - the module's own annotation
        if typing.get_origin(value) is typing.Annotated:
            value = typing.get_args(value)[0]
        hints[parameter.name] = value
    return hints


def _is_context(parameter: inspect.Parameter, hints: Mapping[str, Any]) -> bool:
    """Annotated JobContext (by name, when only type checkers import it), or unannotated
    and named `ctx`."""
    annotation = hints.get(parameter.name)
    if annotation is None:
        return parameter.name == "ctx"
    if isinstance(annotation, str):
        return annotation.rpartition(".")[2] == JobContext.__name__
    return annotation is JobContext


def _may_be_context(parameter: inspect.Parameter, hints: Mapping[str, Any]) -> bool:
    """The second parameter takes the context: unannotated, or annotated JobContext (by
    name where only type checkers import it)."""
    return parameter.name not in hints or _is_context(parameter, hints)


def _cannot_hold_an_object(annotation: Any) -> bool:
    """A payload annotation no JSON object fits (`int`, `str`, `list[int]` ...): a class, or a
    generic one's origin, that is neither a mapping, a typed payload nor `object`."""
    if annotation is None or annotation is Any or isinstance(annotation, str):
        return False  # none, any, or not resolved (refused as such after this)
    origin = typing.get_origin(annotation) or annotation
    if not isinstance(origin, type) or origin is object or _is_typed_payload(annotation):
        return False
    return not issubclass(origin, Mapping)


def _named(annotation: Any) -> str:
    if isinstance(annotation, type) and typing.get_origin(annotation) is None:
        return annotation.__qualname__
    return str(annotation)


def _is_array_like(payload_type: type) -> bool:
    config = getattr(payload_type, "__struct_config__", None)
    return bool(getattr(config, "array_like", False))


def _is_typed_payload(annotation: Any) -> bool:
    return isinstance(annotation, type) and (
        issubclass(annotation, msgspec.Struct)
        or dataclasses.is_dataclass(annotation)
        or typing.is_typeddict(annotation)
    )
