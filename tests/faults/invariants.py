"""The promises checked after every scenario, from the database snapshot and what the suite saw.

- no loss: every job a POST answered 2xx for is SUCCEEDED, DLQ or CANCELLED.
- nothing stuck: after the drain no job is RUNNING, PENDING and due, or FAILED and overdue.
- legal history: every recorded state change follows `TRANSITIONS` (domain/states.py) and
  chains onto the previous one; SUCCEEDED and CANCELLED never change again; each claim
  counts one attempt; the states the API showed while sampling appear in that order in the
  history.
- bounded duplicates: every execution ran under its own lease, taken by a claim; a job has
  no more executions than attempts (plus leases handed back at shutdown); a lease ends
  only by its own execution's settlement (matching its outcome), a cancel, a hand-back or
  an expiry; an execution that starts while an earlier one of the same job is still running
  does so only after the earlier lease expired and was reaped.
- DLQ complete: `dead_letters` holds exactly the jobs in DLQ, each with the job's payload, a
  reason, the last error and the attempt count; each got there by a terminal error or
  with its attempts exhausted, as the reason says.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from taskforge.domain.outcome import (
    EXHAUSTED_REASON,
    LEASE_EXPIRED_ERROR,
    TERMINAL_REASON,
    UNKNOWN_TYPE_REASON,
)
from taskforge.domain.states import TRANSITIONS, JobState
from tests.faults.records import Execution, Snapshot, Transition

TERMINAL = frozenset({"SUCCEEDED", "DLQ", "CANCELLED"})
FINAL = frozenset({"SUCCEEDED", "CANCELLED"})
"""Never left again in this suite: SUCCEEDED by design, CANCELLED because the suite never
retries a cancelled job by hand."""
OVERDUE_SLACK = timedelta(seconds=3)
EXAMPLES = 5
"""Violations listed per invariant; the rest are counted."""


@dataclass(frozen=True, slots=True)
class Observation:
    """A job's state as the API reported it at `at`."""

    at: datetime
    job_id: UUID
    state: str


@dataclass
class Verdict:
    name: str
    detail: str = ""
    violations: list[str] = field(default_factory=list)
    count: int = 0

    @property
    def ok(self) -> bool:
        return self.count == 0

    def fail(self, message: str) -> None:
        self.count += 1
        if len(self.violations) < EXAMPLES:
            self.violations.append(message)


@dataclass
class Tally:
    """The numbers a scenario's row in the summary shows."""

    accepted: int = 0
    unacknowledged: int = 0
    executions: int = 0
    retries: int = 0
    reruns: int = 0
    reruns_after_success: int = 0
    overlaps: int = 0
    lost: int = 0
    stuck: int = 0
    dead_letters: int = 0
    states: Counter[str] = field(default_factory=Counter)


@dataclass
class LeaseEnd:
    """How the lease an execution ran under came to an end."""

    transition: Transition | None

    @property
    def kind(self) -> str:
        t = self.transition
        if t is None:
            return "open"
        if t.to_state == "CANCELLED":
            return "cancel"
        if t.lease_expired and (t.to_state == "PENDING" or t.last_error == LEASE_EXPIRED_ERROR):
            return "expiry"
        if t.to_state == "PENDING":
            return "release"
        return "settle"


def check(
    snapshot: Snapshot,
    accepted: Mapping[UUID, str],
    observations: Iterable[Observation] = (),
    killed: Mapping[int, datetime] | None = None,
    cancelled: Iterable[UUID] = (),
) -> tuple[list[Verdict], Tally]:
    """Evaluate every invariant. `accepted` maps each accepted job to its planned kind;
    `killed` gives the time each SIGKILLed pid died; `cancelled` lists jobs whose cancel
    request was answered 200."""
    tally = Tally(accepted=len(accepted), executions=len(snapshot.executions))
    tally.unacknowledged = sum(1 for job_id in snapshot.jobs if job_id not in accepted)
    tally.states = Counter(job.state for job in snapshot.jobs.values())
    tally.dead_letters = len(snapshot.dead_letters)
    history: dict[UUID, list[Transition]] = defaultdict(list)
    for transition in snapshot.history:
        history[transition.job_id].append(transition)
    verdicts = [
        _no_loss(snapshot, accepted, set(cancelled), tally),
        _nothing_stuck(snapshot, tally),
        _legal_history(snapshot, history, observations),
        _bounded_duplicates(snapshot, history, killed or {}, tally),
        _dlq_complete(snapshot, history, accepted),
    ]
    return verdicts, tally


