"""Retry policy: backoff math and validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskforge.domain.errors import ValidationError
from taskforge.domain.policy import RetryPolicy, validate_visibility_timeout

# Delays are timedeltas, which round to whole microseconds.
MICROSECOND = 1e-6


def fixed(value: float):  # type: ignore[no-untyped-def]
    return lambda: value


@pytest.mark.parametrize(
    ("initial", "backoff", "cap", "attempt", "expected"),
    [
        (1.0, 2.0, 300.0, 1, 1.0),  # first retry waits initialDelay
        (1.0, 2.0, 300.0, 2, 2.0),  # then doubles
        (1.0, 2.0, 300.0, 5, 16.0),  # 1 * 2^4
        (1.0, 2.0, 300.0, 9, 256.0),  # still under the cap
        (1.0, 2.0, 300.0, 10, 300.0),  # 512 capped at maxDelay
        (0.5, 3.0, 10.0, 3, 4.5),  # 0.5 * 3^2
        (2.0, 1.0, 300.0, 7, 2.0),  # backoff 1 means a constant delay
        (0.0, 2.0, 300.0, 4, 0.0),  # no delay at all
        (1.0, 2.0, 300.0, 1000, 300.0),  # huge attempt numbers do not overflow
    ],
)
def test_backoff_without_jitter(
    initial: float, backoff: float, cap: float, attempt: int, expected: float
) -> None:
    policy = RetryPolicy(initial_delay=initial, backoff=backoff, max_delay=cap)
    assert policy.delay_after(attempt, fixed(0.9)).total_seconds() == pytest.approx(expected)


policies = st.builds(
    lambda initial, backoff, extra: RetryPolicy(
        initial_delay=initial, backoff=backoff, max_delay=initial + extra, max_attempts=1000
    ),
    st.floats(min_value=0, max_value=100),
    st.floats(min_value=1, max_value=10),
    st.floats(min_value=0, max_value=1000),
)


@given(policies, st.integers(min_value=1, max_value=200))
def test_backoff_grows_monotonically_until_the_cap(policy: RetryPolicy, attempt: int) -> None:
    first = policy.delay_after(attempt, fixed(0)).total_seconds()
    second = policy.delay_after(attempt + 1, fixed(0)).total_seconds()
    assert first <= second <= policy.max_delay + MICROSECOND


@given(policies, st.integers(min_value=1, max_value=200), st.floats(min_value=0, max_value=0.999))
def test_jitter_stays_between_half_and_the_full_delay(
    policy: RetryPolicy, attempt: int, draw: float
) -> None:
    plain = policy.delay_after(attempt, fixed(draw)).total_seconds()
    jittered = RetryPolicy(
        max_attempts=policy.max_attempts,
        initial_delay=policy.initial_delay,
        backoff=policy.backoff,
        max_delay=policy.max_delay,
        jitter=True,
    ).delay_after(attempt, fixed(draw))
    assert plain / 2 - MICROSECOND <= jittered.total_seconds() <= plain + MICROSECOND
    assert jittered.total_seconds() == pytest.approx(plain / 2 + draw * plain / 2, abs=MICROSECOND)


@given(policies, st.integers(min_value=1, max_value=50))
def test_backoff_without_jitter_ignores_the_random_source(
    policy: RetryPolicy, attempt: int
) -> None:
    assert policy.delay_after(attempt, fixed(0.0)) == policy.delay_after(attempt, fixed(0.99))


def test_defaults_follow_the_design() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_delay, policy.backoff) == (3, 1.0, 2.0)
    assert (policy.max_delay, policy.jitter) == (300.0, False)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 1001}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"initial_delay": -1.0}, "initial_delay"),
        ({"initial_delay": float("nan")}, "initial_delay"),
        ({"backoff": 0.5}, "backoff"),
        ({"backoff": float("inf")}, "backoff"),
        ({"initial_delay": 10.0, "max_delay": 5.0}, "max_delay"),
        ({"max_delay": 10**400}, "max_delay"),  # an int no float can hold
    ],
)
def test_invalid_policy_values_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RetryPolicy(**changes)  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize("seconds", [0.5, 43201.0, float("nan"), 10**400])
def test_visibility_timeout_outside_its_range_is_rejected(seconds: float) -> None:
    with pytest.raises(ValidationError, match="visibility_timeout"):
        validate_visibility_timeout(seconds)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_delay": 1e300}, "must be at most 315360000 seconds"),
        ({"initial_delay": 1e12, "max_delay": 1e12}, "must be between 0 and 315360000 seconds"),
    ],
)
def test_durations_beyond_ten_years_are_rejected_with_the_bound_in_full(
    changes: dict[str, float], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        RetryPolicy(**changes)  # type: ignore[arg-type]
    assert caught.value.message == message


def test_interned_policies_are_validated_and_shared() -> None:
    first = RetryPolicy.of(5, 0.5, 3.0, 60.0, True)
    assert first == RetryPolicy(
        max_attempts=5, initial_delay=0.5, backoff=3.0, max_delay=60.0, jitter=True
    )
    assert RetryPolicy.of(5, 0.5, 3.0, 60.0, True) is first
    with pytest.raises(ValidationError):
        RetryPolicy.of(0, 1.0, 2.0, 300.0, False)
    with pytest.raises(ValidationError):
        RetryPolicy.of(True, 1.0, 2.0, 300.0, False)  # True == 1, yet not an attempt count
