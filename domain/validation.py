"""Validation of names and request values, with messages that name the field."""

from __future__ import annotations

import re
from dataclasses import dataclass

from taskforge.domain.errors import ValidationError
from taskforge.domain.policy import MAX_DURATION

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
RESERVED_QUEUE_PREFIX = "taskforge:"
IDEMPOTENCY_KEY_MAX = 255

DEFAULT_PAGE_LIMIT = 50
MAX_PAGE_LIMIT = 200


def validate_job_type(value: object) -> str:
    return _validate_name("jobType", value)


def validate_queue_name(value: object, field: str = "queue") -> str:
    name = _validate_name(field, value)
    if name.startswith(RESERVED_QUEUE_PREFIX):
        raise ValidationError(field, f"must not start with {RESERVED_QUEUE_PREFIX!r} (reserved)")
    return name


def _validate_name(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    if not NAME_PATTERN.fullmatch(value):
        raise ValidationError(field, "must be 1-128 characters of letters, digits and _ - . :")
    return value


def validate_idempotency_key(value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError("idempotencyKey", "must be a string")
    if not 1 <= len(value) <= IDEMPOTENCY_KEY_MAX:
        raise ValidationError("idempotencyKey", f"must be 1-{IDEMPOTENCY_KEY_MAX} characters")
    if not value.isprintable():
        raise ValidationError("idempotencyKey", "must contain printable characters only")
    return value


def validate_delay(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValidationError("delay", "must be a number of seconds")
    if not 0 <= value <= MAX_DURATION:
        raise ValidationError("delay", f"must be between 0 and {MAX_DURATION:g} seconds")
    return float(value)


def validate_timeout(value: object) -> float:
    """A job's time limit in seconds; 0 means none."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValidationError("timeout", "must be a number of seconds")
    if not 0 <= value <= MAX_DURATION:
        raise ValidationError(
            "timeout", f"must be between 0 and {MAX_DURATION:g} seconds (0: none)"
        )
    return float(value)


@dataclass(frozen=True, slots=True)
class Page:
    """A window on a newest-first list. Build it with `Page.clamp` from raw input."""

    limit: int = DEFAULT_PAGE_LIMIT
    offset: int = 0

    @classmethod
    def clamp(cls, limit: int | None, offset: int | None) -> Page:
        """Limit defaults to 50 and is clamped to 200; below 1 is an error. A negative
        offset becomes 0."""
        if limit is None:
            limit = DEFAULT_PAGE_LIMIT
        if limit < 1:
            raise ValidationError(
                "limit", f"must be >= 1 (values above {MAX_PAGE_LIMIT} are clamped)"
            )
        return cls(limit=min(limit, MAX_PAGE_LIMIT), offset=max(0, offset or 0))
