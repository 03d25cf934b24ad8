"""The API's response bodies take each field from the domain value's field of the same name,
unless the body's `of` gives it: what a field means is written once, where it is declared."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from uuid import UUID

import msgspec
import pytest

from taskforge.client import values
from taskforge.domain.job import AttemptError, Job
from taskforge.domain.policy import RetryPolicy
from taskforge.domain.schedule import Schedule, ScheduleSource, build_schedule_definition
from taskforge.domain.states import JobState
from taskforge.entrypoints.http import schemas
from taskforge.entrypoints.http.schemas import JobDetailOut, ScheduleOut, from_fields

AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class Body(msgspec.Struct, kw_only=True):
    name: str
    size: int
    label: str


def test_each_field_comes_from_the_first_source_that_has_it_unless_given() -> None:
    first = SimpleNamespace(name="first", size=1)
    second = SimpleNamespace(name="second", size=2, label="second")

    body = from_fields(Body, first, second, size=3)

    assert body == Body(name="first", size=3, label="second")


def test_a_field_no_source_has_and_none_gives_is_an_error() -> None:
    with pytest.raises(TypeError, match="label"):
        from_fields(Body, SimpleNamespace(name="a", size=1))


def test_a_job_body_takes_the_policy_from_the_policy_and_the_rest_from_the_job() -> None:
    job = Job(
        id=UUID("01900000-0000-7000-8000-00000000000a"), queue="q", job_type="t",
        payload={"a": 1}, state=JobState.FAILED, visibility_timeout=45.0, timeout=12.0,
        policy=RetryPolicy(max_attempts=7, initial_delay=2.5, backoff=3.0, max_delay=90.0),
        next_run_at=AT, created_at=AT, updated_at=AT, attempt_count=2, snoozes=1,
        errors=(AttemptError(attempt=1, at=AT, error="boom"),), result=None,
    )  # fmt: skip

    body = JobDetailOut.of(job)

    assert (body.max_attempts, body.initial_delay, body.backoff, body.max_delay) == (
        7, 2.5, 3.0, 90.0,
    )  # fmt: skip
    assert (body.timeout, body.visibility_timeout, body.attempt_count, body.snoozes) == (
        12.0, 45.0, 2, 1,
    )  # fmt: skip
    assert body.state is JobState.FAILED
    assert [(each.attempt, each.error, each.traceback) for each in body.errors] == [
        (1, "boom", None)
    ]


def test_a_paused_schedule_body_has_no_next_fire_and_names_its_last_tick_previous() -> None:
    definition = build_schedule_definition(
        name="nightly", cron="0 3 * * *", job_type="report", queue="q",
        source=ScheduleSource.CODE, max_attempts=4,
    )  # fmt: skip
    later = datetime(2030, 1, 3, tzinfo=UTC)
    schedule = Schedule(
        definition=definition, paused=True, next_fire_at=later, last_fire_at=AT,
        created_at=AT, updated_at=later,
    )  # fmt: skip

    body = ScheduleOut.of(schedule)

    assert (body.name, body.source, body.paused, body.max_attempts) == ("nightly", "code", True, 4)
    assert (body.next_fire_at, body.previous_fire_at) == (None, AT)
    assert (body.created_at, body.updated_at) == (AT, later)


@pytest.mark.parametrize(
    ("value", "body"),
    [
        (values.Job, schemas.JobDetailOut),
        (values.AttemptError, schemas.AttemptErrorOut),
        (values.JobPage, schemas.JobPage),
        (values.DeadLetter, schemas.DeadLetterOut),
        (values.DeadLetterPage, schemas.DeadLetterPage),
        (values.BatchItem, schemas.BatchItemOut),
        (values.QueueInfo, schemas.QueueOut),
        (values.QueueStats, schemas.QueueStatsOut),
        (values.Stats, schemas.StatsOut),
        (values.WorkerInfo, schemas.WorkerOut),
        (values.Schedule, schemas.ScheduleOut),
    ],
)
def test_each_client_value_has_exactly_the_fields_of_the_body_it_decodes(
    value: type[msgspec.Struct], body: type[msgspec.Struct]
) -> None:
    # Declared in both packages (the client ships without the service): a field added to a
    # body and not to its value would be dropped by every client, silently.
    assert set(value.__struct_fields__) - CLIENT_ONLY_FIELDS == set(body.__struct_fields__)


CLIENT_ONLY_FIELDS = frozenset({"conflict"})
"""Fields the client sets from how the API answered, not from the body: `Job.conflict` (an
enqueue answered 200)."""
