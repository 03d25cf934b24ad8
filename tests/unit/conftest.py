"""In-memory wiring for unit tests: real adapters, a manual clock, no services."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from uuid import UUID

import pytest

from taskforge.adapters.memory.dead_letter_store import InMemoryDeadLetterStore
from taskforge.adapters.memory.ready_queue import InMemoryReadyQueue
from taskforge.adapters.memory.state import InMemoryState
from taskforge.adapters.system import Uuid7Source
from taskforge.application.hints import HintDispatcher
from taskforge.application.ports import AttributeValue
from taskforge.domain.errors import Unavailable
from taskforge.domain.job import ReadyHint
from taskforge.domain.new_job import NewJob
from taskforge.domain.policy import RetryPolicy
from tests.clock import ManualClock
from tests.job_stores import InMemoryJobs

OUT_OF_MEMORY = "OOM command not allowed when used memory > 'maxmemory'."
"""Redis's reply to a write that adds, out of memory under noeviction."""


class FlushableReadyQueue(InMemoryReadyQueue):
    def clear(self) -> None:
        """Drop every hint, as a Redis flush would (for tests of the recovery path)."""
        self._lists.clear()


class FreezableReadyQueue(FlushableReadyQueue):
    """A ready queue that can freeze like a SIGSTOPped Redis (no call returns), refuse
    connections (every call raises Unavailable), or be full like a Redis out of memory
    under noeviction (pops and reads answer, every write that adds raises Unavailable);
    `pops` counts the pops that answered."""

    def __init__(self) -> None:
        super().__init__()
        self._mode: str | None = None
        self._thawed = asyncio.Event()
        self.pops = 0

    @property
    def mode(self) -> str | None:
        return self._mode

    @mode.setter
    def mode(self, mode: str | None) -> None:
        """ "frozen", "down", "full" or None (it answers). A call made while frozen answers
        once the queue thaws, as a SIGCONTed Redis answers what it was sent."""
        if mode == "frozen" and self._mode != "frozen":
            self._thawed = asyncio.Event()
        elif mode != "frozen":
            self._thawed.set()
        self._mode = mode

    async def _outage(self) -> None:
        if self._mode == "frozen":
            await self._thawed.wait()
        if self._mode == "down":
            raise Unavailable("redis", "connection refused")

    async def _write(self) -> None:
        await self._outage()
        if self._mode == "full":
            raise Unavailable("redis", OUT_OF_MEMORY)

    async def pop(self, queues: Sequence[str], max_count: int, timeout: float) -> list[ReadyHint]:
        await self._outage()
        hints = await super().pop(queues, max_count, timeout)
        self.pops += 1
        return hints

    async def push(self, hints: Sequence[ReadyHint]) -> None:
        await self._write()
        await super().push(hints)

    async def push_front(self, hints: Sequence[ReadyHint]) -> None:
        await self._write()
        await super().push_front(hints)

    async def ping(self) -> None:
        await self._write()

    async def depth(self, queues: Sequence[str]) -> dict[str, int]:
        await self._outage()
        return await super().depth(queues)

    async def check_intact(self) -> bool:
        await self._write()
        return await super().check_intact()

    async def forget_intact(self) -> None:
        await self._outage()
        await super().forget_intact()


@dataclass
class Memory:
    clock: ManualClock
    ids: Uuid7Source
    state: InMemoryState
    jobs: InMemoryJobs
    """Every role of the job store, over `state`."""
    dead_letters: InMemoryDeadLetterStore
    ready_queue: FlushableReadyQueue
    hints: HintDispatcher
    """Pushes to `ready_queue`, as the process's one dispatcher does."""

    def new_job(self, job_type: str = "noop", **fields: object) -> NewJob:
        fields.setdefault("queue", "jobs:ready")
        return NewJob(id=self.ids.new_id(), job_type=job_type, **fields)  # type: ignore[arg-type]


@pytest.fixture
def memory() -> Memory:
    clock = ManualClock()
    ids = Uuid7Source()
    state = InMemoryState(clock, ids)
    ready_queue = FlushableReadyQueue()
    return Memory(
        clock=clock,
        ids=ids,
        state=state,
        jobs=InMemoryJobs(state),
        dead_letters=InMemoryDeadLetterStore(state),
        ready_queue=ready_queue,
        hints=HintDispatcher(ready_queue),
    )


def quick_policy(max_attempts: int = 3) -> RetryPolicy:
    return RetryPolicy(max_attempts=max_attempts, initial_delay=1.0, backoff=2.0, max_delay=60.0)


@dataclass
class RecordedSpan:
    """A span the RecordingTracer started: its parent, attributes and how it ended."""

    name: str
    parent: str | None
    attributes: dict[str, AttributeValue]
    span_id: str
    error: str | None = None
    ended: bool = False
    entered: bool = False

    @property
    def traceparent(self) -> str:
        return f"00-{'0' * 31}1-{self.span_id}-01"

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.attributes[key] = value

    def fail(self, error: str) -> None:
        self.error = error

    def end(self) -> None:
        assert not self.ended, "a span ends once"
        self.ended = True

    def __enter__(self) -> RecordedSpan:
        self.entered = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.end()


@dataclass
class RecordingTracer:
    """A JobTracer that keeps every span it starts."""

    spans: list[RecordedSpan] = field(default_factory=list)

    def start_span(
        self,
        name: str,
        *,
        job_id: UUID,
        queue: str,
        parent: str | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> RecordedSpan:
        span = RecordedSpan(
            name=name,
            parent=parent,
            attributes={"job_id": str(job_id), "queue": queue, **(attributes or {})},
            span_id=f"{len(self.spans) + 1:016x}",
        )
        self.spans.append(span)
        return span


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    """The root logger's handlers and level as they were, after a test that configures
    logging."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.handlers[:], level = saved
        root.setLevel(level)
