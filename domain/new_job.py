"""A job being created: `NewJob`, the validated request a store turns into a job, and the
builders that make one from an enqueue's options (`build_new_job` for one, `JobBuilder` for a
batch, which reuses what its jobs share)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from taskforge.domain.errors import ValidationError
from taskforge.domain.job import DEFAULT_VISIBILITY_TIMEOUT, Job, JsonObject
from taskforge.domain.policy import RetryPolicy, require_number, validate_visibility_timeout
from taskforge.domain.states import JobState
from taskforge.domain.validation import (
    DEFAULT_PRIORITY,
    DUE_AT_RANGE,
    EARLIEST_DUE_AT,
    LATEST_DUE_AT,
    validate_delay,
    validate_idempotency_key,
    validate_job_type,
    validate_payload,
    validate_priority,
    validate_queue_name,
    validate_run_at,
    validate_timeout,
    validate_unique_key,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob:
    """A validated request to create a job; the repository assigns state and timestamps.

    `run_at` None means "now" (by the store's clock); a later time makes a delayed job.
    `payload`, `run_at`, `delay` and `priority` are checked when the job is built, whoever
    builds it: no NUL in the payload, at most one of `run_at` and `delay`, `run_at` with an
    offset and inside the due-time range (kept in UTC), `delay` within MAX_DURATION,
    `priority` from 0 to 9.
    """

    id: UUID
    queue: str
    job_type: str
    payload: JsonObject = field(default_factory=dict)
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    timeout: float = 0.0
    """Seconds an attempt may run before it fails as timed out; 0 means no limit."""
    priority: int = DEFAULT_PRIORITY
    """0 (claimed first) to 9 (last); see dispatch_order."""
    idempotency_key: str | None = None
    unique_key: str | None = None
    """While a job of the same queue with this key is PENDING, RUNNING or FAILED, storing
    this one returns that job instead (see UNIQUE_KEY_STATES)."""
    run_at: datetime | None = None
    delay: float | None = None
    traceparent: str | None = None

    def __post_init__(self) -> None:
        validate_payload(self.payload)
        validate_priority(self.priority)
        if self.run_at is not None:
            # Frozen: the normalised value replaces the given one while the job is built.
            object.__setattr__(self, "run_at", _run_at_beside(self.run_at, self.delay))
        if self.delay is not None:
            object.__setattr__(self, "delay", validate_delay(self.delay))

    def with_traceparent(self, traceparent: str | None) -> NewJob:
        """This job carrying `traceparent`. It was checked when built, so the copy is not
        checked again (a payload is scanned once per job)."""
        values = [traceparent if name == "traceparent" else getattr(self, name) for name in _FIELDS]
        return _unchecked(values)

    def like(
        self,
        job_id: UUID,
        payload: Mapping[str, Any] | None,
        *,
        idempotency_key: str | None = None,
        unique_key: str | None = None,
        run_at: datetime | None = None,
    ) -> NewJob:
        """A job with this one's settings (checked when this one was built) under another id,
        with its own payload, keys and run_at, checked as a new job's are and in the same
        order (the first bad one is the one named)."""
        if idempotency_key is not None:
            idempotency_key = validate_idempotency_key(idempotency_key)
        if unique_key is not None:
            unique_key = validate_unique_key(unique_key)
        payload = validate_payload(_as_dict(payload))
        if run_at is not None:
            run_at = _run_at_beside(run_at, self.delay)
        # Every field, in the order NewJob declares them (a test holds it to that): a batch's
        # jobs are mostly made here, and naming each value beats looking each up by name.
        return _unchecked(
            (
                job_id, self.queue, self.job_type, payload, self.policy,
                self.visibility_timeout, self.timeout, self.priority, idempotency_key,
                unique_key, run_at, self.delay, self.traceparent,
            )
        )  # fmt: skip

    def due_at(self, now: datetime) -> datetime:
        """When the job is due if stored at `now`: `run_at`, else `now` plus `delay` (if any).
        A delay that ends past the due-time range is a ValidationError naming `delay`."""
        if self.run_at is not None:
            return self.run_at
        if not self.delay:
            return now
        try:
            due = now + timedelta(seconds=self.delay)
        except OverflowError:
            due = None
        if due is None or not EARLIEST_DUE_AT <= due <= LATEST_DUE_AT:
            raise ValidationError("delay", f"must end at a time {DUE_AT_RANGE}")
        return due

    def stored(
        self, next_run_at: datetime, created_at: datetime, payload: JsonObject | None = None
    ) -> Job:
        """The job as a store records it when created: PENDING, no attempts yet, due at
        `next_run_at`; `payload` is the store's copy when it normalises JSON (else this
        job's)."""
        return Job(
            id=self.id,
            queue=self.queue,
            job_type=self.job_type,
            payload=self.payload if payload is None else payload,
            state=JobState.PENDING,
            policy=self.policy,
            visibility_timeout=self.visibility_timeout,
            timeout=self.timeout,
            priority=self.priority,
            next_run_at=next_run_at,
            created_at=created_at,
            updated_at=created_at,
            idempotency_key=self.idempotency_key,
            unique_key=self.unique_key,
            traceparent=self.traceparent,
        )


_FIELDS = tuple(each.name for each in fields(NewJob))
_SLOT_SETTERS = tuple(getattr(NewJob, name).__set__ for name in _FIELDS)


def _unchecked(values: Sequence[Any]) -> NewJob:
    """The NewJob of `values` (each field's, in order), checked already: several times
    cheaper than building it (or copy.copy, which pickles its way through the slots). A
    batch's jobs are mostly made here, so zip takes no `strict` keyword (0.93 us a job against
    1.2 with it): the test that copies a job with every field set apart from its default
    holds the callers to every field."""
    made = object.__new__(NewJob)
    for set_slot, value in zip(_SLOT_SETTERS, values):  # noqa: B905 - see the docstring
        set_slot(made, value)
    return made


DEFAULT_POLICY = RetryPolicy()


def build_new_job(
    *,
    job_id: UUID,
    job_type: str,
    payload: Mapping[str, Any] | None,
    queue: str,
    idempotency_key: str | None = None,
    max_attempts: int | None = None,
    initial_delay: float | None = None,
    backoff: float | None = None,
    max_delay: float | None = None,
    jitter: bool | None = None,
    visibility_timeout: float | None = None,
    unique_key: str | None = None,
    run_at: datetime | None = None,
    delay: float | timedelta | None = None,
    timeout: float = 0.0,
    priority: int | None = None,
    traceparent: str | None = None,
) -> NewJob:
    """A job request from outside (the API's body, an application's own enqueue call), each
    field checked whatever its type: a ValidationError names the first bad one. None takes
    the default (maxDelay: 300, or initialDelay when that is larger; priority: 5); `payload`
    None: `{}`."""
    defaults = DEFAULT_POLICY
    if max_delay is None and initial_delay is not None:
        require_number("initial_delay", initial_delay)
        max_delay = max(defaults.max_delay, initial_delay)
    policy = RetryPolicy.of(
        _pick(max_attempts, defaults.max_attempts),
        _pick(initial_delay, defaults.initial_delay),
        _pick(backoff, defaults.backoff),
        _pick(max_delay, defaults.max_delay),
        _pick(jitter, defaults.jitter),
    )
    return NewJob(
        id=job_id,
        queue=validate_queue_name(queue),
        job_type=validate_job_type(job_type),
        # NewJob checks the payload and the priority itself (once per job, whoever builds
        # it); here a mapping only becomes the dict it stores.
        payload=_as_dict(payload),
        policy=policy,
        visibility_timeout=validate_visibility_timeout(
            _pick(visibility_timeout, DEFAULT_VISIBILITY_TIMEOUT)
        ),
        idempotency_key=(
            None if idempotency_key is None else validate_idempotency_key(idempotency_key)
        ),
        unique_key=None if unique_key is None else validate_unique_key(unique_key),
        run_at=run_at,
        # A timedelta, as RQ's enqueue_in and arq's _defer_by take a delay, is its seconds.
        delay=delay.total_seconds() if isinstance(delay, timedelta) else delay,
        timeout=validate_timeout(timeout),
        priority=DEFAULT_PRIORITY if priority is None else priority,
        traceparent=traceparent,
    )


_SettingsKey = tuple[object, ...]
"""A kind of job in JobBuilder: each of its settings' (name, value) pairs, then the values'
types, in the settings' order."""


class JobBuilder:
    """build_new_job for the jobs of a batch, or of a process. A job asking for the settings
    an earlier one asked for (the same values of the same types) is a copy of that one with
    its own id, payload, keys and run_at, only those checked: most batches are many jobs of
    one kind, and checking the same settings again is most of the work. The keys and
    run_at, which often differ from job to job, are not settings here (and a run_at in the
    hour a clock turns back compares equal to its twin an hour apart, so it could not be
    one). Each kind is kept without its first job's payload, keys and run_at, so a builder
    kept for a process holds none of a job's own data but its first id; past `kinds` kinds
    it forgets them all.

    `keywords_of` turns settings as the caller names them into build_new_job's keywords
    (the caller's own defaults and checks, run once per kind of job); by default they are
    those keywords already."""

    def __init__(
        self,
        keywords_of: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        kinds: int = 1024,
    ) -> None:
        self._built: dict[_SettingsKey, NewJob] = {}
        self._keywords_of = keywords_of or dict
        self._kinds = kinds

    def build_from(
        self, job_id: UUID, payload: Mapping[str, Any] | None, settings: dict[str, Any]
    ) -> NewJob:
        """The job `settings` (the caller's dict, which the job's keys and run_at are taken
        out of) ask for, with its own id and payload."""
        idempotency_key = settings.pop("idempotency_key", None)
        unique_key = settings.pop("unique_key", None)
        run_at = settings.pop("run_at", None)
        # Each setting's name and value, then their types: True == 1 and 1.0 == 1, but a
        # max_attempts of True is refused.
        key: _SettingsKey = (*settings.items(), *map(type, settings.values()))
        try:
            built = self._built.get(key)
            kept = True
        except TypeError:  # an unhashable setting: checked on its own, not kept
            built, kept = None, False
        if built is not None:
            return built.like(
                job_id, payload, idempotency_key=idempotency_key, unique_key=unique_key,
                run_at=run_at,
            )  # fmt: skip
        built = build_new_job(
            job_id=job_id, payload=payload, idempotency_key=idempotency_key,
            unique_key=unique_key, run_at=run_at, **self._keywords_of(settings),
        )  # fmt: skip
        if kept:
            if len(self._built) >= self._kinds:
                self._built.clear()
            self._built[key] = built.like(built.id, None)
        return built


def _run_at_beside(run_at: datetime, delay: float | None) -> datetime:
    if delay is not None:
        raise ValidationError("run_at", "give run_at or delay, not both")
    return validate_run_at(run_at)


def _as_dict(payload: object) -> Any:
    # Anything but a mapping is left as it is, for NewJob to refuse by name.
    if payload is None:
        return {}
    if isinstance(payload, dict) or not isinstance(payload, Mapping):
        return payload
    return dict(payload)


T = TypeVar("T")


def _pick(value: T | None, default: T) -> T:
    return default if value is None else value
