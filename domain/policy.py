"""Retry policy: how often a job may run and how long to wait between attempts."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypedDict

from taskforge.domain.errors import ValidationError

RandomSource = Callable[[], float]
"""Returns a float in [0, 1), like random.random; injected so tests are deterministic."""

MAX_ATTEMPTS_LIMIT = 1000
MAX_DURATION = 10 * 365 * 24 * 3600.0
"""Ten years: the longest delay anything may ask for (beyond it datetimes overflow)."""
VISIBILITY_TIMEOUT_RANGE = (1.0, 43200.0)


def attempts_exhausted(attempt_count: int, max_attempts: int) -> bool:
    """True once `attempt_count` attempts have started and `max_attempts` allows no more: a
    failure now dead-letters the job instead of retrying it. The one statement of this rule;
    the Postgres store's SQL form is checked against it by a contract test."""
    return attempt_count >= max_attempts


class PolicyOptions(TypedDict, total=False):
    """The retry policy, lease and priority of a job by keyword, as an application gives
    them: an enqueue's options, a typed task's defaults, each tick of a schedule. One left
    out takes the default where the job is built."""

    max_attempts: int
    initial_delay: float
    backoff: float
    max_delay: float
    jitter: bool
    visibility_timeout: float
    timeout: float
    """Seconds one attempt may run before it fails (0: no limit). Not an HTTP timeout."""
    priority: int
    """0 (claimed first) to 9 (claimed last); default 5. Within a queue a ready job of a
    higher priority always starts before one of a lower priority."""


POLICY_OPTIONS = frozenset(PolicyOptions.__annotations__)
"""PolicyOptions' keys: the names of a job's policy options."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Durations are seconds. `max_attempts` bounds `attempt_count`: the failure of the last
    allowed attempt dead-letters the job."""

    max_attempts: int = 3
    initial_delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 300.0
    jitter: bool = False

    def __post_init__(self) -> None:
        validate_policy(self)

    @staticmethod
    def of(
        max_attempts: int, initial_delay: float, backoff: float, max_delay: float, jitter: bool
    ) -> RetryPolicy:
        """The same as the constructor, but each distinct policy is built (and validated)
        once: a queue's jobs nearly all share a few policies, and rows are read by the
        thousand."""
        try:
            return _interned(max_attempts, initial_delay, backoff, max_delay, jitter)
        except TypeError:  # an unhashable value, so no valid one: built uncached, the
            # constructor's check names it
            return _interned.__wrapped__(max_attempts, initial_delay, backoff, max_delay, jitter)

    def exhausted_by(self, attempt_count: int) -> bool:
        """See attempts_exhausted."""
        return attempts_exhausted(attempt_count, self.max_attempts)

    def delay_after(self, attempt: int, random: RandomSource) -> timedelta:
        """The wait before the retry that follows attempt `attempt` (1-based).

        min(max_delay, initial_delay * backoff ** (attempt - 1)); with jitter, a uniform
        draw from [delay/2, delay), so jitter never lengthens the wait.
        """
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        delay = _capped_exponential(self.initial_delay, self.backoff, self.max_delay, attempt)
        if self.jitter:
            delay = delay / 2 + random() * (delay / 2)
        return timedelta(seconds=delay)


@functools.lru_cache(maxsize=1024, typed=True)
def _interned(
    max_attempts: int, initial_delay: float, backoff: float, max_delay: float, jitter: bool
) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=max_attempts,
        initial_delay=initial_delay,
        backoff=backoff,
        max_delay=max_delay,
        jitter=jitter,
    )


def _capped_exponential(initial: float, backoff: float, cap: float, attempt: int) -> float:
    # backoff ** n overflows a float long before max_attempts (1000) runs out; once the
    # product reaches the cap it stays there, so stop multiplying.
    delay = initial
    for _ in range(attempt - 1):
        if delay >= cap:
            break
        delay *= backoff
    return min(cap, delay)


def validate_policy(policy: RetryPolicy) -> None:
    if isinstance(policy.max_attempts, bool) or not isinstance(policy.max_attempts, int):
        raise ValidationError("max_attempts", "must be an integer")
    if not 1 <= policy.max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise ValidationError("max_attempts", f"must be between 1 and {MAX_ATTEMPTS_LIMIT}")
    _require_finite("initial_delay", policy.initial_delay)
    _require_finite("backoff", policy.backoff)
    _require_finite("max_delay", policy.max_delay)
    if not 0 <= policy.initial_delay <= MAX_DURATION:
        raise ValidationError("initial_delay", f"must be between 0 and {MAX_DURATION:.0f} seconds")
    if policy.backoff < 1:
        raise ValidationError("backoff", "must be >= 1")
    if policy.max_delay < policy.initial_delay:
        raise ValidationError("max_delay", "must be >= initial_delay")
    if policy.max_delay > MAX_DURATION:
        raise ValidationError("max_delay", f"must be at most {MAX_DURATION:.0f} seconds")
    if not isinstance(policy.jitter, bool):
        raise ValidationError("jitter", "must be true or false")


def validate_visibility_timeout(seconds: float) -> float:
    _require_finite("visibility_timeout", seconds)
    low, high = VISIBILITY_TIMEOUT_RANGE
    if not low <= seconds <= high:
        raise ValidationError("visibility_timeout", f"must be between {low:g} and {high:g} seconds")
    return float(seconds)


def _require_finite(field: str, value: object) -> None:
    require_number(field, value)
    if isinstance(value, float) and not math.isfinite(value):  # an int is always finite
        raise ValidationError(field, "must be a finite number")


def require_number(field: str, value: object) -> None:
    """An int or a float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(field, "must be a number")
