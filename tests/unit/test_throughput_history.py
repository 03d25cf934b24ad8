"""The overview's last hour: attempts finished per minute, from sampled metric totals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from taskforge.application.dashboard import CHART_MINUTES, ThroughputHistory

START = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)


def test_the_first_sample_shows_an_hour_of_empty_minutes_ending_now() -> None:
    minutes = ThroughputHistory().sample(START, 100, 5)

    assert len(minutes) == CHART_MINUTES
    assert minutes[-1].minute == START.replace(second=0)
    assert minutes[0].minute == START.replace(second=0) - timedelta(minutes=CHART_MINUTES - 1)
    assert all(minute.succeeded == minute.failed == 0 for minute in minutes)


def test_work_between_two_samples_of_one_minute_lands_in_that_minute() -> None:
    history = ThroughputHistory()
    history.sample(START, 100, 5)

    minutes = history.sample(START + timedelta(seconds=30), 130, 15)

    assert (minutes[-1].succeeded, minutes[-1].failed) == (30, 10)
    assert minutes[-1].failure_rate == 0.25


def test_work_over_unwatched_minutes_is_shared_evenly_between_them() -> None:
    history = ThroughputHistory()
    history.sample(START, 0, 0)

    minutes = history.sample(START + timedelta(minutes=3), 40, 0)

    assert [minute.succeeded for minute in minutes[-4:]] == [10, 10, 10, 10]


def test_minutes_older_than_the_chart_drop_out() -> None:
    history = ThroughputHistory()
    history.sample(START, 0, 0)
    history.sample(START + timedelta(seconds=20), 60, 0)

    minutes = history.sample(START + timedelta(minutes=CHART_MINUTES), 60, 0)

    assert sum(minute.succeeded for minute in minutes) == 0


def test_totals_that_went_back_add_nothing() -> None:
    """The metrics store was lost and started from zero: no negative bars."""
    history = ThroughputHistory()
    history.sample(START, 500, 50)

    minutes = history.sample(START + timedelta(seconds=5), 3, 0)

    assert minutes[-1].succeeded == minutes[-1].failed == 0
