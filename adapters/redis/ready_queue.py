"""Dispatch hints in Redis lists: one list per queue and priority, FIFO.

The default priority's list is named as the queue (`LLEN jobs:ready`); the other priorities'
lists are internal keys (see RedisKeys.ready_list). A pop looks at the lists highest
priority first, so a hint of priority 0 leaves before any of priority 1. Hints enter at the
left (LPUSH) and leave at the right (RPOP), so within a list the oldest hint is popped first;
`push_front` puts hints back at the right end. A hint is the job id as text.
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
from taskforge.domain.validation import PRIORITIES

log = logging.getLogger("taskforge.redis")

MIN_BLOCK = 0.01
"""Shortest blocking wait sent to Redis: BRPOP reads a timeout of 0 as "wait forever"."""
PROBE_LIFETIME_MS = 60_000
"""How long the key a ping writes lives: one key per prefix, gone a minute after the last."""

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
    """The `ReadyQueue` port on Redis lists. A queue's default-priority list is its name
    verbatim; the other priorities' lists and `<prefix>epoch` are internal keys. Connection
    failures raise `Unavailable("redis", ...)`."""

    def __init__(self, client: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._keys = RedisKeys(prefix)
        self._top_up = client.register_script(TOP_UP_SCRIPT)
        self._slice = blocking_slice(client)
        self._pop_orders: dict[tuple[str, ...], dict[str, tuple[str, int]]] = {}

    async def push(self, hints: Sequence[ReadyHint]) -> None:
        """Append each hint at the tail of its queue's list for its priority, all lists in
        one round trip."""
        by_list = self._group(hints)
        if not by_list:
            return
        with translate_connection_errors():
            if len(by_list) == 1:  # the usual case; a pipeline costs more CPU than it saves
                [(key, ids)] = by_list.items()
                await self._client.lpush(key, *ids)
                return
            async with self._client.pipeline(transaction=False) as pipe:
                for key, ids in by_list.items():
                    pipe.lpush(key, *ids)
                await pipe.execute()

    async def push_front(self, hints: Sequence[ReadyHint]) -> None:
        """Put hints at the head of their lists, in the given order, so that they are popped
        next among the hints of their priority."""
        by_list = self._group(hints)
        if not by_list:
            return
        with translate_connection_errors():
            async with self._client.pipeline(transaction=False) as pipe:
                for key, ids in by_list.items():
                    pipe.rpush(key, *reversed(ids))
                await pipe.execute()

    def _group(self, hints: Sequence[ReadyHint]) -> dict[str, list[str]]:
        by_list: dict[str, list[str]] = {}
        for hint in hints:
            key = self._keys.ready_list(hint.queue, hint.priority)
            by_list.setdefault(key, []).append(str(hint.job_id))
        return by_list

    async def pop(self, queues: Sequence[str], max_count: int, timeout: float) -> list[ReadyHint]:
        """Wait up to `timeout` seconds for one hint, then take up to `max_count` in all
        without waiting. Lists are taken from highest priority first, and within a priority
        in the order of `queues`. Returns [] on timeout; `timeout <= 0` does not wait."""
        if not queues or max_count <= 0:
            # Nothing can be returned; wait as an empty pop would so a polling caller
            # does not spin.
            await asyncio.sleep(max(timeout, 0.0))
            return []
        lists = self._pop_order(tuple(queues))
        with translate_connection_errors():
            # Hints waiting are taken in one round trip; only an empty pop blocks, and then
            # takes the rest after the first hint arrives.
            taken = await self._take(lists, max_count)
            if taken or timeout <= 0:
                return taken
            first = await self._wait_for_one(lists, timeout)
            if first is None:
                return []
            rest = await self._take(lists, max_count - 1) if max_count > 1 else []
        key, payload = first
        queue, priority = lists[key]
        hint = _to_hint(queue, priority, payload)
        return ([hint] if hint else []) + rest

    def _pop_order(self, queues: tuple[str, ...]) -> dict[str, tuple[str, int]]:
        """Every hint list of `queues` in the order a pop looks at them, each with its queue
        and priority: priority first, then the order of `queues`. Kept per set of queues
        (a worker pops the same ones every time)."""
        lists = self._pop_orders.get(queues)
        if lists is None:
            lists = {
                self._keys.ready_list(queue, priority): (queue, priority)
                for priority in PRIORITIES
                for queue in queues
            }
            if len(self._pop_orders) < 64:
                self._pop_orders[queues] = lists
        return lists

    async def _wait_for_one(
        self, lists: dict[str, tuple[str, int]], timeout: float
    ) -> tuple[str, bytes | str] | None:
        keys = list(lists)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            wait = remaining if self._slice is None else min(remaining, self._slice)
            # BRPOP takes from the first of its keys that holds a hint: the highest priority.
            reply = await self._client.brpop(keys, timeout=max(wait, MIN_BLOCK))
            if reply:
                key, payload = reply
                return _text(key), payload
        return None

    async def _take(self, lists: dict[str, tuple[str, int]], wanted: int) -> list[ReadyHint]:
        if wanted <= 0:
            return []
        taken = await self._top_up(keys=list(lists), args=[wanted])
        return [
            hint
            for (queue, priority), payloads in zip(lists.values(), taken, strict=True)
            for payload in payloads
            if (hint := _to_hint(queue, priority, payload))
        ]

    async def depth(self, queues: Sequence[str]) -> dict[str, int]:
        """Hints waiting per queue, all priorities summed (duplicates and stale hints
        included), in one round trip."""
        if not queues:
            return {}
        with translate_connection_errors():
            async with self._client.pipeline(transaction=False) as pipe:
                for queue in queues:
                    for key in self._keys.ready_lists(queue):
                        pipe.llen(key)
                lengths = await pipe.execute()
        per_queue = len(PRIORITIES)
        return {
            queue: sum(int(length) for length in lengths[i * per_queue : (i + 1) * per_queue])
            for i, queue in enumerate(queues)
        }

    async def check_intact(self) -> bool:
        """Sets the epoch key when it is missing: False then (a restart without persistence, a
        flush, or the very first start), True while the key survives. Only the first caller
        after a loss sees False."""
        with translate_connection_errors():
            created = await self._client.set(self._keys.epoch, uuid.uuid4().hex, nx=True)
        return not created

    async def forget_intact(self) -> None:
        with translate_connection_errors():
            await self._client.delete(self._keys.epoch)

    async def ping(self) -> None:
        # A write, as a pop is: a server that answers PING but refuses writes (a replica, a
        # failed snapshot, too few replicas) cannot serve the workers' pops either.
        with translate_connection_errors():
            await self._client.set(self._keys.probe, b"1", px=PROBE_LIFETIME_MS)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _to_hint(queue: str, priority: int, payload: bytes | str) -> ReadyHint | None:
    """The hint, or None when the payload is not a job id (written by something else)."""
    try:
        return ReadyHint(queue, UUID(_text(payload)), priority=priority)
    except (UnicodeDecodeError, ValueError):
        log.warning("dropped a hint that is not a job id from queue %r: %r", queue, payload[:80])
        return None
