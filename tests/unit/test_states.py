"""The lifecycle table of DESIGN.md section 2, pair by pair."""

from __future__ import annotations

import itertools

import pytest

from taskforge.domain.errors import InvalidTransition
from taskforge.domain.states import (
    TRANSITIONS,
    JobState,
    can_transition,
    ensure_retry_now,
    ensure_transition,
)

P, R, S, F, D, C = (
    JobState.PENDING,
    JobState.RUNNING,
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.DLQ,
    JobState.CANCELLED,
)

# Written out from the design's table, independently of TRANSITIONS.
ALLOWED = {
    (P, R),  # claim
    (P, D),  # manual dead-letter
    (P, C),  # cancel
    (R, P),  # lease expired with attempts left, or handed back at shutdown
    (R, S),  # handler ok
    (R, F),  # retryable error with attempts left
    (R, D),  # terminal error, attempts exhausted, or manual
    (R, C),  # cancel
    (F, P),  # retry due (scheduler) or manual retry
    (F, D),  # manual dead-letter
    (F, C),  # cancel
    (D, P),  # replay or manual retry
    (C, P),  # manual retry
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(JobState, repeat=2)))
def test_transition_table_matches_the_design(current: JobState, target: JobState) -> None:
    assert can_transition(current, target) is ((current, target) in ALLOWED)


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_allowed_transition_passes(current: JobState, target: JobState) -> None:
    ensure_transition(current, target)


def test_illegal_transition_names_current_and_target_state() -> None:
    with pytest.raises(InvalidTransition) as caught:
        ensure_transition(S, P)
    assert caught.value.current == "SUCCEEDED"
    assert caught.value.target == "PENDING"
    assert "SUCCEEDED" in str(caught.value)


def test_succeeded_is_terminal() -> None:
    assert TRANSITIONS[S] == frozenset()


@pytest.mark.parametrize("state", [F, D, C])
def test_operator_may_retry_failed_dead_lettered_and_cancelled_jobs(state: JobState) -> None:
    ensure_retry_now(state)


@pytest.mark.parametrize("state", [P, R, S])
def test_operator_cannot_retry_pending_running_or_succeeded_jobs(state: JobState) -> None:
    with pytest.raises(InvalidTransition):
        ensure_retry_now(state)
