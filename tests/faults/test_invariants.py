"""The invariant checks themselves: a clean history passes, and each kind of broken history
fails the invariant it breaks (so a passing fault run means something). No services."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from taskforge.domain.outcome import EXHAUSTED_REASON, LEASE_EXPIRED_ERROR
from tests.faults.invariants import Observation, Verdict, check
from tests.faults.records import DeadLetterRow, Execution, JobRow, Snapshot, Transition

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class History:
    """Builds one job's recorded changes and executions, step by step."""

    def __init__(self, job_id: UUID, max_attempts: int = 3) -> None:
        self.job_id = job_id
        self.max_attempts = max_attempts
        self.changes: list[Transition] = []
        self.runs: list[Execution] = []
        self.attempts = 0
        self.state = "PENDING"
        self.token: UUID | None = None
        self.expires: datetime | None = None
        self._change(None, "PENDING", 0.0)

    def _change(
        self,
        source: str | None,
        target: str,
        when: float,
        last_error: str | None = None,
        reason: str | None = None,
    ) -> None:
        new_token = uuid4() if target == "RUNNING" else None
        self.changes.append(
            Transition(
                id=len(self.changes) + 1,
                job_id=self.job_id,
                from_state=source,
                to_state=target,
                old_token=self.token,
                new_token=new_token,
                old_lease_expires_at=self.expires,
                attempt_count=self.attempts,
                max_attempts=self.max_attempts,
                last_error=last_error,
                reason=reason,
                at=at(when),
            )
        )
        self.state, self.token = target, new_token
        self.expires = at(when + 4) if new_token else None

    def claim(self, when: float) -> UUID:
        self.attempts += 1
        self._change(self.state, "RUNNING", when)
        assert self.token is not None
        return self.token

    def run(
        self, token: UUID, start: float, end: float | None, outcome: str | None, pid: int = 1
    ) -> None:
        self.runs.append(
            Execution(
                id=len(self.runs) + 1,
                job_id=self.job_id,
                attempt=self.attempts,
                pid=pid,
                lease_token=token,
                started_at=at(start),
                ended_at=None if end is None else at(end),
                outcome=outcome,
            )
        )

    def move(self, target: str, when: float, **fields: str | None) -> None:
        self._change(self.state, target, when, **fields)

    def job(self) -> JobRow:
        return JobRow(
            id=self.job_id,
            state=self.state,
            attempt_count=self.attempts,
            max_attempts=self.max_attempts,
            next_run_at=at(0),
            payload={"kind": "ok"},
            reason=None,
            last_error=None,
        )


def snapshot(*histories: History, dead: list[DeadLetterRow] | None = None) -> Snapshot:
    return Snapshot(
        now=at(100),
        jobs={h.job_id: h.job() for h in histories},
        dead_letters={row.job_id: row for row in dead or []},
        executions=[run for h in histories for run in h.runs],
        history=[change for h in histories for change in h.changes],
    )


def verdicts(
    snap: Snapshot, accepted: list[UUID] | None = None, **kwargs: object
) -> dict[str, Verdict]:
    kinds = {job_id: "ok" for job_id in (snap.jobs if accepted is None else accepted)}
    found, _ = check(snap, kinds, **kwargs)  # type: ignore[arg-type]
    return {v.name: v for v in found}


def failing(snap: Snapshot, accepted: list[UUID] | None = None, **kwargs: object) -> set[str]:
    return {name for name, v in verdicts(snap, accepted, **kwargs).items() if not v.ok}


def succeeded_once() -> History:
    h = History(uuid4())
    token = h.claim(1)
    h.run(token, 1.1, 1.5, "returned")
    h.move("SUCCEEDED", 1.6)
    return h


def test_a_clean_history_keeps_every_invariant() -> None:
    assert failing(snapshot(succeeded_once())) == set()


def test_an_accepted_job_that_is_missing_or_unfinished_is_lost() -> None:
    h = succeeded_once()
    snap = snapshot(h)
    missing = replace(snap, jobs={})
    assert "no loss" in failing(missing, accepted=[h.job_id])
    waiting = History(uuid4())
    assert "no loss" in failing(snapshot(waiting))


def test_a_running_or_due_job_after_the_drain_is_stuck() -> None:
    h = History(uuid4())
    h.claim(1)
    assert "nothing stuck" in failing(snapshot(h))


