from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from uuid import UUID

from taskforge.domain.job import ReadyHint
from taskforge.domain.validation import PRIORITIES


class InMemoryReadyQueue:
    """FIFO hint lists per queue and priority, with a blocking pop like Redis BRPOP. A pop
    takes hints of a higher priority (a lower number) first, as RedisReadyQueue does."""

    def __init__(self) -> None:
        self._lists: dict[tuple[str, int], deque[UUID]] = {}
        self._changed = asyncio.Condition()

    async def push(self, hints: Sequence[ReadyHint]) -> None:
        for hint in hints:
            self._lists.setdefault((hint.queue, hint.priority), deque()).append(hint.job_id)
        await self._notify()

    async def push_front(self, hints: Sequence[ReadyHint]) -> None:
        for hint in reversed(hints):
            self._lists.setdefault((hint.queue, hint.priority), deque()).appendleft(hint.job_id)
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def pop(self, queues: Sequence[str], max_count: int, timeout: float) -> list[ReadyHint]:
        taken = self._take(queues, max_count)
        if taken or timeout <= 0:
            return taken
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._has_any(queues)), timeout
                )
            except TimeoutError:
                return []
        return self._take(queues, max_count)

    def _has_any(self, queues: Sequence[str]) -> bool:
        return any(self._lists.get((queue, priority)) for priority, queue in _keys(queues))

    def _take(self, queues: Sequence[str], max_count: int) -> list[ReadyHint]:
        taken: list[ReadyHint] = []
        for priority, queue in _keys(queues):
            items = self._lists.get((queue, priority))
            while items and len(taken) < max_count:
                taken.append(ReadyHint(queue, items.popleft(), priority=priority))
        return taken

    async def depth(self, queues: Sequence[str]) -> dict[str, int]:
        return {
            queue: sum(len(self._lists.get((queue, priority), ())) for priority in PRIORITIES)
            for queue in queues
        }

    async def check_intact(self) -> bool:
        return True  # memory is lost only with the process, and the jobs with it

    async def forget_intact(self) -> None:
        return None

    async def ping(self) -> None:
        return None


def _keys(queues: Sequence[str]) -> list[tuple[int, str]]:
    """Every (priority, queue) list in pop order: priority first, then the queues' order."""
    return [(priority, queue) for priority in PRIORITIES for queue in queues]
