"""Use cases on schedules of periodic jobs: saving, reading, pausing them, and firing the
due ones from the scheduler's tick.

Exactly once per tick: a schedule is fired by one scheduler at a time (the store locks it,
skipping it for the others), its jobs and its next fire time are stored in one
transaction, and each job's idempotency key names the schedule and the tick, so even a tick
computed twice (a schedule saved again, a clock that steps back) makes one job.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from taskforge.application.ports import Clock, CronCalendar, Firing, IdSource, ScheduleStore
from taskforge.domain.errors import ScheduleNotFound
from taskforge.domain.schedule import Schedule, ScheduleDefinition

log = logging.getLogger("taskforge.schedules")

MAX_CATCH_UP = 100
"""Missed ticks a catching-up schedule fires per scheduler pass; the next pass, at once,
fires the next ones (a full batch asks for an immediate tick)."""


RETRY_UNREADABLE = timedelta(minutes=1)
"""How long a schedule whose times cannot be computed waits before the next try."""


class SaveSchedule:
    """Create a schedule or replace the one with its name; a replaced one keeps its pause
    and, when its cron expression and time zone are unchanged, its next fire time. Raises
    ValidationError naming `cron` when the calendar cannot read it."""

    def __init__(self, schedules: ScheduleStore, calendar: CronCalendar, clock: Clock) -> None:
        self._schedules = schedules
        self._calendar = calendar
        self._clock = clock

    async def __call__(self, definition: ScheduleDefinition) -> tuple[Schedule, bool]:
        self._calendar.check(definition.cron)
        first = self._calendar.next_after(definition.cron, definition.timezone, self._clock.now())
        return await self._schedules.save(definition, first)


class DeclareSchedules:
    """Upsert the schedules declared in code (a worker or scheduler starting)."""

    def __init__(self, save: SaveSchedule) -> None:
        self._save = save

    async def __call__(self, definitions: list[ScheduleDefinition]) -> None:
        for definition in definitions:
            _, created = await self._save(definition)
            # Every start declares them again: only a new one is news.
            log.log(
                logging.INFO if created else logging.DEBUG,
                "schedule %r (%s %s) %s from code",
                definition.name,
                definition.cron,
                definition.timezone,
                "created" if created else "updated",
            )


class GetSchedule:
    def __init__(self, schedules: ScheduleStore) -> None:
        self._schedules = schedules

    async def __call__(self, name: str) -> Schedule:
        schedule = await self._schedules.get(name)
        if schedule is None:
            raise ScheduleNotFound(name)
        return schedule


class ListSchedules:
    """Every schedule, by name."""

    def __init__(self, schedules: ScheduleStore) -> None:
        self._schedules = schedules

    async def __call__(self) -> list[Schedule]:
        return await self._schedules.find()


class DeleteSchedule:
    """Raises ScheduleNotFound. A schedule declared in code comes back when a worker or
    scheduler next starts with it."""

    def __init__(self, schedules: ScheduleStore) -> None:
        self._schedules = schedules

    async def __call__(self, name: str) -> None:
        if not await self._schedules.delete(name):
            raise ScheduleNotFound(name)


class PauseSchedule:
    def __init__(self, schedules: ScheduleStore) -> None:
        self._schedules = schedules

    async def __call__(self, name: str) -> Schedule:
        return await self._schedules.pause(name)


class ResumeSchedule:
    """Fire again from the first tick after now: the ticks of the pause are skipped, even
    for a schedule that catches up (a pause means "do not run")."""

    def __init__(self, schedules: ScheduleStore, calendar: CronCalendar, clock: Clock) -> None:
        self._schedules = schedules
        self._calendar = calendar
        self._clock = clock

    async def __call__(self, name: str) -> Schedule:
        schedule = await GetSchedule(self._schedules)(name)
        if not schedule.paused:
            return schedule
        definition = schedule.definition
        first = self._calendar.next_after(definition.cron, definition.timezone, self._clock.now())
        return await self._schedules.resume(name, first)


class FireSchedules:
    """The scheduler's step for schedules: every due tick becomes a job (see plan)."""

    def __init__(
        self,
        schedules: ScheduleStore,
        calendar: CronCalendar,
        ids: IdSource,
        max_catch_up: int = MAX_CATCH_UP,
    ) -> None:
        self._schedules = schedules
        self._calendar = calendar
        self._ids = ids
        self._max_catch_up = max_catch_up
        self.behind = False
        """Whether the last call left a catching-up schedule still due: more of its missed
        ticks wait, and the scheduler's next pass should follow at once."""

    async def __call__(self, limit: int) -> tuple[int, int]:
        """(schedules handled, jobs created), as ScheduleStore.fire_due (see `behind`)."""
        self.behind = False
        return await self._schedules.fire_due(limit, self.plan)

    def plan(self, schedule: Schedule, now: datetime) -> Firing:
        """The ticks from `next_fire_at` to `now` that fire: only the most recent one
        (ticks missed while no scheduler ran are dropped), or with `catch_up` each of them,
        oldest first, at most max_catch_up per pass. A schedule the calendar cannot read
        any more (its time zone gone from this system, say) fires nothing and is tried
        again after RETRY_UNREADABLE, without holding up the others."""
        try:
            return self._plan(schedule, now)
        except Exception:
            log.exception(
                "schedule %r cannot be fired (%s %s); trying again in %gs",
                schedule.name,
                schedule.definition.cron,
                schedule.definition.timezone,
                RETRY_UNREADABLE.total_seconds(),
            )
            return Firing((), now + RETRY_UNREADABLE, schedule.last_fire_at)

    def _plan(self, schedule: Schedule, now: datetime) -> Firing:
        definition = schedule.definition
        cron, timezone = definition.cron, definition.timezone
        due = schedule.next_fire_at
        if due > now:
            return Firing((), due, schedule.last_fire_at)
        ticks: list[datetime] = []
        if definition.catch_up:
            tick = due
            while tick <= now and len(ticks) < self._max_catch_up:
                ticks.append(tick)
                tick = self._calendar.next_after(cron, timezone, tick)
        else:
            latest = self._calendar.latest_at_or_before(cron, timezone, now)
            ticks.append(latest if latest is not None and latest > due else due)
        if len(ticks) > 1 or ticks[-1] != due:
            log.info(
                "schedule %r fires %d tick(s) up to %s (next was due %s)",
                definition.name,
                len(ticks),
                ticks[-1].isoformat(),
                due.isoformat(),
            )
        jobs = [definition.job_for(tick, self._ids.new_id()) for tick in ticks]
        next_fire_at = self._calendar.next_after(cron, timezone, ticks[-1])
        self.behind = self.behind or next_fire_at <= now
        return Firing(jobs, next_fire_at, ticks[-1])
