"""`taskforge-cli`'s exit codes, and how each failure maps to one.

Every failure the CLI can meet is a `CliError` (found before any request) or one of the
client's `ClientError`s, so the command layer never sees an httpx exception.
"""

from __future__ import annotations

from taskforge.client.errors import ClientError, InvalidResponse, ValidationError

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_API_ERROR = 5
EXIT_SERVER_ERROR = 6
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


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


def exit_code_of(error: ClientError) -> int:
    """404 -> 3, 409 -> 4, other 4xx -> 5; 5xx, no answer at all, or an answer that is
    not the API's (InvalidResponse: not its JSON, or an error status without its error
    body) -> 6. An input the client refuses before sending it, as the API would (a
    ValidationError without a status: a NUL in a payload), is a usage error -> 2."""
    status = error.status
    if status is None and isinstance(error, ValidationError):
        return EXIT_USAGE
    if status is None or isinstance(error, InvalidResponse):
        return EXIT_SERVER_ERROR
    if status == 404:
        return EXIT_NOT_FOUND
    if status == 409:
        return EXIT_CONFLICT
    if 400 <= status < 500:
        return EXIT_API_ERROR
    return EXIT_SERVER_ERROR
