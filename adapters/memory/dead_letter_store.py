"""DeadLetterStore in memory: reads the entries the other store roles write."""

from __future__ import annotations

from uuid import UUID

from taskforge.adapters.memory.state import InMemoryView
from taskforge.domain.job import DeadLetter
from taskforge.domain.validation import Page


class InMemoryDeadLetterStore(InMemoryView):
    async def find(self, page: Page) -> tuple[list[DeadLetter], int]:
        ordered = sorted(
            self._state.dead_letters.values(),
            key=lambda entry: (entry.failed_at, entry.job_id),
            reverse=True,
        )
        return ordered[page.offset : page.offset + page.limit], len(ordered)

    async def get(self, job_id: UUID) -> DeadLetter | None:
        return self._state.dead_letters.get(job_id)

    async def count(self) -> int:
        return len(self._state.dead_letters)
