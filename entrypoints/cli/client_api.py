"""The HTTP side of `taskforge-cli`: one method per API route, and the CLI's failure types.

Every failure the client can meet becomes a `CliError` carrying the exit code documented in
`taskforge-cli --help`, so the command layer never sees an httpx exception.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from uuid import UUID

import httpx

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_API_ERROR = 5
EXIT_SERVER_ERROR = 6
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

USER_AGENT = "taskforge-cli/0.1.0"


class CliError(Exception):
    """A failure shown as `error: <code>: <message>` on stderr, ending with `exit_code`."""

    exit_code = EXIT_UNEXPECTED

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class UsageError(CliError):
    """Bad flags or flag values, found before any request is sent."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__("usage", message)


class ApiError(CliError):
    """The API answered with a non-2xx status and (usually) its `{code, message}` body."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(code, message)
        self.status = status
        self.details = details
        self.exit_code = exit_code_for_status(status)


class ConnectionFailed(CliError):
    """No answer at all: refused, unresolvable, reset or timed out."""

    exit_code = EXIT_SERVER_ERROR


def exit_code_for_status(status: int) -> int:
    """404 -> 3, 409 -> 4, other 4xx -> 5, 5xx (and anything else unexpected) -> 6."""
    if status == 404:
        return EXIT_NOT_FOUND
    if status == 409:
        return EXIT_CONFLICT
    if 400 <= status < 500:
        return EXIT_API_ERROR
    return EXIT_SERVER_ERROR


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A 2xx answer: `text` is the body exactly as received (what `--json` prints)."""

    status: int
    text: str
    data: Any


class TaskForgeClient:
    """A synchronous client for the TaskForge REST API; use it as a context manager."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> TaskForgeClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._http.close()

    def enqueue(self, body: Mapping[str, Any]) -> ApiResponse:
        """201 for a new job, 200 with the existing job when the idempotency key was used."""
        return self._request("POST", "/jobs", json_body=body)

    def get_job(self, job_id: UUID) -> ApiResponse:
        return self._request("GET", f"/jobs/{job_id}")

    def list_jobs(
        self,
        *,
        queue: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> ApiResponse:
        params = _params(status=status, limit=limit, offset=offset)
        if queue is None:
            return self._request("GET", "/jobs", params=params)
        # Queue names are letters, digits and `_ - . :`, all of which are safe in a path.
        return self._request("GET", f"/queues/{queue}/jobs", params=params)

    def cancel(self, job_id: UUID, reason: str | None) -> ApiResponse:
        return self._request("POST", f"/jobs/{job_id}/cancel", json_body=_reason(reason))

    def retry(self, job_id: UUID) -> ApiResponse:
        return self._request("POST", f"/jobs/{job_id}/retry")

    def move_to_dlq(self, job_id: UUID, reason: str | None) -> ApiResponse:
        return self._request("POST", f"/jobs/{job_id}/dlq", json_body=_reason(reason))

    def list_dead_letters(
        self, *, limit: int | None = None, offset: int | None = None
    ) -> ApiResponse:
        return self._request("GET", "/dlq", params=_params(limit=limit, offset=offset))

    def get_dead_letter(self, job_id: UUID) -> ApiResponse:
        return self._request("GET", f"/dlq/{job_id}")

    def replay(self, job_id: UUID) -> ApiResponse:
        return self._request("POST", f"/dlq/{job_id}/replay")

    def stats(self) -> ApiResponse:
        return self._request("GET", "/stats")

    def healthz(self) -> ApiResponse:
        return self._request("GET", "/healthz")

    def readyz(self) -> ApiResponse:
        """Returns the 503 answer too: a not-ready service still names its failing checks."""
        return self._request("GET", "/readyz", accept=frozenset({503}))

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        accept: frozenset[int] = frozenset(),
    ) -> ApiResponse:
        try:
            response = self._http.request(method, path, params=params, json=json_body)
        except httpx.TimeoutException:
            raise ConnectionFailed(
                "timeout", f"no answer from {self.base_url} within {self.timeout:g}s"
            ) from None
        except httpx.ConnectError as exc:
            raise ConnectionFailed(
                "connection_failed", f"cannot connect to {self.base_url}: {_reason_of(exc)}"
            ) from None
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                "connection_failed", f"request to {self.base_url} failed: {_reason_of(exc)}"
            ) from None
        if response.is_success or response.status_code in accept:
            return ApiResponse(response.status_code, response.text, _json_of(response))
        raise _error_of(response)


def _params(**values: object) -> dict[str, str]:
    return {name: str(value) for name, value in values.items() if value is not None}


def _reason(reason: str | None) -> dict[str, str] | None:
    return {"reason": reason} if reason is not None else None


def _reason_of(exc: httpx.TransportError) -> str:
    """The OS-level explanation ("connection refused") beneath httpx's wrapping, if any."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


def _json_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(
            502,
            "invalid_response",
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code} with a body that is not JSON",
        ) from None


def _error_of(response: httpx.Response) -> ApiError:
    """The API's `{code, message, details}`; anything else (a proxy's HTML page) by status."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        message = body.get("message")
        return ApiError(
            response.status_code,
            body["code"],
            message if isinstance(message, str) else response.reason_phrase,
            body.get("details"),
        )
    return ApiError(
        response.status_code,
        f"http_{response.status_code}",
        f"{response.request.method} {response.request.url.path}: "
        f"{response.reason_phrase or 'unexpected answer'}",
    )
