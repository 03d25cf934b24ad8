"""Validation of names and request values, with messages that name the field (in snake_case,
as the domain spells it; each entrypoint spells it as its users do)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from taskforge.domain.errors import ValidationError
from taskforge.domain.policy import MAX_DURATION

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
RESERVED_QUEUE_PREFIX = "taskforge:"
DEFAULT_QUEUE = "jobs:ready"
"""The queue of a job that names none: the service's QUEUE_NAME unless set otherwise, and
the SDK's transactional enqueue's."""
IDEMPOTENCY_KEY_MAX = 255

EARLIEST_DUE_AT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_DUE_AT = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
"""A job's due time (`runAt`, or now + `delay`) lies in this range, ends included. Past it
datetimes overflow, and the Postgres driver turns the very ends of Python's datetime range
into -infinity and infinity, which it reads back as offset-less datetimes."""
DUE_AT_RANGE = (
    f"from {EARLIEST_DUE_AT:%Y-%m-%dT%H:%M:%SZ} to {LATEST_DUE_AT:%Y-%m-%dT%H:%M:%SZ} (UTC)"
)

_CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)

HIGHEST_PRIORITY = 0
LOWEST_PRIORITY = 9
DEFAULT_PRIORITY = 5
PRIORITIES = range(HIGHEST_PRIORITY, LOWEST_PRIORITY + 1)
"""A job's priority: 0 is claimed first, 9 last; within one priority, oldest due first."""

SNOOZE_CAPS = range(0, 1_000_001)
"""The snooze caps allowed: the worker's MAX_SNOOZES and a task's own `max_snoozes`."""

DEFAULT_PAGE_LIMIT = 50
MAX_PAGE_LIMIT = 200


def validate_job_type(value: object) -> str:
    return _validate_name("job_type", value)


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


def validate_idempotency_key(value: object, field: str = "idempotency_key") -> str:
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    if not 1 <= len(value) <= IDEMPOTENCY_KEY_MAX:
        raise ValidationError(field, f"must be 1-{IDEMPOTENCY_KEY_MAX} characters")
    if not value.isprintable():
        raise ValidationError(field, "must contain printable characters only")
    return value


def validate_unique_key(value: object) -> str:
    """A unique key follows the idempotency key's rules: 1-255 printable characters."""
    return validate_idempotency_key(value, "unique_key")


def validate_payload(payload: object) -> dict[str, Any]:
    """A JSON object (a mapping with string keys) with no NUL character in any string or key
    and no NaN or infinite number: Postgres cannot store NUL in text or jsonb, and JSON has
    no NaN (an encoder would write null, and the job would hold another value than the one
    sent), so both are refused here for every backend. Whether the other values are JSON is
    the encoder's to say, where the job is stored."""
    # A dict is checked first: it is nearly every payload, and isinstance against the
    # Mapping ABC costs several times more (this runs for every job enqueued).
    if not isinstance(payload, dict | Mapping):
        raise ValidationError("payload", "must be a JSON object")
    if not payload:
        return payload if isinstance(payload, dict) else {}
    if any(not isinstance(key, str) for key in payload):
        raise ValidationError("payload", "must be a JSON object (its keys strings)")
    if (problem := _unstorable(payload)) is not None:
        raise ValidationError("payload", problem)
    return payload if isinstance(payload, dict) else dict(payload)


NUL_IN_PAYLOAD = "must not contain NUL characters (\\u0000)"
MAX_PAYLOAD_DEPTH = 128
"""How deeply a payload may nest (the object itself is the first level), as a result may
(domain.result.MAX_RESULT_DEPTH): the API's encoder and JSON decoders recurse on nesting,
so a payload near Python's recursion limit would be stored and then fail every answer that
holds it."""
_CONTAINERS = (Mapping, list, tuple, set, frozenset)
"""What an encoder writes as an object or an array."""


MAX_WRITTEN_OUT_GROWTH = 1024 * 1024
"""How many characters a payload's numbers may gain when stored. Postgres keeps a JSON
number as a decimal and writes it out in full when read: 1e308 as 309 digits, 1e-300 as
302 characters. A payload of such numbers, small as sent, would read back tens of times
its size from every read of its job (a page of them: gigabytes), so their growth is
bounded, as MAX_PAYLOAD_BYTES bounds a body; the same on every backend."""


def written_out_growth(number: float) -> int:
    """About how many characters more than its shortest form `number` takes written out in
    full, never fewer: its decimal exponent's worth for one with at least 16 digits before
    the point or 5 zeros after it, else none (a few at most)."""
    magnitude = abs(number)
    if magnitude == 0.0 or 1e-5 <= magnitude < 1e16:
        return 0
    return abs(math.floor(math.log10(magnitude)))