def _no_loss(
    snapshot: Snapshot, accepted: Mapping[UUID, str], cancelled: set[UUID], tally: Tally
) -> Verdict:
    verdict = Verdict("no loss")
    for job_id in accepted:
        job = snapshot.jobs.get(job_id)
        if job is None:
            verdict.fail(f"{job_id}: accepted but not in the database")
        elif job.state not in TERMINAL:
            verdict.fail(f"{job_id}: accepted, still {job.state}")
        elif job_id in cancelled and job.state != "CANCELLED":
            verdict.fail(f"{job_id}: cancel answered 200, but the job ended {job.state}")
    tally.lost = verdict.count
    ended = Counter(snapshot.jobs[job_id].state for job_id in accepted if job_id in snapshot.jobs)
    verdict.detail = f"{len(accepted) - verdict.count}/{len(accepted)} accepted jobs ended (" + (
        ", ".join(f"{state} {ended[state]}" for state in sorted(TERMINAL) if ended[state]) + ")"
    )
    return verdict


def _nothing_stuck(snapshot: Snapshot, tally: Tally) -> Verdict:
    verdict = Verdict("nothing stuck")
    for job in snapshot.jobs.values():
        if job.state == "RUNNING":
            verdict.fail(f"{job.id}: RUNNING after the drain")
        elif job.state == "PENDING" and job.next_run_at <= snapshot.now:
            verdict.fail(f"{job.id}: PENDING and due since {job.next_run_at:%H:%M:%S.%f}")
        elif job.state == "FAILED" and job.next_run_at <= snapshot.now - OVERDUE_SLACK:
            verdict.fail(f"{job.id}: FAILED, retry overdue since {job.next_run_at:%H:%M:%S.%f}")
    tally.stuck = verdict.count
    verdict.detail = f"{len(snapshot.jobs)} jobs: none RUNNING, PENDING-and-due or overdue"
    return verdict


def _legal_history(
    snapshot: Snapshot,
    history: Mapping[UUID, list[Transition]],
    observations: Iterable[Observation],
) -> Verdict:
    verdict = Verdict("legal history")
    for job_id, job in snapshot.jobs.items():
        changes = history.get(job_id, [])
        if not changes or changes[0].from_state is not None or changes[0].to_state != "PENDING":
            verdict.fail(f"{job_id}: history does not start with its creation as PENDING")
            continue
        previous = changes[0]
        for change in changes[1:]:
            source, target = change.from_state, change.to_state
            if source != previous.to_state:
                verdict.fail(
                    f"{job_id}: {source}->{target} after it had entered {previous.to_state}"
                )
            elif source in FINAL:
                verdict.fail(f"{job_id}: left {source} for {target}")
            elif JobState(target) not in TRANSITIONS[JobState(source)]:
                verdict.fail(f"{job_id}: illegal transition {source}->{target}")
            if target == "RUNNING" and change.attempt_count != previous.attempt_count + 1:
                verdict.fail(
                    f"{job_id}: claim moved attempts {previous.attempt_count}"
                    f"->{change.attempt_count}"
                )
            previous = change
        if previous.to_state != job.state:
            verdict.fail(f"{job_id}: history ends in {previous.to_state}, job is {job.state}")
    seen: dict[UUID, list[Observation]] = defaultdict(list)
    count = 0
    for observation in observations:
        seen[observation.job_id].append(observation)
        count += 1
    for job_id, observed in seen.items():
        states = [h.to_state for h in history.get(job_id, [])]
        sequence = _collapse(o.state for o in sorted(observed, key=lambda o: o.at))
        if not _is_subsequence(sequence, states):
            verdict.fail(f"{job_id}: API showed {sequence}, history is {_collapse(states)}")
        for earlier, later in itertools.pairwise(sequence):
            if earlier in FINAL:
                verdict.fail(f"{job_id}: API showed {earlier} and then {later}")
    verdict.detail = (
        f"{len(snapshot.history)} recorded changes, {count} sampled states of {len(seen)} jobs"
    )
    return verdict


