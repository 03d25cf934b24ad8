from __future__ import annotations

import math
import time
from collections.abc import Callable

from taskforge.application.ports import RateGrant


class InMemoryRateLimiter:
    """A token bucket per queue holding at most one second of permits (burst = rate)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._buckets: dict[str, tuple[float, float]] = {}

    async def acquire(self, queue: str, rate_per_sec: float, wanted: int) -> RateGrant:
        now = self._monotonic()
        capacity = max(1.0, rate_per_sec)
        tokens, last = self._buckets.get(queue, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate_per_sec)
        granted = min(wanted, math.floor(tokens))
        tokens -= granted
        self._buckets[queue] = (tokens, now)
        retry_after = 0.0 if granted == wanted else (1 - (tokens % 1)) / rate_per_sec
        return RateGrant(granted, retry_after)
