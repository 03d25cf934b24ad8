"""The one way a use case publishes "this job is ready" hints: HintDispatcher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from taskforge.application.ports import ReadyQueue
from taskforge.domain.job import Job, ReadyHint
from taskforge.domain.states import JobState

log = logging.getLogger("taskforge.jobs")


async def publish(ready_queue: ReadyQueue, jobs: Sequence[Job]) -> bool:
    """Push hints for jobs that are due now. A failed push is only logged (and False): the
    job is already committed, and the scheduler re-publishes jobs whose hint went missing."""
    hints = [ReadyHint(job.queue, job.id) for job in jobs if job.state is JobState.PENDING]
    if not hints:
        return True
    try:
        await ready_queue.push(hints)
    except Exception as exc:  # noqa: BLE001 - any dispatch failure is recovered by the scheduler
        log.warning("could not publish %d hint(s); the scheduler will: %s", len(hints), exc)
        return False
    return True


class HintDispatcher:
    """Pushes the hints of stored jobs in the background, in order; hints sent while a push
    is in flight go together in the next one. One per process, shared by every use case
    that makes a job ready (enqueue, retry, replay). Callers never wait for Redis: their
    jobs are committed, and a hint that cannot be pushed only delays its job until the
    scheduler re-publishes it. At most MAX_PENDING hints wait; beyond that new ones are
    dropped (the scheduler publishes those jobs too), so a Redis outage cannot grow memory
    without end."""

    MAX_PENDING = 100_000
    PUSH_SIZE = 5_000
    """Hints per push: a huge backlog goes out in several round trips, not one giant one."""

    def __init__(self, ready_queue: ReadyQueue) -> None:
        self._ready_queue = ready_queue
        self._pending: list[Job] = []
        self._pusher: asyncio.Task[None] | None = None
        self._overflowing = False

    def send(self, jobs: Sequence[Job]) -> None:
        """Queue the hints of `jobs` (those PENDING) for pushing; returns at once."""
        room = self.MAX_PENDING - len(self._pending)
        if len(jobs) > room:
            if not self._overflowing:  # once per backlog, not once per batch
                log.warning(
                    "%d hint(s) wait for Redis already; leaving new ones to the scheduler",
                    len(self._pending),
                )
            self._overflowing = True
            jobs = jobs[: max(room, 0)]
        if not jobs:
            return
        self._pending.extend(jobs)
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.create_task(self._push_pending(), name="taskforge-hints")

    async def _push_pending(self) -> None:
        try:
            await self._push_all()
        finally:
            self._overflowing = False

    async def _push_all(self) -> None:
        while self._pending:
            jobs = self._pending[: self.PUSH_SIZE]
            del self._pending[: len(jobs)]
            try:
                pushed = await publish(self._ready_queue, jobs)
            except asyncio.CancelledError:
                log.warning(
                    "stopped with %d hint(s) unpushed; the scheduler will publish them",
                    len(jobs) + len(self._pending),
                )
                raise
            if not pushed and self._pending:
                # Redis is failing: the next push would most likely wait out the same
                # timeouts. The scheduler publishes these jobs too.
                log.warning("leaving %d more hint(s) to the scheduler", len(self._pending))
                self._pending.clear()

    async def drain(self) -> None:
        """Wait until every hint sent so far is pushed or given up on (at most one failing
        push). Cancelling the wait leaves the pushes going."""
        while (pusher := self._pusher) is not None and not pusher.done():
            await asyncio.wait({pusher})