def _collapse(states: Iterable[str]) -> list[str]:
    out: list[str] = []
    for state in states:
        if not out or out[-1] != state:
            out.append(state)
    return out


def _is_subsequence(needle: list[str], haystack: list[str]) -> bool:
    remaining = iter(haystack)
    return all(any(item == candidate for candidate in remaining) for item in needle)


def lease_ends(snapshot: Snapshot) -> dict[UUID, LeaseEnd]:
    """For every lease token: the change that ended it (None while it is held)."""
    ends: dict[UUID, LeaseEnd] = {}
    for change in snapshot.history:
        if change.new_token is not None:
            ends.setdefault(change.new_token, LeaseEnd(None))
        if change.old_token is not None and change.from_state == "RUNNING":
            ends[change.old_token] = LeaseEnd(change)
    return ends


def _handed_back(change: Transition) -> bool:
    """A worker released the lease at shutdown: the attempt is not counted."""
    return (
        change.from_state == "RUNNING" and change.to_state == "PENDING" and not change.lease_expired
    )


SETTLE_OUTCOMES = {
    "SUCCEEDED": {"returned"},
    "FAILED": {"raised", "interrupted"},
    "DLQ": {"raised", "terminal", "interrupted"},
}
"""The execution outcomes each settlement may record. `interrupted` settles as a failure
only when heartbeats are off and the handler ran out its visibility timeout."""


def _bounded_duplicates(
    snapshot: Snapshot,
    history: Mapping[UUID, list[Transition]],
    killed: Mapping[int, datetime],
    tally: Tally,
) -> Verdict:
    verdict = Verdict("bounded duplicates")
    ends = lease_ends(snapshot)
    claims = {
        change.new_token: change
        for change in snapshot.history
        if change.to_state == "RUNNING" and change.new_token is not None
    }
    tokens = Counter(e.lease_token for e in snapshot.executions if e.lease_token is not None)
    unverified = sum(1 for e in snapshot.executions if e.lease_token is None)
    by_job: dict[UUID, list[Execution]] = defaultdict(list)
    for execution in snapshot.executions:
        by_job[execution.job_id].append(execution)

    for token, uses in tokens.items():
        if uses > 1:
            verdict.fail(f"lease {token} ran {uses} executions")
    for token, claim in claims.items():
        end = ends[token]
        if end.kind == "settle":
            assert end.transition is not None
            runs = [e for e in by_job[claim.job_id] if e.lease_token == token]
            allowed = SETTLE_OUTCOMES.get(end.transition.to_state, set())
            if runs and runs[0].outcome not in allowed:
                verdict.fail(
                    f"{claim.job_id}: settled {end.transition.to_state} under a lease whose"
                    f" execution ended {runs[0].outcome!r}"
                )
            elif not runs and unverified == 0:
                verdict.fail(
                    f"{claim.job_id}: settled {end.transition.to_state} under a lease no"
                    " execution ran under"
                )

    for job_id, runs in by_job.items():
        job = snapshot.jobs.get(job_id)
        changes = history.get(job_id, [])
        released = sum(1 for change in changes if _handed_back(change))
        if job is not None and len(runs) > job.attempt_count + released:
            verdict.fail(
                f"{job_id}: {len(runs)} executions for {job.attempt_count} attempts"
                f" (+{released} handed back)"
            )
        runs = sorted(runs, key=lambda e: e.started_at)
        for execution in runs:
            if execution.lease_token is not None and execution.lease_token not in claims:
                verdict.fail(f"{job_id}: an execution ran under a lease no claim created")
        for index, later in enumerate(runs[1:], start=1):
            earlier = runs[index - 1]
            ended = ends.get(earlier.lease_token) if earlier.lease_token else None
            kind = ended.kind if ended else "unknown"
            if kind == "settle":
                tally.retries += 1
            else:
                tally.reruns += 1
                if earlier.outcome == "returned":
                    tally.reruns_after_success += 1
                if kind not in ("expiry", "release", "unknown"):
                    verdict.fail(f"{job_id}: ran again after its lease ended by {kind}")
            for previous in runs[:index]:
                finished = previous.ended_at or killed.get(previous.pid)
                if finished is not None and finished <= later.started_at:
                    continue
                tally.overlaps += 1
                prior = ends.get(previous.lease_token) if previous.lease_token else None
                taken = prior.transition if prior else None
                if taken is None or prior is None or prior.kind != "expiry":
                    verdict.fail(
                        f"{job_id}: attempt {later.attempt} started while attempt"
                        f" {previous.attempt} ran, without that lease expiring"
                    )
                elif taken.at > later.started_at:
                    verdict.fail(
                        f"{job_id}: attempt {later.attempt} started before attempt"
                        f" {previous.attempt}'s lease was reaped"
                    )
    for execution in snapshot.executions:
        if execution.ended_at is None and execution.pid not in killed:
            verdict.fail(
                f"{execution.job_id}: attempt {execution.attempt} in pid {execution.pid}"
                " never finished and its worker was not killed"
            )
    verdict.detail = (
        f"{len(snapshot.executions)} executions: {tally.retries} planned retries,"
        f" {tally.reruns} re-runs after a lost lease ({tally.reruns_after_success} of a"
        f" finished handler), {tally.overlaps} overlapping, all after an expiry"
        + (f"; {unverified} without a recorded lease" if unverified else "")
    )
    return verdict


