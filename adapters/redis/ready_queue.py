"""Dispatch hints in Redis lists: one list per queue, named as the queue, FIFO.

Hints enter at the left (LPUSH) and leave at the right (RPOP), so the oldest hint is popped
first; `push_front` puts hints back at the right end. A hint is the job id as text.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from uuid import UUID

from redis.asyncio import Redis

from taskforge.adapters.redis.client import blocking_slice, translate_connection_errors
from taskforge.adapters.redis.keys import DEFAULT_PREFIX, RedisKeys
from taskforge.domain.job import ReadyHint

log = logging.getLogger("taskforge.redis")

MIN_BLOCK = 0.01
"""Shortest blocking wait sent to Redis: BRPOP reads a timeout of 0 as "wait forever"."""

# A pipeline cannot make the count for the second queue depend on the reply for the first,
# so the top-up runs as a script: one round trip, and never more than `wanted` hints taken.
TOP_UP_SCRIPT = """
local wanted = tonumber(ARGV[1])
local taken = {}
for i, key in ipairs(KEYS) do
  local got = {}
  if wanted > 0 then
    got = redis.call('RPOP', key, wanted) or {}
    wanted = wanted - #got
  end
  taken[i] = got
end
return taken
"""


class RedisReadyQueue:
    """The `ReadyQueue` port on Redis lists. Queues are list keys verbatim; the only
    internal key is `<prefix>epoch`. Connection failures raise `Unavailable("redis", ...)`."""

    def __init__(self, client: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._keys = RedisKeys(prefix)
        self._top_up = client.register_script(TOP_UP_SCRIPT)
        self._slice = blocking_slice(client)

    async def push(self, hints: Sequence[ReadyHint]) -> None:
        """Append each hint at the tail of its queue, all queues in one round trip."""
        by_queue = _group(hints)
        if not by_queue:
            return
        with translate_connection_errors():
            if len(by_queue) == 1:  # the usual case; a pipeline costs more CPU than it saves
                [(queue, ids)] = by_queue.items()
                await self._client.lpush(self._keys.ready_list(queue), *ids)
                return
            async with self._client.pipeline(transaction=False) as pipe:
                for queue, ids in by_queue.items():
                    pipe.lpush(self._keys.ready_list(queue), *ids)
                await pipe.execute()

    async def push_front(self, hints: Sequence[ReadyHint]) -> None:
        """Put hints at the head of their queues, in the given order, so they are popped next."""
        by_queue = _group(hints)
        if not by_queue:
            return
        with translate_connection_errors():
            async with self._client.pipeline(transaction=False) as pipe:
                for queue, ids in by_queue.items():
                    pipe.rpush(self._keys.ready_list(queue), *reversed(ids))
                await pipe.execute()

    async def pop(self, queues: Sequence[str], max_count: int, timeout: float) -> list[ReadyHint]:
        """Wait up to `timeout` seconds for one hint (the first non-empty queue in `queues`
        wins), then take up to `max_count` in all without waiting, queue by queue in order.
        Returns [] on timeout; `timeout <= 0` does not wait at all."""
        if not queues or max_count <= 0:
            # Nothing can be returned; wait as an empty pop would so a polling caller
            # does not spin.
            await asyncio.sleep(max(timeout, 0.0))
            return []
        keys = [self._keys.ready_list(queue) for queue in queues]
        with translate_connection_errors():
            if timeout <= 0:
                return await self._take(queues, keys, max_count)
            first = await self._wait_for_one(queues, keys, timeout)
            if first is None:
                return []
            rest = await self._take(queues, keys, max_count - 1) if max_count > 1 else []
        hint = _to_hint(first[0], first[1])
        return ([hint] if hint else []) + rest

    async def _wait_for_one(
        self, queues: Sequence[str], keys: list[str], timeout: float
    ) -> tuple[str, bytes | str] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            wait = remaining if self._slice is None else min(remaining, self._slice)
            reply = await self._client.brpop(keys, timeout=max(wait, MIN_BLOCK))
            if reply:
                key, payload = reply
                return queues[keys.index(_text(key))], payload
        return None

    async def _take(self, queues: Sequence[str], keys: list[str], wanted: int) -> list[ReadyHint]:
        if wanted <= 0:
            return []
        taken = await self._top_up(keys=keys, args=[wanted])
        return [
            hint
            for queue, payloads in zip(queues, taken, strict=True)
            for payload in payloads
            if (hint := _to_hint(queue, payload))
        ]

    async def depth(self, queues: Sequence[str]) -> dict[str, int]:
        """Hints waiting per queue (duplicates and stale hints included), in one round trip."""
        if not queues:
            return {}
        with translate_connection_errors():
            async with self._client.pipeline(transaction=False) as pipe:
                for queue in queues:
                    pipe.llen(self._keys.ready_list(queue))
                lengths = await pipe.execute()
        return {queue: int(length) for queue, length in zip(queues, lengths, strict=True)}

    async def check_intact(self) -> bool:
        """Sets the epoch key when it is missing: False then (a restart without persistence, a
        flush, or the very first start), True while the key survives. Only the first caller
        after a loss sees False."""
        with translate_connection_errors():
            created = await self._client.set(self._keys.epoch, uuid.uuid4().hex, nx=True)
        return not created

    async def ping(self) -> None:
        with translate_connection_errors():
            await self._client.ping()


def _group(hints: Sequence[ReadyHint]) -> dict[str, list[str]]:
    by_queue: dict[str, list[str]] = {}
    for hint in hints:
        by_queue.setdefault(hint.queue, []).append(str(hint.job_id))
    return by_queue


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _to_hint(queue: str, payload: bytes | str) -> ReadyHint | None:
    """The hint, or None when the payload is not a job id (written by something else)."""
    try:
        return ReadyHint(queue, UUID(_text(payload)))
    except (UnicodeDecodeError, ValueError):
        log.warning("dropped a hint that is not a job id from queue %r: %r", queue, payload[:80])
        return None
