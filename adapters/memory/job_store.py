"""JobStore in memory: storing jobs (idempotently, all or none) and reading them back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from uuid import UUID

from taskforge.adapters.jsonb import stored_json
from taskforge.adapters.memory.state import InMemoryView, without_details
from taskforge.application.ports import Added, ListFilter
from taskforge.domain.errors import JobIdTaken
from taskforge.domain.job import Job, QueueStats
from taskforge.domain.new_job import NewJob
from taskforge.domain.states import JobState
from taskforge.domain.validation import Page


class InMemoryJobStore(InMemoryView):
    async def add(self, job: NewJob) -> Added:
        [result] = self.add_all([job], self._state.clock.now())
        return result

    async def add_many(self, jobs: Sequence[NewJob]) -> list[Added]:
        return self.add_all(jobs, self._state.clock.now())

    def add_all(
        self, news: Sequence[NewJob], now: datetime, *, published: bool = True
    ) -> list[Added]:
        """All or none, like one INSERT: every job is checked and built before the first
        is stored. A job whose idempotency key is taken yields the job holding it; else a job
        whose unique key an unfinished job of its queue holds yields that job (within the
        batch too: the first of two duplicates is the one stored). A created job due now is
        stored as published and answered as needing its hint; `published` False leaves
        every job unpublished, for the scheduler to publish (as Postgres' UNPUBLISHED)."""
        state = self._state
        results: list[Added] = []
        created: dict[UUID, Added] = {}
        by_key: dict[str, Job] = {}
        by_unique_key: dict[tuple[str, str], Job] = {}
        for new in news:
            holder = self._holder(new, by_key, by_unique_key)
            if holder is not None:
                results.append(Added(without_details(holder), False, False))
                continue
            if new.id in state.jobs or new.id in created:
                raise JobIdTaken(new.id)
            job = new.stored(new.due_at(now), now, stored_json(new.payload))
            added = Added(job, True, published and job.next_run_at <= now)
            created[job.id] = added
            if job.idempotency_key is not None:
                by_key[job.idempotency_key] = job
            if job.unique_key is not None:
                by_unique_key[job.queue, job.unique_key] = job
            results.append(added)
        for job, _, needs_hint in created.values():
            state.jobs[job.id] = job
            if job.idempotency_key is not None:
                state.by_idempotency_key[job.idempotency_key] = job.id
            if job.unique_key is not None:
                state.by_unique_key[job.queue, job.unique_key] = job.id
            state.published_at[job.id] = now if needs_hint else None
        return results

    def _holder(
        self,
        new: NewJob,
        by_key: dict[str, Job],
        by_unique_key: dict[tuple[str, str], Job],
    ) -> Job | None:
        """The job `new` yields to, if any: stored or earlier in its batch (`by_key`,
        `by_unique_key`)."""
        state = self._state
        if (key := new.idempotency_key) is not None:
            if (earlier := by_key.get(key)) is not None:
                return earlier
            if (job_id := state.by_idempotency_key.get(key)) is not None:
                return state.jobs[job_id]
        if (unique_key := new.unique_key) is not None:
            earlier = by_unique_key.get((new.queue, unique_key))
            return earlier or state.unique_key_holder(new.queue, unique_key)
        return None

    async def get(self, job_id: UUID) -> Job | None:
        return self._state.jobs.get(job_id)

    async def find(self, where: ListFilter, page: Page) -> tuple[list[Job], int]:
        matches = [
            job
            for job in self._state.jobs.values()
            if (where.queue is None or job.queue == where.queue)
            and (where.state is None or job.state is where.state)
            and (where.job_type is None or job.job_type == where.job_type)
            and (where.idempotency_key is None or job.idempotency_key == where.idempotency_key)
        ]
        ordered = _newest_first(matches)
        window = ordered[page.offset : page.offset + page.limit]
        return [without_details(job) for job in window], len(ordered)

    async def stats(self) -> list[QueueStats]:
        per_queue: dict[str, dict[JobState, int]] = {}
        for job in self._state.jobs.values():
            counts = per_queue.setdefault(job.queue, dict.fromkeys(JobState, 0))
            counts[job.state] += 1
        return [QueueStats(queue, counts) for queue, counts in sorted(per_queue.items())]

    async def ping(self) -> None:
        return None


def _newest_first(items: Iterable[Job]) -> list[Job]:
    return sorted(items, key=lambda job: (job.created_at, job.id), reverse=True)
