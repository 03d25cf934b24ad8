"""Contract: ScheduleStore. Saving schedules by name, pausing them, and firing the due ones:
each tick makes one job (keyed by the schedule and the tick, left for the never-published
sweep to publish), however many schedulers fire at once, and none while paused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from taskforge.adapters.cron import CronsimCalendar
from taskforge.adapters.system import Uuid7Source
from taskforge.application.ports import ListFilter, ScheduleStore
from taskforge.application.schedules import FireSchedules
from taskforge.domain.errors import ScheduleNotFound
from taskforge.domain.job import Job
from taskforge.domain.schedule import (
    ScheduleDefinition,
    ScheduleSource,
    build_schedule_definition,
    tick_key,
)
from taskforge.domain.validation import Page
from tests.job_stores import JobRoles

Definition = Callable[..., ScheduleDefinition]


@pytest.fixture
def definition(queue_name: str) -> Definition:
    """A schedule of this test's queue, every minute unless told otherwise."""

    def build(name: str = "report", **fields: object) -> ScheduleDefinition:
        fields.setdefault("cron", "* * * * *")
        fields.setdefault("job_type", "report")
        return build_schedule_definition(name=f"{queue_name}-{name}", queue=queue_name, **fields)  # type: ignore[arg-type]

    return build


def fire(schedules: ScheduleStore, max_catch_up: int = 100) -> FireSchedules:
    return FireSchedules(schedules, CronsimCalendar(), Uuid7Source(), max_catch_up)