def test_leaving_succeeded_breaks_the_history() -> None:
    h = succeeded_once()
    h.move("PENDING", 5)
    assert "legal history" in failing(snapshot(h))


def test_an_api_sample_that_goes_back_from_succeeded_breaks_the_history() -> None:
    h = succeeded_once()
    seen = [Observation(at(2), h.job_id, "SUCCEEDED"), Observation(at(3), h.job_id, "RUNNING")]
    assert "legal history" in failing(snapshot(h), observations=seen)


def test_a_second_execution_during_a_live_lease_is_an_illegal_duplicate() -> None:
    h = History(uuid4())
    first = h.claim(1)
    h.run(first, 1.1, 3.0, "returned")
    h.run(first, 2.0, 2.5, "returned", pid=2)  # the same lease ran twice
    h.move("SUCCEEDED", 3.1)
    assert "bounded duplicates" in failing(snapshot(h))


def test_an_overlapping_rerun_is_legal_only_after_the_first_lease_expired() -> None:
    h = History(uuid4())
    first = h.claim(1)
    h.run(first, 1.1, 9.0, "returned", pid=1)  # a zombie: finishes late, result refused
    h.move("PENDING", 5.5, last_error=LEASE_EXPIRED_ERROR)  # reaped after expiry at 5.0
    second = h.claim(5.6)
    h.run(second, 5.7, 6.0, "returned", pid=2)
    h.move("SUCCEEDED", 6.1)
    assert failing(snapshot(h)) == set()

    early = History(uuid4())
    first = early.claim(1)
    early.run(first, 1.1, 9.0, "returned", pid=1)
    early.move("PENDING", 2.0)  # taken back before its lease expired: not a reap
    second = early.claim(2.1)
    early.run(second, 2.2, 2.5, "returned", pid=2)
    early.move("SUCCEEDED", 2.6)
    assert "bounded duplicates" in failing(snapshot(early))


def test_a_settlement_must_match_the_outcome_of_its_own_execution() -> None:
    h = History(uuid4())
    token = h.claim(1)
    h.run(token, 1.1, 1.5, "raised")
    h.move("SUCCEEDED", 1.6)
    assert "bounded duplicates" in failing(snapshot(h))


def test_more_executions_than_attempts_is_a_duplicate() -> None:
    h = succeeded_once()
    h.run(h.changes[1].new_token or uuid4(), 2.0, 2.1, "returned")
    assert "bounded duplicates" in failing(snapshot(h))


def test_an_unfinished_execution_needs_a_killed_worker() -> None:
    h = History(uuid4())
    first = h.claim(1)
    h.run(first, 1.1, None, None, pid=7)
    h.move("PENDING", 5.5, last_error=LEASE_EXPIRED_ERROR)
    second = h.claim(5.6)
    h.run(second, 5.7, 6.0, "returned", pid=8)
    h.move("SUCCEEDED", 6.1)
    assert "bounded duplicates" in failing(snapshot(h))
    assert failing(snapshot(h), killed={7: at(2)}) == set()


def dead_lettered() -> tuple[History, DeadLetterRow]:
    h = History(uuid4(), max_attempts=1)
    token = h.claim(1)
    h.run(token, 1.1, 1.5, "raised")
    h.move("DLQ", 1.6, last_error="RuntimeError: boom", reason=EXHAUSTED_REASON)
    row = DeadLetterRow(
        job_id=h.job_id,
        payload={"kind": "ok"},
        reason=EXHAUSTED_REASON,
        last_error="RuntimeError: boom",
        attempts=1,
    )
    return h, row


def test_a_dead_letter_row_exists_exactly_for_each_job_in_dlq() -> None:
    h, row = dead_lettered()
    assert failing(snapshot(h, dead=[row])) == set()
    assert "DLQ complete" in failing(snapshot(h))
    assert "DLQ complete" in failing(snapshot(succeeded_once(), dead=[row]))


@pytest.mark.parametrize(
    "change",
    [
        {"attempts": 2},  # the attempt count is the job's
        {"payload": {"kind": "other"}},  # the payload is the job's
        {"last_error": None},  # the last error is kept
        {"reason": "terminal error"},  # the reason says how it got there
    ],
)
def test_a_dead_letter_row_carries_the_jobs_facts(change: dict[str, object]) -> None:
    h, row = dead_lettered()
    assert "DLQ complete" in failing(snapshot(h, dead=[replace(row, **change)]))  # type: ignore[arg-type]
