"""Strict JSON request bodies, checked before the framework binds them.

Runs as a route's `before_request` hook so that every problem with a body becomes a 400 (or
415) naming the offending field, instead of the framework's generic messages: an empty or
malformed body, a non-JSON content type, a compressed body, an unknown or missing field, a
value of the wrong type or out of range; and a body sent to a route that takes none.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

import msgspec
from litestar import Request
from litestar.utils.scope.state import ScopeState

from taskforge.domain.errors import ValidationError
from taskforge.entrypoints.http.errors import ApiError
from taskforge.entrypoints.http.schemas import FIELD_RULES

BodyCheck = Callable[[Request[Any, Any, Any]], Awaitable[None]]

_CURL_DEFAULT_MEDIA_TYPE = "application/x-www-form-urlencoded"
_JSON_MEDIA_TYPE = re.compile(r"application/(?:[\w.\-]+\+)?json")
_AT_PATH = re.compile(r"^(?P<problem>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<field>[^`]*)`$")
_MISSING_FIELD = re.compile(r"^Object missing required field `(?P<field>[^`]*)`$")
_NUMBER_OUT_OF_RANGE = "Number out of range"
_NUMBER_OUT_OF_RANGE_RULE = (
    "must not hold a number out of a 64-bit float's range (about ±1.8e308); send such "
    "numbers as strings"
)
"""The message of such a number inside a field (a payload), whose own rule says nothing of
numbers."""


def json_body(body_type: Any, *, required: bool, item_type: Any = None) -> BodyCheck:
    """A hook that rejects the request unless its body decodes as `body_type`. With
    `required=False` an empty body is accepted (the handler sees None); `item_type` names
    the struct of a batch's items, so their errors name `jobs[<index>].<field>`."""
    allowed = _field_names(body_type)
    item_fields = _field_names(item_type) if item_type is not None else None

    async def check(request: Request[Any, Any, Any]) -> None:
        body = await request.body()
        if not body.strip():
            if required:
                raise ValidationError("body", "a JSON object is required")
            return
        _check_content_type(request.headers.get("content-type"))
        _check_content_encoding(request.headers.get("content-encoding"))
        # The decoded body becomes the request's JSON, which Litestar binds to the handler's
        # `data` as it is: the body is decoded and checked once, here.
        ScopeState.from_scope(request.scope).json = decode(body, body_type, allowed, item_fields)

    return check


_NOTHING = re.compile(rb"\s*(?:\{\s*\})?\s*")
"""What a route that takes no body accepts: nothing (whitespace counts as nothing), or the
empty object that many clients send with every POST."""


async def no_body(request: Request[Any, Any, Any]) -> None:
    """A `before_request` hook for a route that takes no body: any other body is a 400
    before the route acts, rather than ignored (a reason or an option the route does not
    take would otherwise seem to have been applied)."""
    if not _NOTHING.fullmatch(await request.body()):
        raise ValidationError("body", "this route takes no body; send none, or {}")


