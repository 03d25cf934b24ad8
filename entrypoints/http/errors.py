"""One table from exceptions to HTTP statuses and stable error codes.

Every non-2xx response is `{"code", "message", "details"}`, including the framework's own
(unknown route, wrong method, malformed query) and unexpected exceptions (500, no traceback
in the body; the traceback goes to the log).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException

from taskforge.domain.errors import (
    DeadLetterNotFound,
    DomainError,
    InvalidTransition,
    JobNotFound,
    ScheduleNotFound,
    Unavailable,
    UniqueKeyTaken,
    ValidationError,
)
from taskforge.entrypoints.http.middleware import (
    CLIENT_CLOSED_REQUEST,
    caller_is_authorized,
    client_disconnected,
)
from taskforge.entrypoints.http.schemas import FIELD_RULES, ErrorOut, NotReadyOut

log = logging.getLogger("taskforge.http")

DOMAIN_ERRORS: dict[type[DomainError], tuple[int, str]] = {
    ValidationError: (400, "validation_error"),
    JobNotFound: (404, "not_found"),
    DeadLetterNotFound: (404, "not_found"),
    ScheduleNotFound: (404, "not_found"),
    InvalidTransition: (409, "invalid_state_transition"),
    Unavailable: (503, "not_ready"),
}

STATUS_CODES: dict[int, tuple[str, str]] = {
    400: ("validation_error", "invalid request"),
    401: ("unauthorized", "missing or invalid bearer token"),
    404: ("not_found", "no such route"),
    405: ("method_not_allowed", "method not allowed on this route"),
    409: ("invalid_state_transition", "conflict"),
    413: ("payload_too_large", "request body too large"),
    415: ("validation_error", "Content-Type must be application/json"),
    429: ("rate_limited", "too many requests"),
    503: ("not_ready", "service not ready"),
}
"""Framework errors by status: the code, and the message when the framework has none better."""

_HUMANE_FRAMEWORK_MESSAGES = {404, 405, 413}


class ApiError(Exception):
    """An error an entrypoint raises directly with its status, code and message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


class NotReady(Exception):
    """/readyz found a backing service that does not answer; `checks` has every result."""

    def __init__(self, checks: dict[str, str]) -> None:
        failing = "; ".join(f"{name} {value}" for name, value in checks.items() if value != "ok")
        super().__init__(f"not ready: {failing}")
        self.checks = checks


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> Response[ErrorOut]:
    return Response(
        ErrorOut(code=code, message=message, details=details),
        status_code=status,
        headers=headers,
        # Also where the route answers HTML (a docs page): an error is the API's JSON.
        media_type=MediaType.JSON,
    )


def handle_exception(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[ErrorOut] | Response[NotReadyOut]:
    if isinstance(exc, NotReady):
        body = NotReadyOut(
            code="not_ready",
            message=str(exc),
            details=exc.checks,
            status="not_ready",
            checks=exc.checks,
        )
        return Response(body, status_code=503)
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    if isinstance(exc, DomainError):
        return _domain_error(exc, detailed=caller_is_authorized(request.scope))
    if isinstance(exc, NotFoundException) and (field := _slash_in_segment(request)):
        return error_response(
            400,
            "validation_error",
            f"{field}: must not hold a slash (%2F in the path)",
            {"field": field},
        )
    if isinstance(exc, HTTPException) and (exc.status_code < 500 or exc.status_code == 503):
        return _framework_error(exc)
    if client_disconnected():
        # Nobody reads this answer; the access line and the metrics record the 499.
        return error_response(
            CLIENT_CLOSED_REQUEST, "client_closed_request", "the client disconnected"
        )
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


_SEGMENT_FIELDS = {"jobs": "id", "dlq": "id", "queues": "queue", "schedules": "name"}
"""What the segment after each route's first one names, as its 400s name it."""


def _slash_in_segment(request: Request[Any, Any, Any]) -> str | None:
    """The field a path segment stands for when it held an encoded slash: decoded before
    routing, `/queues/a%2Fb/pause` matches no route, although the mistake is the name."""
    segments = (request.scope.get("raw_path") or b"").lower().split(b"/")
    # ["", "queues", "a%2fb", "pause"]: the name is the second segment.
    if len(segments) < 3 or b"%2f" not in segments[2]:
        return None
    return _SEGMENT_FIELDS.get(segments[1].decode("ascii", "replace"))


def _domain_error(exc: DomainError, *, detailed: bool) -> Response[ErrorOut]:
    """`detailed`: whether the caller may read why a service is unavailable (addresses,
    database and role names); an open route (`/metrics`) shows others only which one."""
    status, code = next(
        (mapped for kind, mapped in DOMAIN_ERRORS.items() if isinstance(exc, kind)),
        (500, "internal_error"),
    )
    match exc:
        case ValidationError():
            extra = exc.details if isinstance(exc.details, dict) else {}
            details = {"field": exc.field, **extra}
            return error_response(status, code, f"{exc.field}: {exc.message}", details)
        case UniqueKeyTaken():
            details = {
                "state": exc.current,
                "target": exc.target,
                "uniqueKey": exc.unique_key,
                "heldBy": str(exc.holder_id),
            }
            return error_response(status, code, str(exc), details)
        case InvalidTransition():
            details = {"state": exc.current, "target": exc.target}
            return error_response(status, code, str(exc), details)
        case Unavailable():
            log.warning("%s", exc)
            message = str(exc) if detailed else f"{exc.service} unavailable"
            return error_response(
                status, code, message, {"service": exc.service}, {"Retry-After": "1"}
            )
        case _:
            return error_response(status, code, str(exc))


def _framework_error(exc: HTTPException) -> Response[ErrorOut]:
    status = exc.status_code
    code, default_message = STATUS_CODES.get(status, ("validation_error", "request rejected"))
    headers = {
        key: value
        for key, value in (exc.headers or {}).items()
        if key.lower() in {"allow", "retry-after", "www-authenticate"}
    }
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        problems = [_problem(item) for item in exc.extra]
        first = problems[0]
        message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        details = {"field": first["field"], "problems": problems}
        return error_response(status, code, message, details, headers)
    if status in _HUMANE_FRAMEWORK_MESSAGES or not exc.detail:
        message = default_message
    else:
        message = exc.detail
    return error_response(status, code, message, None, headers)


_MSGSPEC_SUFFIX = re.compile(r" - at `\$[^`]*`$")


def _problem(item: Any) -> dict[str, Any]:
    """One framework validation failure (a query or path parameter) in the API's words."""
    if not isinstance(item, dict):
        return {"field": None, "message": str(item)}
    field = item.get("key")
    raw = _MSGSPEC_SUFFIX.sub("", str(item.get("message", "invalid value")))
    message = FIELD_RULES.get(field, raw) if isinstance(field, str) else raw
    return {"field": field, "message": message}
