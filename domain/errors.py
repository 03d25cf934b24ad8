"""Errors the domain raises. Entrypoints map each type to one HTTP status and error code."""

from __future__ import annotations

from typing import Any
from uuid import UUID


class DomainError(Exception):
    """Base of every error TaskForge raises on purpose."""


class ValidationError(DomainError):
    """A value from outside broke a rule; `field` names the offending input as the domain
    spells it (snake_case: `max_attempts`); an entrypoint renames it for its users."""

    def __init__(self, field: str, message: str, *, details: Any = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.details = details


class JobNotFound(DomainError):
    def __init__(self, job_id: UUID) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class JobIdTaken(DomainError):
    """A new job carries the id of a job already stored; it is refused, with its batch."""

    def __init__(self, job_id: UUID | None) -> None:
        """`job_id` None: the store did not say which of the batch's ids it was."""
        super().__init__(f"a job with id {job_id or 'of this batch'} is already stored")
        self.job_id = job_id


class DeadLetterNotFound(DomainError):
    def __init__(self, job_id: UUID) -> None:
        super().__init__(f"no dead letter for job {job_id}")
        self.job_id = job_id


class InvalidTransition(DomainError):
    """The state machine refuses to move a job from `current` to `target`."""

    def __init__(self, job_id: UUID | None, current: str, target: str) -> None:
        subject = f"job {job_id}" if job_id else "job"
        super().__init__(f"{subject} is {current}; it cannot move to {target}")
        self.job_id = job_id
        self.current = current
        self.target = target


class UniqueKeyTaken(InvalidTransition):
    """A retry or replay would make a job hold its `unique_key` again while another job of
    its queue (`holder_id`) holds it: refused, the job stays as it is."""

    def __init__(
        self, job_id: UUID, current: str, target: str, unique_key: str, holder_id: UUID
    ) -> None:
        super().__init__(job_id, current, target)
        self.args = (
            f"job {job_id} is {current}; it cannot move to {target} while job {holder_id} "
            f"holds its uniqueKey {unique_key!r}",
        )
        self.unique_key = unique_key
        self.holder_id = holder_id


class Unavailable(DomainError):
    """A backing service (store, queue) cannot answer right now; retrying later may work.
    Adapters translate their drivers' connection errors into this."""

    def __init__(self, service: str, cause: str) -> None:
        super().__init__(f"{service} unavailable: {cause}")
        self.service = service
        self.cause = cause


class ScheduleNotFound(DomainError):
    def __init__(self, name: str) -> None:
        super().__init__(f"schedule {name!r} not found")
        self.name = name
