"""What the TaskForge clients raise: one type per way a call can fail.

Every error carries the API's `code`, `message` and `details` (`{"code", "message",
"details"}` in every error answer), the HTTP `status` (None when no answer came) and the
answer's `X-Request-ID`, to find the call in the API's logs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskforge.client.values import Job


class ClientError(Exception):
    """Base of every client failure; caught alone, it covers them all."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: Any = None,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details
        self.status = status
        self.request_id = request_id


class JobNotFound(ClientError):
    """404: no job (or no dead letter) with that id."""


class ScheduleNotFound(ClientError):
    """404: no schedule with that name."""


class InvalidTransition(ClientError):
    """409: the job's state does not allow the move (cancelling a finished job...)."""


class ValidationError(ClientError):
    """400 (or 413): the API refused the input; `message` names the field."""


class Unauthorized(ClientError):
    """401: the token is missing or wrong."""


class Unavailable(ClientError):
    """The API cannot take the call now: 429, 502, 503, 504, or no answer at all. Enqueues
    are retried on these before this is raised."""

    retry_after: float | None = None
    """The API's Retry-After, in seconds, when it sent one."""


class ConnectionFailed(Unavailable):
    """No answer at all: refused, unresolvable, reset or timed out (`status` is None)."""


class InvalidResponse(ClientError):
    """An answer that is not the API's (another server or a proxy on its address): a 2xx
    whose body is not the API's JSON, or a 400, 401, 404, 409 or 413 without the API's
    `{"code", "message", "details"}` (a web server's 404 page is no missing job)."""


class ClientClosed(ClientError, RuntimeError):
    """A call on a client already closed (`close()`, `aclose()`, the end of its `with`
    block): nothing was sent. A RuntimeError too, as httpx's for a closed client."""


class WaitTimeout(ClientError, TimeoutError):
    """`wait` gave up: the job was not terminal when its timeout ran out."""


class JobFailed(ClientError):
    """`result` found the job finished without a result: dead-lettered (DLQ) or CANCELLED.
    `job` is the job as read, with its `state`, `reason`, `last_error` and `errors`."""

    def __init__(self, code: str, message: str, *, job: Job, details: Any = None) -> None:
        super().__init__(code, message, details=details)
        self.job = job