def minute_floor(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def now() -> datetime:
    return datetime.now(UTC)


async def queue_jobs(jobs: JobRoles, queue: str) -> list[Job]:
    found, _ = await jobs.find(ListFilter(queue=queue), Page(limit=200))
    return sorted(found, key=lambda job: job.idempotency_key or "")


async def test_saving_creates_a_schedule_then_replaces_it_by_name(
    schedules: ScheduleStore, definition: Definition
) -> None:
    first_fire = minute_floor(now()) + timedelta(minutes=1)
    created, is_new = await schedules.save(definition(), first_fire)
    replaced, again = await schedules.save(
        definition(payload={"kind": "daily"}, source=ScheduleSource.CODE), first_fire
    )

    assert (is_new, again) == (True, False)
    assert created.next_fire_at == first_fire and created.last_fire_at is None
    assert not created.paused
    assert replaced.definition.payload == {"kind": "daily"}
    assert replaced.definition.source is ScheduleSource.CODE
    assert await schedules.get(created.name) == replaced


async def test_every_store_keeps_a_schedules_payload_as_jsonb_reads_it_back(
    schedules: ScheduleStore, definition: Definition
) -> None:
    # A schedule declared in code may hold any values msgspec writes, a tuple or a date.
    payload = {
        "total": 1e16,
        "zero": -0.0,
        "b": (2.5, 2.5e16),
        "since": datetime(2026, 1, 2, tzinfo=UTC),
        "amount": Decimal("1.5"),
    }

    saved, _ = await schedules.save(definition(payload=payload), now() + timedelta(minutes=1))
    read = await schedules.get(saved.name)

    assert read == saved
    assert json.dumps(saved.definition.payload) == (
        '{"b": [2.5, 25000000000000000], "zero": 0.0, "since": "2026-01-02T00:00:00Z",'
        ' "total": 10000000000000000, "amount": "1.5"}'
    )


async def test_a_replaced_schedule_keeps_its_next_fire_unless_its_times_change(
    schedules: ScheduleStore, definition: Definition
) -> None:
    first = minute_floor(now()) + timedelta(minutes=1)
    later = first + timedelta(hours=1)
    await schedules.save(definition(), first)

    same_times, _ = await schedules.save(definition(payload={"a": 1}), later)
    new_cron, _ = await schedules.save(definition(cron="0 * * * *"), later)

    assert same_times.next_fire_at == first
    assert new_cron.next_fire_at == later


async def test_schedules_are_listed_by_name_and_deleted_once(
    schedules: ScheduleStore, definition: Definition
) -> None:
    at = now() + timedelta(minutes=1)
    for name in ("b", "a", "c"):
        await schedules.save(definition(name), at)

    listed = [schedule.name for schedule in await schedules.find()]
    assert listed == sorted(listed)
    assert len(listed) == 3
    assert await schedules.delete(listed[0]) is True
    assert await schedules.delete(listed[0]) is False
    assert await schedules.get(listed[0]) is None


async def test_pause_is_idempotent_and_resume_moves_the_next_fire_only_when_paused(
    schedules: ScheduleStore, definition: Definition
) -> None:
    first = minute_floor(now()) + timedelta(minutes=1)
    created, _ = await schedules.save(definition(), first)

    paused = await schedules.pause(created.name)
    assert paused.paused and await schedules.pause(created.name) == paused
    resumed = await schedules.resume(created.name, first + timedelta(minutes=5))
    assert not resumed.paused
    assert resumed.next_fire_at == first + timedelta(minutes=5)
    again = await schedules.resume(created.name, first + timedelta(minutes=9))
    assert again.next_fire_at == first + timedelta(minutes=5)


async def test_pausing_or_resuming_an_unknown_schedule_raises(schedules: ScheduleStore) -> None:
    with pytest.raises(ScheduleNotFound):
        await schedules.pause("no-such-schedule")
    with pytest.raises(ScheduleNotFound):
        await schedules.resume("no-such-schedule", now())


async def test_a_due_tick_makes_one_unpublished_job_keyed_by_the_schedule_and_the_tick(
    schedules: ScheduleStore, jobs: JobRoles, definition: Definition, queue_name: str
) -> None:
    tick = minute_floor(now())
    created, _ = await schedules.save(definition(payload={"kind": "daily"}, max_attempts=7), tick)

    handled, made = await fire(schedules)(10)

    [job] = await queue_jobs(jobs, queue_name)
    assert (handled, made) == (1, 1)
    assert job.idempotency_key == tick_key(created.name, tick)
    assert job.job_type == "report" and job.payload == {"kind": "daily"}
    assert job.policy.max_attempts == 7
    assert [hint.job_id for hint in await jobs.find_never_published(10)] == [job.id]
    stored = await schedules.get(created.name)
    assert stored is not None
    assert stored.last_fire_at == tick
    assert stored.next_fire_at == tick + timedelta(minutes=1)


async def test_a_schedule_keeps_its_priority_and_its_ticks_jobs_carry_it(
    schedules: ScheduleStore, jobs: JobRoles, definition: Definition, queue_name: str
) -> None:
    tick = minute_floor(now())
    created, _ = await schedules.save(definition(priority=1), tick)
    default, _ = await schedules.save(definition("plain"), now() + timedelta(hours=1))

    await fire(schedules)(10)

    [job] = await queue_jobs(jobs, queue_name)
    stored = await schedules.get(created.name)
    assert stored is not None and stored.definition.priority == 1
    assert default.definition.priority == 5
    assert job.priority == 1


async def test_a_paused_schedule_never_fires(
    schedules: ScheduleStore, jobs: JobRoles, definition: Definition, queue_name: str
) -> None:
    created, _ = await schedules.save(definition(), minute_floor(now()) - timedelta(minutes=3))
    await schedules.pause(created.name)

    assert await fire(schedules)(10) == (0, 0)
    assert await queue_jobs(jobs, queue_name) == []


async def test_after_an_outage_only_the_most_recent_missed_tick_fires(
    schedules: ScheduleStore, jobs: JobRoles, definition: Definition, queue_name: str
) -> None:
    missed_since = minute_floor(now()) - timedelta(minutes=30)
    created, _ = await schedules.save(definition(), missed_since)

    await fire(schedules)(10)

    [job] = await queue_jobs(jobs, queue_name)
    stored = await schedules.get(created.name)
    assert stored is not None and stored.last_fire_at is not None
    assert stored.last_fire_at >= missed_since + timedelta(minutes=30)
    assert job.idempotency_key == tick_key(created.name, stored.last_fire_at)


async def test_a_catching_up_schedule_fires_every_missed_tick_oldest_first(
    schedules: ScheduleStore, jobs: JobRoles, definition: Definition, queue_name: str
) -> None:
    missed_since = minute_floor(now()) - timedelta(minutes=4)
    created, _ = await schedules.save(definition(catch_up=True), missed_since)

    await fire(schedules)(10)

    stored = await schedules.get(created.name)
    assert stored is not None and stored.last_fire_at is not None
    ticks = int((stored.last_fire_at - missed_since) / timedelta(minutes=1)) + 1
    expected = [tick_key(created.name, missed_since + timedelta(minutes=n)) for n in range(ticks)]
    assert ticks >= 5
    assert [job.idempotency_key for job in await queue_jobs(jobs, queue_name)] == expected


async def test_a_tick_fired_again_makes_no_second_job(
    schedules: ScheduleStore, jobs: JobRoles, definition: Definition, queue_name: str
) -> None:
    tick = minute_floor(now())
    await schedules.save(definition(), tick)
    await fire(schedules)(10)
    # The same tick due again: a new cron expression saved with the old tick as next fire.
    await schedules.save(definition(cron="*/1 * * * *"), tick)

    handled, made = await fire(schedules)(10)

    assert (handled, made) == (1, 0)
    assert len(await queue_jobs(jobs, queue_name)) == 1


async def test_three_schedulers_firing_at_once_fire_every_tick_exactly_once(
    schedules: ScheduleStore, jobs: JobRoles, definition: Definition, queue_name: str
) -> None:
    missed_since = minute_floor(now()) - timedelta(minutes=20)
    names = []
    for index in range(6):
        created, _ = await schedules.save(definition(f"s{index}", catch_up=True), missed_since)
        names.append(created.name)
    # Three passes' worth of ticks each, so the schedulers meet on the same schedules.
    schedulers = [fire(schedules, max_catch_up=7) for _ in range(3)]

    async def run(scheduler: FireSchedules) -> None:
        for _ in range(20):
            await scheduler(2)

    await asyncio.gather(*(run(scheduler) for scheduler in schedulers))

    keys = [job.idempotency_key for job in await queue_jobs(jobs, queue_name)]
    assert len(keys) == len(set(keys))
    for name in names:
        stored = await schedules.get(name)
        assert stored is not None and stored.last_fire_at is not None
        ticks = int((stored.last_fire_at - missed_since) / timedelta(minutes=1)) + 1
        fired = {key for key in keys if key is not None and key.startswith(f"schedule:{name}:")}
        assert fired == {tick_key(name, missed_since + timedelta(minutes=n)) for n in range(ticks)}
