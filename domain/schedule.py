"""Periodic jobs: a schedule enqueues a job at every tick of its cron expression.

A schedule is a job template (type, payload, queue, policy) plus when to fire it: a cron
expression read in a named time zone. Each tick makes one job whose idempotency key names
the schedule and the tick, so a tick can never make two jobs. The cron arithmetic itself is
a port (CronCalendar): the domain uses the standard library only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Unpack
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from taskforge.domain.errors import ValidationError
from taskforge.domain.job import JsonObject
from taskforge.domain.new_job import NewJob, build_new_job
from taskforge.domain.policy import PolicyOptions, RetryPolicy
from taskforge.domain.validation import DEFAULT_PRIORITY, NAME_PATTERN

DEFAULT_TIMEZONE = "UTC"
CRON_MAX = 200
"""Longest cron expression accepted: five or six fields never need more."""
TIMEZONE_MAX = 64
TICK_KEY_PREFIX = "schedule:"

_PLACEHOLDER_ID = UUID(int=0)


class ScheduleSource(StrEnum):
    """Where a schedule was declared."""

    CODE = "code"
    """`@taskforge.periodic` or `taskforge.schedule` in a handler module: upserted by name
    whenever a worker or a scheduler starts with that module."""
    API = "api"
    """POST /schedules (or `taskforge-cli schedules add`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleDefinition:
    """What a schedule does and when: validated, except the cron expression itself, which
    only the CronCalendar can read (the use cases check it there)."""

    name: str
    cron: str
    timezone: str = DEFAULT_TIMEZONE
    catch_up: bool = False
    """After an outage of every scheduler, fire each missed tick (True) or only the most
    recent one (False)."""
    source: ScheduleSource = ScheduleSource.API
    job_type: str
    queue: str
    payload: JsonObject = field(default_factory=dict)
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    visibility_timeout: float = 30.0
    timeout: float = 0.0
    priority: int = DEFAULT_PRIORITY
    """The priority of every job a tick makes (0 highest, 9 lowest)."""

    def job_for(self, tick: datetime, job_id: UUID) -> NewJob:
        """The job of one tick: due at once, keyed by the schedule's name and the tick."""
        return NewJob(
            id=job_id,
            queue=self.queue,
            job_type=self.job_type,
            payload=dict(self.payload),
            policy=self.policy,
            visibility_timeout=self.visibility_timeout,
            timeout=self.timeout,
            priority=self.priority,
            idempotency_key=tick_key(self.name, tick),
        )

    def with_source(self, source: ScheduleSource) -> ScheduleDefinition:
        return dataclasses.replace(self, source=source)


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """A stored schedule. `next_fire_at` is the next tick not fired yet (it stays put while
    the schedule is paused; resuming moves it past the pause); `last_fire_at` is the last
    tick fired (None: never). Timestamps are UTC."""

    definition: ScheduleDefinition
    paused: bool
    next_fire_at: datetime
    last_fire_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def name(self) -> str:
        return self.definition.name


def tick_key(name: str, tick: datetime) -> str:
    """The idempotency key of the job of `name`'s tick at `tick`: one job per tick."""
    return f"{TICK_KEY_PREFIX}{name}:{tick.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def validate_schedule_name(value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError("name", "must be a string")
    if not NAME_PATTERN.fullmatch(value):
        raise ValidationError("name", "must be 1-128 characters of letters, digits and _ - . :")
    return value


def validate_timezone(value: object) -> str:
    """An IANA time zone name (Europe/Berlin, UTC) this system knows. Not `localtime`: that
    is whatever zone the host reading it is set to, and schedulers on other hosts may read
    it differently."""
    if not isinstance(value, str) or not 1 <= len(value) <= TIMEZONE_MAX:
        raise ValidationError("timezone", "must be an IANA time zone name such as Europe/Berlin")
    if value == "localtime" or not _zone_exists(value):
        raise ValidationError(
            "timezone", f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin"
        )
    return value


def _zone_exists(name: str) -> bool:
    try:
        ZoneInfo(name)
    # OSError: a folder of the zone database ("Europe"), or a file it cannot read.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def validate_cron_text(value: object) -> str:
    """The shape of a cron expression, its fields one space apart (as in a crontab, spaces
    and tabs separate them); what they mean is the CronCalendar's to check."""
    if not isinstance(value, str) or len(value) > CRON_MAX:
        raise ValidationError("cron", f"must be a cron expression of at most {CRON_MAX} chars")
    expression = " ".join(value.split())
    if not expression:
        raise ValidationError(
            "cron", "must not be blank: give 5 fields (minute hour day-of-month month day-of-week)"
        )
    if not expression.isprintable():
        raise ValidationError("cron", "must be printable characters only")
    return expression


def build_schedule_definition(
    *,
    name: str,
    cron: str,
    job_type: str,
    queue: str,
    payload: Any = None,
    timezone: str | None = None,
    catch_up: bool | None = None,
    source: ScheduleSource = ScheduleSource.API,
    **options: Unpack[PolicyOptions],
) -> ScheduleDefinition:
    """A schedule from outside (the API's body, a declaration in code), each field checked
    as POST /jobs checks it: a ValidationError names the first bad one. None takes the
    default (`timezone` UTC, `catch_up` False); `options` are checked and defaulted as
    build_new_job checks and defaults a job's."""
    validate_schedule_name(name)
    template = build_new_job(
        job_id=_PLACEHOLDER_ID, job_type=job_type, payload=payload, queue=queue, **options
    )
    if catch_up is not None and not isinstance(catch_up, bool):
        raise ValidationError("catch_up", "must be true or false")
    return ScheduleDefinition(
        name=name,
        cron=validate_cron_text(cron),
        timezone=validate_timezone(DEFAULT_TIMEZONE if timezone is None else timezone),
        catch_up=bool(catch_up),
        source=source,
        job_type=template.job_type,
        queue=template.queue,
        payload=template.payload,
        policy=template.policy,
        visibility_timeout=template.visibility_timeout,
        timeout=template.timeout,
        priority=template.priority,
    )
