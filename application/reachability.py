"""Calls to a server that may stop answering (the ready queue), and whether it answers.

The scheduler and the worker each keep one: the scheduler sweeps on without the ready
queue while it does not answer, the worker claims due jobs from the store meanwhile.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from taskforge.application.timing import unanswered
from taskforge.domain.errors import Unavailable

T = TypeVar("T")

QUEUE_DOWN_REMINDER = 60.0
"""Seconds between the log lines that say the ready queue still does not answer."""


class QueueTimings(Protocol):
    """What a role's settings say about its calls to the ready queue."""

    @property
    def queue_grace(self) -> float:
        """Seconds a call may take before the queue counts as unreachable."""
        ...

    @property
    def queue_retry_interval(self) -> float:
        """While the queue is unreachable, how often it is tried again."""
        ...


class NotAnswering(Exception):
    """A call failed to reach the server, or went unanswered within the grace."""


class Reachability:
    def __init__(
        self,
        timings: QueueTimings,
        monotonic: Callable[[], float],
        *,
        down: Callable[[str], None],
        up: Callable[[], None],
        still_down: Callable[[float, str], None] | None = None,
        remind_every: float = math.inf,
    ) -> None:
        """Each call gets `timings.queue_grace` seconds. Once one fails, the server counts as
        unreachable until a call answers again, and `retry_due` says when to try it, every
        `timings.queue_retry_interval`. The outage is reported once each way, `down(reason)`
        and `up()`, and while it lasts `still_down(seconds so far, reason)` every
        `remind_every`."""
        self._grace = timings.queue_grace
        self._retry_interval = timings.queue_retry_interval
        self._monotonic = monotonic
        self._down = down
        self._up = up
        self._still_down = still_down
        self._remind_every = remind_every
        self._retry_at: float | None = None
        """While the server is unreachable: when it is tried again. None: it answers."""
        self._down_since: float | None = None
        self._reminded_at = 0.0
        self._outstanding: asyncio.Future[Any] | None = None
        """A call that outlived its grace and still runs (see ask)."""

    @property
    def answers(self) -> bool:
        """The last call answered (or none failed yet)."""
        return self._retry_at is None

    def retry_due(self) -> bool:
        """The server is unreachable, and it is time to try it again."""
        return self._retry_at is not None and self._monotonic() >= self._retry_at

    async def ask(
        self, call: Callable[[], Awaitable[T]], late: Callable[[T], None] | None = None
    ) -> T:
        """`call()` within the grace. One that fails to connect or does not answer in time
        raises NotAnswering, and the server counts as unreachable until a call answers.

        A call that outlives the grace is not cancelled: it finishes (or fails) on its own,
        bounded by the client's own timeouts, and no other call starts meanwhile. Opening a
        connection may take longer than the grace (asking Sentinels in turn, one that does
        not answer costs its whole timeout): cancelled, it would start over from the same
        Sentinel at every try and never get through. `late` takes the answer of such a call,
        if it comes."""
        if self._outstanding is not None:
            if not self._outstanding.done():
                self.not_answering("the last call is still out")
                raise NotAnswering
            self._outstanding = None
        asked: asyncio.Future[T] = asyncio.ensure_future(call())
        try:
            async with asyncio.timeout(self._grace):
                answer = await asyncio.shield(asked)
        except (TimeoutError, Unavailable) as exc:
            if isinstance(exc, TimeoutError):  # still running: see above
                self._outstanding = asked
                asked.add_done_callback(_retrieved)
                if late is not None:
                    asked.add_done_callback(lambda done: _answered(done, late))
            self.not_answering(unanswered(exc, self._grace))
            raise NotAnswering from exc
        if not self.answers:
            self._up()
            self._retry_at = None
            self._down_since = None
        return answer

    def not_answering(self, reason: str) -> None:
        """A call failed for `reason`: the server is unreachable, tried again after the
        retry interval."""
        now = self._monotonic()
        if self._down_since is None:
            self._down_since = self._reminded_at = now
            self._down(reason)
        elif self._still_down is not None and now - self._reminded_at >= self._remind_every:
            self._reminded_at = now
            self._still_down(now - self._down_since, reason)
        self._retry_at = now + self._retry_interval


def _answered(future: asyncio.Future[T], late: Callable[[T], None]) -> None:
    if not future.cancelled() and future.exception() is None:
        late(future.result())


def _retrieved(future: asyncio.Future[Any]) -> None:
    """A call left to finish on its own: its failure, already reported as an unanswered
    call, is read here so that asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()