_LONE_HIGH_SURROGATE = re.compile(
    rb"(?<!\\)(?:\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2})(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)
"""A \\ud800-\\udbff escape (after an even run of backslashes, so not itself escaped text)
that no \\udc00-\\udfff escape follows to pair it."""
_TRUNCATED = "Input data was truncated"


def decode(
    body: bytes,
    body_type: Any,
    allowed: tuple[str, ...] = (),
    item_fields: tuple[str, ...] | None = None,
) -> Any:
    """Decode `body` strictly as `body_type`; a failure is a ValidationError naming the field
    (`jobs[<index>].<field>` inside a batch, when `item_fields` are given)."""
    try:
        return msgspec.json.decode(body, type=body_type)
    except msgspec.ValidationError as exc:
        item_error = batch_item_error(str(exc), item_fields) if item_fields else None
        raise (item_error or _field_error(str(exc), allowed)) from None
    except msgspec.DecodeError as exc:
        # msgspec reports a lone surrogate as truncated input.
        if str(exc) == _TRUNCATED and (lone := _LONE_HIGH_SURROGATE.search(body)) is not None:
            escape = lone.group(1)
            reason = f"a lone UTF-16 surrogate {escape.decode()} at byte {lone.start(1)}"
            raise ValidationError("body", f"malformed JSON ({reason})") from None
        raise ValidationError("body", f"malformed JSON ({exc})") from None
    except RecursionError:
        raise ValidationError("body", "JSON nested too deeply") from None


def _check_content_type(content_type: str | None) -> None:
    # A body without a Content-Type is read as JSON, as most JSON APIs do; a declared
    # non-JSON type (text, XML) is a client mistake worth naming.
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    # `curl -d '{...}'` labels its body as a form unless told otherwise; the body is JSON
    # all the same, so read it as such (it is still decoded strictly).
    if media_type == _CURL_DEFAULT_MEDIA_TYPE:
        return
    if not _JSON_MEDIA_TYPE.fullmatch(media_type):
        raise ApiError(
            415,
            "validation_error",
            f"Content-Type must be application/json, not {media_type or 'empty'!r}",
            {"field": "Content-Type"},
        )


def _check_content_encoding(content_encoding: str | None) -> None:
    # A compressed body would be read as malformed JSON; RFC 9110 answers an unsupported
    # content coding with 415, saying in Accept-Encoding which codings a body may have.
    if content_encoding is None:
        return
    codings = [coding.strip().lower() for coding in content_encoding.split(",")]
    if any(coding not in ("", "identity") for coding in codings):
        raise ApiError(
            415,
            "validation_error",
            f"Content-Encoding {content_encoding.strip()!r} is not supported: send the body "
            "uncompressed",
            {"field": "Content-Encoding"},
            headers={"Accept-Encoding": "identity"},
        )


def _field_error(message: str, allowed: tuple[str, ...]) -> ValidationError:
    at_path = _AT_PATH.match(message)
    problem, path = (at_path["problem"], at_path["path"]) if at_path else (message, "")
    if unknown := _UNKNOWN_FIELD.match(problem):
        names = ", ".join(allowed)
        return ValidationError(unknown["field"], f"unknown field; allowed: {names}")
    if missing := _MISSING_FIELD.match(problem):
        return ValidationError(missing["field"], "is required")
    field = re.split(r"[.\[]", path.lstrip("."), maxsplit=1)[0] or "body"
    rule = FIELD_RULES.get(field, problem)
    if problem == _NUMBER_OUT_OF_RANGE and path.lstrip(".") != field:
        rule = _NUMBER_OUT_OF_RANGE_RULE
    return ValidationError(field, rule, details={"problem": problem})


_BATCH_ITEM = re.compile(r"^(?P<item>\.jobs\[(?P<index>\d+)\])(?P<rest>.*)$")


def batch_item_error(message: str, item_fields: tuple[str, ...]) -> ValidationError | None:
    """For a batch body, the error of one item, named `jobs[<index>].<field>`; None when the
    problem is not inside an item."""
    at_path = _AT_PATH.match(message)
    if at_path is None or (item := _BATCH_ITEM.match(at_path["path"])) is None:
        return None
    inner = _field_error(f"{at_path['problem']} - at `${item['rest']}`", item_fields)
    field = "" if inner.field == "body" else f".{inner.field}"
    return ValidationError(
        f"jobs[{item['index']}]{field}",
        inner.message,
        details={"index": int(item["index"]), "problem": at_path["problem"]},
    )


def _field_names(body_type: Any) -> tuple[str, ...]:
    if get_origin(body_type) in (Union, UnionType):
        struct = next(arg for arg in get_args(body_type) if arg is not NoneType)
    else:
        struct = body_type
    return tuple(field.encode_name for field in msgspec.structs.fields(struct))
