"""A per-queue token bucket in Redis, shared by every worker on every machine."""

from __future__ import annotations

from redis.asyncio import Redis

from taskforge.adapters.redis.client import translate_connection_errors
from taskforge.adapters.redis.keys import DEFAULT_PREFIX, RedisKeys
from taskforge.application.ports import RateGrant

# The same bucket as InMemoryRateLimiter, read and written atomically. Time comes from the
# server (TIME), so workers whose clocks disagree still share one budget. A bucket left
# alone refills completely after capacity / rate seconds, and a missing key reads as a full
# bucket, so the key may expire after that (plus a second of slack).
# Numbers leave the script as text: Redis would truncate a Lua number to an integer.
ACQUIRE_SCRIPT = """
local rate = tonumber(ARGV[1])
local wanted = tonumber(ARGV[2])
local capacity = math.max(1, rate)
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1])
local last = tonumber(bucket[2])
if tokens == nil or last == nil then
  tokens = capacity
  last = now
end
local elapsed = math.max(0, now - last)
tokens = math.min(capacity, tokens + elapsed * rate)
local granted = math.min(wanted, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'at', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(capacity / rate * 1000) + 1000))
local retry_after = 0
if granted < wanted then
  retry_after = (1 - (tokens % 1)) / rate
end
return {granted, string.format('%.17g', retry_after)}
"""


class RedisRateLimiter:
    """The `RateLimiter` port on Redis: a token bucket per queue holding at most one second
    of permits (burst = rate, at least 1), refilled continuously at `rate_per_sec`.
    One script call per acquire; connection failures raise `Unavailable("redis", ...)`."""

    def __init__(self, client: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._keys = RedisKeys(prefix)
        self._acquire = client.register_script(ACQUIRE_SCRIPT)

    async def acquire(self, queue: str, rate_per_sec: float, wanted: int) -> RateGrant:
        """Grant up to `wanted` permits now; `retry_after` is the wait for the next one when
        fewer were granted. `rate_per_sec` must be positive."""
        if rate_per_sec <= 0:
            raise ValueError(f"rate_per_sec must be positive, got {rate_per_sec}")
        if wanted <= 0:
            return RateGrant(0, 0.0)
        with translate_connection_errors():
            granted, retry_after = await self._acquire(
                keys=[self._keys.rate_bucket(queue)], args=[repr(float(rate_per_sec)), wanted]
            )
        return RateGrant(int(granted), float(retry_after))
