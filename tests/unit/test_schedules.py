"""Periodic jobs on the in-memory backend with a manual clock: which ticks fire (daylight
saving changes, outages, catch-up, pauses), the scheduler's tick publishing them, and
schedules declared in code."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from taskforge.adapters.cron import CronsimCalendar
from taskforge.adapters.memory.ready_queue import InMemoryReadyQueue
from taskforge.adapters.memory.schedule_store import InMemoryScheduleStore
from taskforge.adapters.memory.state import InMemoryState
from taskforge.adapters.system import Uuid7Source
from taskforge.application.handlers import HandlerRegistry, JobContext
from taskforge.application.hints import HintDispatcher
from taskforge.application.periodic import (
    DeclarationError,
    ScheduleDeclarations,
    default_schedules,
    periodic,
    schedule,
)
from taskforge.application.ports import ListFilter
from taskforge.application.scheduler import SchedulerSettings, SchedulerTick
from taskforge.application.schedules import FireSchedules, ResumeSchedule, SaveSchedule
from taskforge.domain.errors import Unavailable, ValidationError
from taskforge.domain.new_job import NewJob
from taskforge.domain.schedule import ScheduleSource, build_schedule_definition, tick_key
from taskforge.domain.validation import Page
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.runtime import HandlerModuleError, declared_schedules
from taskforge.sdk import task
from tests.clock import ManualClock
from tests.job_stores import InMemoryJobs

CALENDAR = CronsimCalendar()
NEW_YEAR = datetime(2026, 1, 1, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


class Periodic:
    """Schedules over an in-memory backend whose clock starts at `start`, fired as the
    scheduler fires them."""

    def __init__(self, start: datetime = NEW_YEAR, max_catch_up: int = 100) -> None:
        self.clock = ManualClock(start)
        self.ids = Uuid7Source()
        self.state = InMemoryState(self.clock, self.ids)
        self.jobs = InMemoryJobs(self.state)
        self.ready_queue = InMemoryReadyQueue()
        self.store = InMemoryScheduleStore(self.state)
        self.save = SaveSchedule(self.store, CALENDAR, self.clock)
        self.fire = FireSchedules(self.store, CALENDAR, self.ids, max_catch_up)

    async def add(self, cron: str, timezone: str = "UTC", **fields: object) -> str:
        definition = build_schedule_definition(
            name="nightly",
            cron=cron,
            timezone=timezone,
            job_type="report",
            queue="jobs:ready",
            **fields,  # type: ignore[arg-type]
        )
        await self.save(definition)
        return definition.name

    async def run_until(self, end: datetime, step: timedelta = timedelta(minutes=5)) -> None:
        """Fire due schedules every `step` until `end`, as a scheduler would."""
        while self.clock.now() < end:
            self.clock.advance(step.total_seconds())
            await self.fire(100)

    async def fired(self) -> list[str]:
        jobs, _ = await self.jobs.find(ListFilter(), Page(limit=200))
        return sorted(job.idempotency_key or "" for job in jobs)


@pytest.fixture
def periodic_jobs() -> Periodic:
    return Periodic()


# Europe/Berlin moves from +01:00 to +02:00 at 02:00 local on 2026-03-29 (02:00-03:00 does
# not exist) and back at 03:00 local on 2026-10-25 (02:00-03:00 happens twice).
@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        # spring: the day before at 01:30 UTC, the change day at 03:00 CEST (the first
        # instant after the missing 02:30), the day after at 00:30 UTC
        (
            utc(2026, 3, 27, 12),
            utc(2026, 3, 30, 12),
            [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)],
        ),
        # autumn: 02:30 happens at 00:30 and at 01:30 UTC on the change day; it fires once
        (
            utc(2026, 10, 23, 12),
            utc(2026, 10, 26, 12),
            [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
        ),
    ],
    ids=["spring-forward", "fall-back"],
)
async def test_a_daily_0230_berlin_job_fires_once_on_each_day_across_dst_changes(
    start: datetime, end: datetime, expected: list[datetime]
) -> None:
    periodic_jobs = Periodic(start)
    name = await periodic_jobs.add("30 2 * * *", "Europe/Berlin")

    await periodic_jobs.run_until(end)

    assert await periodic_jobs.fired() == [tick_key(name, tick) for tick in expected]


async def test_an_hourly_job_fires_on_both_repeated_hours_of_the_autumn_change() -> None:
    periodic_jobs = Periodic(utc(2026, 10, 24, 23, 45))
    name = await periodic_jobs.add("30 * * * *", "Europe/Berlin")

    await periodic_jobs.run_until(utc(2026, 10, 25, 2, 0), step=timedelta(minutes=1))

    # 02:30 CEST, then 02:30 CET an hour later: two real instants, both fire
    ticks = [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)]
    assert await periodic_jobs.fired() == [tick_key(name, tick) for tick in ticks]


@pytest.mark.parametrize(
    ("cron", "start", "end", "expected"),
    [
        # fixed hours follow the local clock: 02:00 CET, the repeated one, fires no second time
        (
            "0 1-23 * * *",
            utc(2026, 10, 24, 22, 30),
            utc(2026, 10, 25, 2, 30),
            [utc(2026, 10, 24, 23), utc(2026, 10, 25, 0), utc(2026, 10, 25, 2)],
        ),
        # a starred minute field follows real instants: nothing in the spring gap ...
        (
            "*/30 2 * * *",
            utc(2026, 3, 27, 12),
            utc(2026, 3, 29, 12),
            [utc(2026, 3, 28, 1, 0), utc(2026, 3, 28, 1, 30)],
        ),
        # ... and each tick twice in the repeated hour
        (
            "*/30 2 * * *",
            utc(2026, 10, 24, 12),
            utc(2026, 10, 25, 12),
            [utc(2026, 10, 25, 0, minute) for minute in (0, 30)]
            + [utc(2026, 10, 25, 1, minute) for minute in (0, 30)],
        ),
    ],
    ids=["fixed-hours-fall-back", "starred-minute-spring-forward", "starred-minute-fall-back"],
)
async def test_fixed_fields_follow_the_berlin_clock_and_starred_ones_real_instants(
    cron: str, start: datetime, end: datetime, expected: list[datetime]
) -> None:
    periodic_jobs = Periodic(start)
    name = await periodic_jobs.add(cron, "Europe/Berlin")

    await periodic_jobs.run_until(end, step=timedelta(minutes=1))

    assert await periodic_jobs.fired() == sorted(tick_key(name, tick) for tick in expected)


async def test_saved_or_resumed_in_the_repeated_hour_a_passed_0230_does_not_fire() -> None:
    # 01:10 UTC on the autumn change day is 02:10 CET, the second pass of 02:00-03:00: the
    # day's one 02:30 (00:30 UTC, the first pass) is already over.
    periodic_jobs = Periodic(utc(2026, 10, 25, 0, 20))
    name = await periodic_jobs.add("30 2 * * *", "Europe/Berlin")
    await periodic_jobs.store.pause(name)
    periodic_jobs.clock.advance(50 * 60)
    created = await periodic_jobs.save(
        build_schedule_definition(
            name="created",
            cron="30 2 * * *",
            timezone="Europe/Berlin",
            job_type="report",
            queue="jobs:ready",
        )
    )

    resumed = await ResumeSchedule(periodic_jobs.store, CALENDAR, periodic_jobs.clock)(name)
    await periodic_jobs.run_until(utc(2026, 10, 25, 12), step=timedelta(minutes=1))

    next_day = utc(2026, 10, 26, 1, 30)
    assert (resumed.next_fire_at, created[0].next_fire_at) == (next_day, next_day)
    assert CALENDAR.next_after("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25, 1, 10)) == next_day
    assert await periodic_jobs.fired() == []


async def test_ticks_missed_while_no_scheduler_ran_fire_only_the_most_recent_one(
    periodic_jobs: Periodic,
) -> None:
    name = await periodic_jobs.add("*/5 * * * *")
    periodic_jobs.clock.advance(3600 + 60)  # an hour and a minute without any scheduler

    await periodic_jobs.fire(100)

    assert await periodic_jobs.fired() == [tick_key(name, utc(2026, 1, 1, 1, 0))]
    stored = await periodic_jobs.store.get(name)
    assert stored is not None and stored.next_fire_at == utc(2026, 1, 1, 1, 5)


@pytest.mark.parametrize(
    ("cron", "start"),
    [
        ("30 2 * * *", utc(2026, 10, 20, 12)),  # daily: the day before's tick was missed too
        ("30 2 * * 0", utc(2026, 10, 10, 12)),  # weekly: so was the Sunday before's
    ],
    ids=["daily", "weekly"],
)
async def test_after_an_outage_ending_in_the_repeated_hour_only_the_latest_tick_fires(
    cron: str, start: datetime
) -> None:
    # 01:10 UTC on the autumn change day is 02:10 CET, the second pass of 02:00-03:00: the
    # day's one 02:30 (00:30 UTC, in the first pass) is the most recent tick.
    periodic_jobs = Periodic(start)
    name = await periodic_jobs.add(cron, "Europe/Berlin")
    periodic_jobs.clock.advance((utc(2026, 10, 25, 1, 10) - start).total_seconds())

    await periodic_jobs.fire(100)
    await periodic_jobs.fire(100)

    assert await periodic_jobs.fired() == [tick_key(name, utc(2026, 10, 25, 0, 30))]


async def test_a_catching_up_schedule_fires_every_missed_tick_a_batch_per_pass() -> None:
    periodic_jobs = Periodic(max_catch_up=5)
    name = await periodic_jobs.add("*/5 * * * *", catch_up=True)
    periodic_jobs.clock.advance(3600 + 60)

    first_pass = await periodic_jobs.fire(100)
    await periodic_jobs.fire(100)
    await periodic_jobs.fire(100)

    expected = [tick_key(name, utc(2026, 1, 1, 0, 5) + timedelta(minutes=5 * n)) for n in range(12)]
    assert first_pass == (1, 5)
    assert await periodic_jobs.fired() == sorted(expected)


async def test_resuming_skips_the_ticks_of_the_pause_even_when_catching_up(
    periodic_jobs: Periodic,
) -> None:
    name = await periodic_jobs.add("*/5 * * * *", catch_up=True)
    await periodic_jobs.store.pause(name)
    await periodic_jobs.run_until(utc(2026, 1, 1, 1, 2), step=timedelta(minutes=1))
    assert await periodic_jobs.fired() == []

    resumed = await ResumeSchedule(periodic_jobs.store, CALENDAR, periodic_jobs.clock)(name)
    await periodic_jobs.run_until(utc(2026, 1, 1, 1, 10))

    assert resumed.next_fire_at == utc(2026, 1, 1, 1, 5)
    assert await periodic_jobs.fired() == [
        tick_key(name, utc(2026, 1, 1, 1, 5)),
        tick_key(name, utc(2026, 1, 1, 1, 10)),
    ]


async def test_the_scheduler_tick_publishes_a_fired_job_in_the_same_tick(
    periodic_jobs: Periodic,
) -> None:
    await periodic_jobs.add("* * * * *")
    tick = SchedulerTick(
        periodic_jobs.jobs,
        periodic_jobs.ready_queue,
        HintDispatcher(periodic_jobs.ready_queue),
        SchedulerSettings(batch_size=100),
        fire_schedules=periodic_jobs.fire,
    )
    periodic_jobs.clock.advance(60)

    report = await tick()

    jobs, _ = await periodic_jobs.jobs.find(ListFilter(), Page())
    hints = await periodic_jobs.ready_queue.pop(["jobs:ready"], 10, 0)
    assert report.fired == 1
    assert [hint.job_id for hint in hints] == [job.id for job in jobs]


async def test_a_tick_that_leaves_a_schedule_catching_up_asks_for_the_next_at_once() -> None:
    # One schedule is no full batch: passes came every SCHEDULER_TICK (0.5 s), so a week
    # of a minutely schedule took 50 s to fire, not the moments the README promises.
    periodic_jobs = Periodic(max_catch_up=5)
    await periodic_jobs.add("*/5 * * * *", catch_up=True)
    tick = SchedulerTick(
        periodic_jobs.jobs,
        periodic_jobs.ready_queue,
        HintDispatcher(periodic_jobs.ready_queue),
        SchedulerSettings(batch_size=100),
        fire_schedules=periodic_jobs.fire,
    )
    periodic_jobs.clock.advance(3600 + 60)  # 12 missed ticks: 5, 5, then the last 2

    reports = [await tick() for _ in range(3)]

    assert [(report.fired, report.full) for report in reports] == [
        (5, True),
        (5, True),
        (2, False),
    ]


async def test_a_bad_cron_expression_is_a_validation_error_naming_cron(
    periodic_jobs: Periodic,
) -> None:
    for cron in ("61 * * * *", "* * *", "0 0 30 2 *", "@reboot", "* * * * * *"):
        with pytest.raises(ValidationError) as caught:
            await periodic_jobs.add(cron)
        assert caught.value.field == "cron", cron


@pytest.mark.parametrize("cron", ["30\t2 * * *", " 30  2 * * *\n", "30\t2\t*\t*\t*"])
async def test_tabs_and_runs_of_spaces_separate_fields_as_in_a_crontab(cron: str) -> None:
    periodic_jobs = Periodic(utc(2026, 1, 1, 12))
    name = await periodic_jobs.add(cron)

    stored = await periodic_jobs.store.get(name)
    assert stored is not None
    assert (stored.definition.cron, stored.next_fire_at) == ("30 2 * * *", utc(2026, 1, 2, 2, 30))


@pytest.mark.parametrize("cron", ["", "   ", "\t"])
def test_a_blank_cron_expression_is_named_blank(cron: str) -> None:
    with pytest.raises(ValidationError) as caught:
        build_schedule_definition(name="n", cron=cron, job_type="t", queue="q")

    assert caught.value.field == "cron"
    assert caught.value.message.startswith("must not be blank"), caught.value.message


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 0 30 2 *", "the expression never fires: none of its months has that day"),
        ("0 0 31 4,6 *", "the expression never fires: none of its months has that day"),
        ("0 0 32 * *", "invalid cron expression: Bad day-of-month"),
        ("0 0 1 13 *", "invalid cron expression: Bad month"),
        ("0 0 1 foo *", "invalid cron expression: Bad month"),
        ("0 0 30 13 *", "invalid cron expression: Bad month"),
    ],
)
def test_a_day_none_of_the_months_has_is_refused_as_never_firing(cron: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CronsimCalendar().check(cron)

    assert (caught.value.field, caught.value.message) == ("cron", message)


# "Europe" and "America/Argentina" are folders of the zone database (ZoneInfo raises
# IsADirectoryError); "localtime" is the zone of whichever host reads it.
@pytest.mark.parametrize(
    "timezone", ["Mars/Olympus", "Europe", "America/Argentina", "Etc", "localtime", "../UTC"]
)
def test_an_unknown_time_zone_is_a_validation_error_naming_timezone(timezone: str) -> None:
    with pytest.raises(ValidationError) as caught:
        build_schedule_definition(
            name="n", cron="* * * * *", job_type="t", queue="q", timezone=timezone
        )
    assert caught.value.field == "timezone"


def test_macros_read_as_their_cron_expressions() -> None:
    assert CALENDAR.next_after("@daily", "UTC", utc(2026, 1, 1, 5)) == utc(2026, 1, 2)
    assert CALENDAR.next_after("@hourly", "UTC", utc(2026, 1, 1, 5)) == utc(2026, 1, 1, 6)


@pytest.fixture
def declarations() -> Iterator[ScheduleDeclarations]:
    """The process-wide declarations, emptied after the test."""
    yield default_schedules
    default_schedules.clear()


def test_periodic_takes_the_job_type_its_handler_is_registered_for(
    declarations: ScheduleDeclarations,
) -> None:
    handlers = HandlerRegistry()

    @periodic("*/5 * * * *", timezone="Europe/Berlin", payload={"a": 1}, max_attempts=2)
    @handlers.handler("refresh")
    async def refresh(ctx: JobContext) -> None:
        return None

    schedule("nightly", "30 2 * * *", "report", {"kind": "daily"}, queue="reports")

    [refreshing, nightly] = declarations.definitions("jobs:ready", 0.0, handlers)
    assert (refreshing.name, refreshing.job_type, refreshing.queue) == (
        "refresh",
        "refresh",
        "jobs:ready",
    )
    assert refreshing.policy.max_attempts == 2 and refreshing.payload == {"a": 1}
    assert refreshing.source is ScheduleSource.CODE
    assert (nightly.job_type, nightly.queue, nightly.payload) == (
        "report",
        "reports",
        {"kind": "daily"},
    )


def test_periodic_on_a_function_that_is_no_handler_is_refused_at_start(
    declarations: ScheduleDeclarations,
) -> None:
    @periodic("* * * * *")
    def orphan(ctx: JobContext) -> None:
        return None

    with pytest.raises(DeclarationError, match="orphan"):
        declarations.definitions("jobs:ready", 0.0, HandlerRegistry())


def test_two_periodic_declarations_of_one_handler_are_told_to_take_names(
    declarations: ScheduleDeclarations,
) -> None:
    # "is declared twice" alone did not say how two crons on one handler are told apart.
    handlers = HandlerRegistry()

    @periodic("0 8 * * *")
    @periodic("0 20 * * *")
    @handlers.handler("ping")
    async def ping(ctx: JobContext) -> None:
        return None

    with pytest.raises(DeclarationError, match=r"'ping' is declared twice, .*own name="):
        declarations.definitions("jobs:ready", 0.0, handlers)


def test_a_bad_declaration_stops_the_start_with_one_line_naming_it(
    declarations: ScheduleDeclarations,
) -> None:
    schedule("broken", "61 * * * *", "report")

    with pytest.raises(HandlerModuleError, match="schedule 'broken' declared in code: cron"):
        declared_schedules(Settings(), HandlerRegistry())


def test_a_declared_payload_with_no_json_text_stops_the_start_with_one_line_naming_it(
    declarations: ScheduleDeclarations,
) -> None:
    schedule("tidy", "* * * * *", "report", {"since": {1, 2}})  # a set is written as an array
    schedule("opaque", "* * * * *", "report", {"handle": object()})

    with pytest.raises(HandlerModuleError) as caught:
        declared_schedules(Settings(), HandlerRegistry())

    message = str(caught.value)
    assert message.startswith("schedule 'opaque' declared in code: payload: must be JSON")
    assert "\n" not in message


def test_an_unknown_policy_option_is_refused_where_it_is_declared(
    declarations: ScheduleDeclarations,
) -> None:
    # mypy names the typo too (the options are PolicyOptions); this is the check at run time.
    with pytest.raises(TypeError, match="priorty") as refused:
        schedule("typo", "* * * * *", "report", priorty=1)  # type: ignore[call-arg]
    # A declaration error too: a process loading the module says so in one line, exit 2.
    assert isinstance(refused.value, DeclarationError)


async def test_a_schedule_whose_times_cannot_be_computed_holds_up_no_other(
    periodic_jobs: Periodic,
) -> None:
    name = await periodic_jobs.add("* * * * *")
    stored = periodic_jobs.state.schedules[name]
    broken = dataclasses.replace(
        stored,
        definition=dataclasses.replace(stored.definition, name="broken", timezone="Gone/Zone"),
    )
    periodic_jobs.state.schedules["broken"] = broken
    periodic_jobs.clock.advance(60)

    handled, made = await periodic_jobs.fire(100)

    assert (handled, made) == (2, 1)
    assert await periodic_jobs.fired() == [tick_key(name, utc(2026, 1, 1, 0, 1))]
    retried = await periodic_jobs.store.get("broken")
    assert retried is not None
    assert retried.next_fire_at == periodic_jobs.clock.now() + timedelta(minutes=1)


async def test_a_failure_to_fire_schedules_leaves_the_other_sweeps_running(
    periodic_jobs: Periodic,
) -> None:
    async def unavailable(limit: int) -> tuple[int, int]:
        raise Unavailable("postgres", "connection refused")

    job, _, _ = await periodic_jobs.jobs.add(
        NewJob(id=periodic_jobs.ids.new_id(), queue="jobs:ready", job_type="report", delay=1)
    )
    tick = SchedulerTick(
        periodic_jobs.jobs,
        periodic_jobs.ready_queue,
        HintDispatcher(periodic_jobs.ready_queue),
        SchedulerSettings(batch_size=100),
        fire_schedules=unavailable,  # type: ignore[arg-type]
    )
    periodic_jobs.clock.advance(2)

    report = await tick()

    assert (report.fired, report.republished) == (0, 1)
    hints = await periodic_jobs.ready_queue.pop(["jobs:ready"], 10, 0)
    assert [hint.job_id for hint in hints] == [job.id]


def test_periodic_on_a_typed_task_takes_its_job_type_queue_and_policy(
    declarations: ScheduleDeclarations,
) -> None:
    handlers = HandlerRegistry()

    @periodic("0 * * * *", max_delay=60)
    @task("prune", queue="maintenance", registry=handlers, max_attempts=5)
    async def prune(ctx: JobContext) -> None:
        return None

    [pruning] = declarations.definitions("jobs:ready", 0.0, handlers)

    assert (pruning.name, pruning.job_type, pruning.queue) == ("prune", "prune", "maintenance")
    assert (pruning.policy.max_attempts, pruning.policy.max_delay) == (5, 60)


class Digest(msgspec.Struct):
    to: str
    subject: str = "Weekly digest"


def test_periodic_on_a_typed_task_checks_its_payload_against_the_task_s_type(
    declarations: ScheduleDeclarations,
) -> None:
    handlers = HandlerRegistry()

    @periodic("0 8 * * MON", name="fits", payload={"to": "team@example.com"})
    @task("digest", registry=handlers)
    async def send_digest(digest: Digest) -> None:
        return None

    [fits] = declarations.definitions("jobs:ready", 0.0, handlers)
    periodic("0 8 * * MON", name="misses-to")(send_digest)

    assert fits.payload == {"to": "team@example.com", "subject": "Weekly digest"}
    with pytest.raises(
        DeclarationError, match=r"^schedule 'misses-to' declared in code: payload\.to: "
    ):
        declarations.definitions("jobs:ready", 0.0, handlers)


def test_periodic_below_a_typed_task_takes_its_type_policy_and_payload_check(
    declarations: ScheduleDeclarations,
) -> None:
    # Below @task (an order the docs allow), periodic was refused at start as "not
    # registered as a handler": the task registers a wrapper, not the function.
    handlers = HandlerRegistry()

    @task("digest", queue="mail", registry=handlers, max_attempts=7)
    @periodic("0 8 * * MON", name="fits", payload={"to": "team@example.com"})
    async def send_digest(digest: Digest) -> None:
        return None

    [fits] = declarations.definitions("jobs:ready", 0.0, handlers)
    periodic("0 8 * * MON", name="misses-to")(send_digest.function)

    assert (fits.job_type, fits.queue, fits.policy.max_attempts) == ("digest", "mail", 7)
    assert fits.payload == {"to": "team@example.com", "subject": "Weekly digest"}
    with pytest.raises(
        DeclarationError, match=r"^schedule 'misses-to' declared in code: payload\.to: "
    ):
        declarations.definitions("jobs:ready", 0.0, handlers)


@pytest.mark.parametrize("task_above", [True, False])
def test_periodic_on_a_typed_task_taking_no_parameter_fires_it_with_no_payload(
    declarations: ScheduleDeclarations, task_above: bool
) -> None:
    handlers = HandlerRegistry()

    def cleanup() -> None:
        return None

    declare = task("cleanup", queue="maintenance", registry=handlers)
    on_cron = periodic("0 3 * * *")
    if task_above:
        declare(on_cron(cleanup))
    else:
        on_cron(declare(cleanup))

    [cleaning] = declarations.definitions("jobs:ready", 0.0, handlers)
    periodic("0 4 * * *", name="sends-one", payload={"older_than": 30})(cleanup)

    assert (cleaning.job_type, cleaning.queue, cleaning.payload) == ("cleanup", "maintenance", {})
    with pytest.raises(
        DeclarationError, match=r"^schedule 'sends-one' declared in code: payload\.older_than: "
    ):
        declarations.definitions("jobs:ready", 0.0, handlers)


def test_a_periodic_priority_overrides_its_typed_task_s_and_a_bad_one_is_named(
    declarations: ScheduleDeclarations,
) -> None:
    handlers = HandlerRegistry()

    @periodic("0 * * * *", name="inherits")
    @periodic("0 * * * *", name="overrides", priority=0)
    @task("prune", registry=handlers, priority=8)
    async def prune(ctx: JobContext) -> None:
        return None

    found = {d.name: d.priority for d in declarations.definitions("jobs:ready", 0.0, handlers)}
    assert found == {"inherits": 8, "overrides": 0}
    declarations.clear()
    schedule("bad", "0 * * * *", "prune", priority=10)
    with pytest.raises(DeclarationError, match="priority"):
        declarations.definitions("jobs:ready", 0.0, handlers)