def _unstorable(value: Any) -> str | None:
    """What in `value` no backend can store or answer as sent: a NUL character, a NaN or an
    infinity, numbers that written out in full grow by more than MAX_WRITTEN_OUT_GROWTH, or
    nesting deeper than MAX_PAYLOAD_DEPTH. Sets are walked too: an encoder writes them as
    arrays."""
    # Iterative, a level of nesting at a time: a payload may nest deeper than Python's
    # recursion limit allows, and is refused at the first container past the bound. Numbers
    # and dicts by their exact type first: isinstance against the Mapping ABC costs several
    # times more, and this runs for every value of every job enqueued.
    level = [value]
    depth = 0
    growth = 0
    while level:
        below: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is int or kind is bool or item is None:
                continue
            if isinstance(item, str):
                if "\x00" in item:
                    return NUL_IN_PAYLOAD
            elif isinstance(item, float):
                if not math.isfinite(item):
                    return "must not contain NaN or infinite numbers (JSON has none)"
                growth += written_out_growth(item)
                if growth > MAX_WRITTEN_OUT_GROWTH:
                    return (
                        "must not hold so many very large or very small numbers: stored, each "
                        "is written out in full (1e308 as 309 digits), in all more than "
                        f"{MAX_WRITTEN_OUT_GROWTH} characters over their size as sent; send "
                        "such numbers as strings"
                    )
            elif kind is list or kind is dict or isinstance(item, _CONTAINERS):
                if depth == MAX_PAYLOAD_DEPTH:
                    return f"must not nest deeper than {MAX_PAYLOAD_DEPTH} levels"
                if kind is list:
                    below.extend(item)
                elif kind is dict or isinstance(item, Mapping):
                    below.extend(item.keys())
                    below.extend(item.values())
                else:
                    below.extend(item)
        level = below
        depth += 1
    return None


def validate_delay(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValidationError("delay", "must be a number of seconds")
    if not 0 <= value <= MAX_DURATION:
        raise ValidationError("delay", f"must be between 0 and {MAX_DURATION:.0f} seconds")
    return float(value)


def validate_run_at(value: object) -> datetime:
    """`value` in UTC, when it carries an offset and lies in the due-time range."""
    if not isinstance(value, datetime):
        raise ValidationError("run_at", "must be a date-time")
    if value.utcoffset() is None:
        raise ValidationError("run_at", "must carry a UTC offset (e.g. Z)")
    try:
        in_utc = value.astimezone(UTC)
    except OverflowError:  # the offset pushes it past year 1 or 9999
        in_utc = None
    if in_utc is None or not EARLIEST_DUE_AT <= in_utc <= LATEST_DUE_AT:
        raise ValidationError("run_at", f"must be {DUE_AT_RANGE}")
    return in_utc


def parse_job_id(raw: str) -> UUID:
    """A job id in its canonical text form only: 8-4-4-4-12 hex digits, either case (no
    braces, `urn:uuid:` prefix, missing dashes or non-ASCII digits)."""
    if not _CANONICAL_UUID.fullmatch(raw):
        raise ValidationError("id", "must be a UUID like 01900000-0000-7000-8000-000000000000")
    return UUID(raw)


_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


def whole_number(text: str) -> int:
    """A number a person typed where only whole numbers count (a command-line option):
    decimal digits, with a sign or none. "1.5" or "0x10" raise ValueError, where a rounding
    or another base would act on a number nobody wrote."""
    if not _WHOLE_NUMBER.fullmatch(text):
        raise ValueError(f"must be a whole number, not {text!r}")
    return int(text)


def validate_timeout(value: object) -> float:
    """A job's time limit in seconds; 0 means none."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValidationError("timeout", "must be a number of seconds")
    if not 0 <= value <= MAX_DURATION:
        raise ValidationError(
            "timeout", f"must be between 0 and {MAX_DURATION:.0f} seconds (0: none)"
        )
    return float(value)


def validate_priority(value: object) -> int:
    """A whole number from 0 (highest) to 9 (lowest)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("priority", "must be a whole number")
    if value not in PRIORITIES:
        raise ValidationError(
            "priority",
            f"must be from {HIGHEST_PRIORITY} (highest) to {LOWEST_PRIORITY} (lowest)",
        )
    return value


def validate_max_snoozes(value: object) -> int:
    """How many times a job may snooze; its next snooze dead-letters it."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in SNOOZE_CAPS:
        raise ValidationError("max_snoozes", f"must be a whole number from 0 to {SNOOZE_CAPS[-1]}")
    return value


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
