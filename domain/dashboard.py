"""Values the dashboard shows: dead letters grouped by the shape of their error, and job
counts per queue that may be estimates on big tables."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

ERROR_SHAPE_LENGTH = 200
"""Characters of a shape kept: enough to tell errors apart, short enough to group on."""

# The order matters and is the same in the Postgres migration (0012): quoted values first
# (they may hold digits), then UUIDs, then long hex ids, then any remaining digits.
_SHAPE_RULES = (
    (re.compile(r"'[^']*'"), "'?'"),
    (re.compile(r'"[^"]*"'), '"?"'),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<id>"),
    (re.compile(r"[0-9a-f]{16,}", re.I), "<id>"),
    (re.compile(r"[0-9]+"), "N"),
)


def error_shape(error: str) -> str:
    """The first line of `error` with its variable parts replaced, so that "order 17 not
    found" and "order 42 not found" have one shape ("order N not found"). Quoted values
    become '?', UUIDs and long hex ids <id>, numbers N."""
    shape = error.split("\n", 1)[0]
    for pattern, replacement in _SHAPE_RULES:
        shape = pattern.sub(replacement, shape)
    return shape[:ERROR_SHAPE_LENGTH]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterGroup:
    """Dead letters of one job type whose errors share a shape (`error_shape` of the last
    error, or of the reason when there was none)."""

    job_type: str
    error_shape: str
    count: int
    first_failed_at: datetime
    last_failed_at: datetime


COUNT_COLUMNS = ("ready", "delayed", "running", "failed", "dlq", "succeeded", "cancelled")
"""What the overview counts per queue: PENDING split into ready (due) and delayed (not yet
due), then the other states; `failed` jobs wait for their next retry."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueJobCounts:
    queue: str
    counts: dict[str, int]
    """One entry per COUNT_COLUMNS name."""
    estimated: frozenset[str] = frozenset()
    """The columns whose count is an estimate (too many jobs to count on every refresh)."""
