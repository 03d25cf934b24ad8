"""ScheduleStore in memory: the schedules of one InMemoryState, whose jobs they add to."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from taskforge.adapters.jsonb import stored_json
from taskforge.adapters.memory.job_store import InMemoryJobStore
from taskforge.adapters.memory.state import InMemoryView
from taskforge.application.ports import FiringPlan
from taskforge.domain.errors import ScheduleNotFound
from taskforge.domain.schedule import Schedule, ScheduleDefinition


class InMemoryScheduleStore(InMemoryView):
    """Every call runs without yielding to the event loop, so each is atomic."""

    async def save(
        self, definition: ScheduleDefinition, next_fire_at: datetime
    ) -> tuple[Schedule, bool]:
        schedules = self._state.schedules
        now = self._state.clock.now()
        definition = dataclasses.replace(definition, payload=stored_json(definition.payload))
        existing = schedules.get(definition.name)
        if existing is None:
            schedules[definition.name] = Schedule(
                definition=definition,
                paused=False,
                next_fire_at=next_fire_at,
                last_fire_at=None,
                created_at=now,
                updated_at=now,
            )
            return schedules[definition.name], True
        old = existing.definition
        same_times = (old.cron, old.timezone) == (definition.cron, definition.timezone)
        schedules[definition.name] = dataclasses.replace(
            existing,
            definition=definition,
            next_fire_at=existing.next_fire_at if same_times else next_fire_at,
            updated_at=now,
        )
        return schedules[definition.name], False

    async def get(self, name: str) -> Schedule | None:
        return self._state.schedules.get(name)

    async def find(self) -> list[Schedule]:
        return [self._state.schedules[name] for name in sorted(self._state.schedules)]

    async def delete(self, name: str) -> bool:
        return self._state.schedules.pop(name, None) is not None

    async def pause(self, name: str) -> Schedule:
        if self._existing(name).paused:
            return self._existing(name)
        return self._update(name, paused=True)

    async def resume(self, name: str, next_fire_at: datetime) -> Schedule:
        if not self._existing(name).paused:
            return self._existing(name)
        return self._update(name, paused=False, next_fire_at=next_fire_at)

    async def fire_due(self, limit: int, plan: FiringPlan) -> tuple[int, int]:
        state = self._state
        now = state.clock.now()
        due = sorted(
            (s for s in state.schedules.values() if not s.paused and s.next_fire_at <= now),
            key=lambda s: (s.next_fire_at, s.name),
        )[:limit]
        firings = [(schedule, plan(schedule, now)) for schedule in due]
        created = 0
        jobs = InMemoryJobStore(state)
        for schedule, firing in firings:
            # Unpublished: the never-published sweep sends their hints.
            stored = jobs.add_all(firing.jobs, now, published=False)
            created += sum(added.created for added in stored)
            self._update(
                schedule.name,
                next_fire_at=firing.next_fire_at,
                last_fire_at=firing.last_fire_at,
                updated_at=schedule.updated_at,
            )
        return len(due), created

    def _existing(self, name: str) -> Schedule:
        schedule = self._state.schedules.get(name)
        if schedule is None:
            raise ScheduleNotFound(name)
        return schedule

    def _update(self, name: str, **changes: object) -> Schedule:
        changes.setdefault("updated_at", self._state.clock.now())
        updated = dataclasses.replace(self._existing(name), **changes)  # type: ignore[arg-type]
        self._state.schedules[name] = updated
        return updated