def _dlq_complete(
    snapshot: Snapshot, history: Mapping[UUID, list[Transition]], accepted: Mapping[UUID, str]
) -> Verdict:
    verdict = Verdict("DLQ complete")
    in_dlq = {job_id for job_id, job in snapshot.jobs.items() if job.state == "DLQ"}
    rows = snapshot.dead_letters
    for job_id in sorted(in_dlq - rows.keys()):
        verdict.fail(f"{job_id}: in DLQ without a dead_letters row")
    for job_id in sorted(rows.keys() - in_dlq):
        verdict.fail(f"{job_id}: dead_letters row, but the job is not in DLQ")
    runs: dict[UUID, Execution] = {
        e.lease_token: e for e in snapshot.executions if e.lease_token is not None
    }
    reasons: Counter[str] = Counter()
    for job_id in sorted(in_dlq & rows.keys()):
        job, row = snapshot.jobs[job_id], rows[job_id]
        reasons[row.reason or ""] += 1
        if row.payload != job.payload:
            verdict.fail(f"{job_id}: dead letter payload differs from the job's")
        if not row.reason or not row.last_error:
            verdict.fail(f"{job_id}: dead letter without reason or last_error")
        if row.attempts != job.attempt_count:
            verdict.fail(
                f"{job_id}: dead letter says {row.attempts} attempts, job {job.attempt_count}"
            )
        entered = history[job_id][-1]
        exhausted = entered.attempt_count >= entered.max_attempts
        run = runs.get(entered.old_token) if entered.old_token else None
        if entered.lease_expired and entered.last_error == LEASE_EXPIRED_ERROR:
            cause = EXHAUSTED_REASON if exhausted else "lease expired with attempts left"
        elif run is not None and run.outcome == "terminal":
            cause = TERMINAL_REASON
        elif run is None and (entered.last_error or "").startswith("no handler for jobType"):
            cause = UNKNOWN_TYPE_REASON  # no worker had a handler for its jobType: nothing ran
        elif exhausted:
            cause = EXHAUSTED_REASON
        else:
            cause = "neither a terminal error nor exhausted attempts"
        if row.reason != cause:
            verdict.fail(f"{job_id}: dead-lettered as {row.reason!r}, the history says {cause!r}")
    for job_id, kind in accepted.items():
        found = snapshot.jobs.get(job_id)
        if found is None or found.state == "CANCELLED":
            continue
        if kind in ("exhaust", "terminal") and found.state != "DLQ":
            verdict.fail(f"{job_id}: planned to fail ({kind}) but ended {found.state}")
    verdict.detail = f"{len(rows)} dead letters = {len(in_dlq)} jobs in DLQ (" + (
        ", ".join(f"{reason}: {n}" for reason, n in sorted(reasons.items())) + ")"
    )
    return verdict
