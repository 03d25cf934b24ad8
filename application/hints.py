"""The one way hints reach the ready queue: HintDispatcher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from taskforge.application.ports import ReadyQueue
from taskforge.domain.job import Job, ReadyHint
from taskforge.domain.states import JobState

log = logging.getLogger("taskforge.jobs")


def _by_priority(hints: Sequence[ReadyHint]) -> list[ReadyHint]:
    """`hints` highest priority first, in their order within a priority."""
    return sorted(hints, key=lambda hint: hint.priority)


class HintDispatcher:
    """Every hint leaves through it, each in its job's queue and at its job's priority. One
    per process, shared by every use case that makes a job ready (enqueue, retry, replay,
    resume: `send`), the scheduler's sweeps (`push`) and the worker (`put_back` for hints it
    popped but will not start, `push` for the jobs it hands back at shutdown).

    `send` pushes in the background, in order, higher priorities first when hints wait;
    hints sent while a push is in flight go together in the next one. Its callers never
    wait for Redis: their jobs are committed, and a hint that cannot be pushed only delays
    its job until the scheduler re-publishes it. At most MAX_PENDING hints wait; beyond
    that new ones are dropped (the scheduler publishes those jobs too), so a Redis outage
    cannot grow memory without end. `push` and `put_back` wait for Redis and raise what it
    raised: their callers decide (a scheduler's tick fails and is retried, a worker's lease
    expires and the job is reaped)."""

    MAX_PENDING = 100_000
    PUSH_SIZE = 5_000
    """Hints per push: a huge backlog goes out in several round trips, not one giant one."""

    def __init__(self, ready_queue: ReadyQueue) -> None:
        self._ready_queue = ready_queue
        self._pending: list[ReadyHint] = []
        self._pusher: asyncio.Task[None] | None = None
        self._overflowing = False

    def send(self, jobs: Sequence[Job]) -> None:
        """Queue the hints of `jobs` (those PENDING) for pushing; returns at once."""
        hints = [ReadyHint.of(job) for job in jobs if job.state is JobState.PENDING]
        room = self.MAX_PENDING - len(self._pending)
        if len(hints) > room:
            if not self._overflowing:  # once per backlog, not once per batch
                log.warning(
                    "%d hint(s) wait for Redis already; leaving new ones to the scheduler",
                    len(self._pending),
                )
            self._overflowing = True
            hints = hints[: max(room, 0)]
        if not hints:
            return
        self._pending.extend(hints)
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.create_task(self._push_pending(), name="taskforge-hints")

    async def push(self, hints: Sequence[ReadyHint]) -> None:
        """Push `hints` now, each to its queue's list for its priority, and return once the
        ready queue has them."""
        if hints:
            await self._ready_queue.push(hints)

    async def put_back(self, hints: Sequence[ReadyHint]) -> None:
        """Hints popped but not started: put them back so that each is popped next among
        the hints of its queue and priority, in the given order."""
        if hints:
            await self._ready_queue.push_front(hints)

    async def _push_pending(self) -> None:
        try:
            await self._push_all()
        finally:
            self._overflowing = False

    async def _push_all(self) -> None:
        while self._pending:
            if len(self._pending) > self.PUSH_SIZE:
                # A backlog: its highest priorities go out in the first round trips.
                self._pending = _by_priority(self._pending)
            hints = self._pending[: self.PUSH_SIZE]
            del self._pending[: len(hints)]
            try:
                pushed = await self._publish(hints)
            except asyncio.CancelledError:
                log.warning(
                    "stopped with %d hint(s) unpushed; the scheduler will publish them",
                    len(hints) + len(self._pending),
                )
                raise
            if not pushed and self._pending:
                # Redis is failing: the next push would most likely wait out the same
                # timeouts. The scheduler publishes these jobs too.
                log.warning("leaving %d more hint(s) to the scheduler", len(self._pending))
                self._pending.clear()

    async def _publish(self, hints: list[ReadyHint]) -> bool:
        """Push; a failure is only logged (and False): the jobs are already committed, and
        the scheduler re-publishes jobs whose hint went missing."""
        try:
            await self.push(hints)
        except Exception as exc:  # noqa: BLE001 - any dispatch failure is recovered by the scheduler
            log.warning("could not publish %d hint(s); the scheduler will: %s", len(hints), exc)
            return False
        return True

    async def drain(self) -> None:
        """Wait until every hint sent so far is pushed or given up on (at most one failing
        push). Cancelling the wait leaves the pushes going."""
        while (pusher := self._pusher) is not None and not pusher.done():
            await asyncio.wait({pusher})
