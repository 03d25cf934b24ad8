"""uvicorn's HTTP protocol with the bounds it lacks: a connection cap checked as a
connection opens, a deadline for a request's head, and an idle limit while its body streams.

uvicorn closes idle keep-alive connections, but a client that sends half a request head and
stalls holds its connection forever, and `limit_concurrency` is checked only once a head has
arrived: 5,000 such clients held 5,000 file descriptors. Here a request's head must arrive
within HTTP_HEADER_TIMEOUT seconds of its first byte (or of the connection opening), a body
may pause for at most HTTP_BODY_TIMEOUT seconds between reads, and a connection beyond
HTTP_MAX_CONNECTIONS is answered 503 and closed before anything is read from it.

The parser holds a request's head in memory until it ends and bounds only its URL, so a
head's headers are bounded here too: past MAX_HEAD_BYTES or MAX_HEADER_LINES it is
answered 400 and closed as it arrives (short header lines cost the server many times their
bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
import uvicorn

from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.http.middleware import REQUEST_ID_HEADER, request_id_for

try:  # the `fast` extra; uvicorn's pure-Python parser otherwise
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _UvicornProtocol
except ImportError:  # pragma: no cover - depends on the installed extras
    from uvicorn.protocols.http.h11_impl import H11Protocol as _UvicornProtocol  # type: ignore[assignment]


class SignalFreeServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the process's stop signals decide when the
    server stops (`taskforge.entrypoints.runtime.StopSignals`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpLimits:
    header_timeout: float = 10.0
    """Seconds from a request's first byte (or the connection opening) to its complete head."""
    body_timeout: float = 30.0
    """Seconds a request body may pause between two reads."""
    max_connections: int = 1000
    """Open connections per API process; one more is answered 503 and closed."""


def _canned(status: str, code: str, message: str) -> bytes:
    """An error answered before any request reached the application (so before its
    middleware), in the API's shape and with a request id of its own, then closed."""
    body = msgspec.json.encode({"code": code, "message": message, "details": None})
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{REQUEST_ID_HEADER.lower()}: {request_id_for(None)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_TOO_MANY_CONNECTIONS = (
    "503 Service Unavailable",
    "not_ready",
    "too many open connections; retry shortly",
)
_HEAD_TIMED_OUT = (
    "408 Request Timeout",
    "validation_error",
    "the request head did not arrive in time",
)
"""Each answer's status, code and message; made per answer, each with its own request id."""


MAX_HEAD_BYTES = 64 * 1024
"""The most a request's head (request line and headers) may take."""
MAX_HEADER_LINES = 256
"""The most header lines a request's head may have."""
HEAD_TOO_LARGE = f"its head is over {MAX_HEAD_BYTES} bytes or {MAX_HEADER_LINES} header lines"


class BoundedHttpProtocol(_UvicornProtocol):
    """Pass as uvicorn's `http=`. `limits` is set once per process (`bounded_protocol`):
    uvicorn builds the protocol itself, and with API_WORKERS > 1 in each child process."""

    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._waiting_for: str | None = None
        """"head" or "body" while a read deadline runs, else None."""
        self._head: _HeadSize | None = None
        """The size so far of the head being received, else None."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            transport.write(_canned(*_TOO_MANY_CONNECTIONS))
            transport.close()
            return
        self._watch_reads()

    def send_400_response(self, msg: str) -> None:
        """What the HTTP parser refuses (a malformed head, a URL past its limits) gets the
        API's error shape, as every other error does, not uvicorn's plain text."""
        if self._head is not None and self._head.parsed_too_large():
            msg = HEAD_TOO_LARGE  # the parser stopped at on_header's refusal
        self.transport.write(
            _canned(
                "400 Bad Request",
                "validation_error",
                f"the HTTP request cannot be read ({msg.rstrip('.')})",
            )
        )
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            # Bytes of a head still under way (those of the piece it began in are not
            # counted: they may end an earlier request), which the parser keeps.
            head.received += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if (head := self._head) is not None and head.too_large():
            self._head = None
            self.send_400_response(HEAD_TOO_LARGE)
            return
        self._watch_reads(more_body=True)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head = _HeadSize()

    def on_url(self, url: bytes) -> None:
        if self._head is not None:
            self._head.parsed += len(url)
            self._head.refuse_when_too_large()
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head is not None:
            self._head.parsed += len(name) + len(value)
            self._head.lines += 1
            self._head.refuse_when_too_large()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head = None
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _watch_reads(self, more_body: bool = False) -> None:
        """Arm, keep or stop the read deadline for what the connection waits for now."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            waiting_for: str | None = "head"
        elif cycle.more_body:
            waiting_for = "body"
        else:
            waiting_for = None  # the application has the whole request
        if waiting_for == self._waiting_for and not (waiting_for == "body" and more_body):
            return  # a head's deadline runs from its first byte; bytes do not extend it
        self._stop_timer()
        self._waiting_for = waiting_for
        if waiting_for is not None:
            timeout = (
                self.limits.header_timeout if waiting_for == "head" else self.limits.body_timeout
            )
            self._read_timer = self.loop.call_later(timeout, self._read_timed_out)

    def _stop_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self._waiting_for = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self._waiting_for == "head":
            # No request is under way, so nothing else writes to this connection.
            self.transport.write(_canned(*_HEAD_TIMED_OUT))
        self._waiting_for = None
        self.transport.close()


@dataclass(slots=True)
class _HeadSize:
    """What a request's head has taken so far, counted twice over: by the parts the parser
    handed over, and by the bytes received while the parser still holds a part. Each count
    is at most the head's true size, so a head within the bounds is never refused."""

    parsed: int = 0
    received: int = 0
    lines: int = 0

    def too_large(self) -> bool:
        return max(self.parsed, self.received) > MAX_HEAD_BYTES or self.parsed_too_large()

    def parsed_too_large(self) -> bool:
        """By the parts the parser handed over alone: the bytes of a read may go on past the
        head, into its body."""
        return self.parsed > MAX_HEAD_BYTES or self.lines > MAX_HEADER_LINES

    def refuse_when_too_large(self) -> None:
        """Stop the parser at the part that passes the bounds (it answers 400 and closes):
        a head that arrives whole in one read ends before data_received could look at it."""
        if self.parsed_too_large():
            raise HeadTooLarge(HEAD_TOO_LARGE)


class HeadTooLarge(Exception):
    """Raised in a parser callback; the parser refuses the request (send_400_response)."""


def bounded_protocol(settings: Settings) -> type[BoundedHttpProtocol]:
    """Set this process's limits from `settings`; returns the class to give uvicorn."""
    BoundedHttpProtocol.limits = HttpLimits(
        header_timeout=settings.http_header_timeout,
        body_timeout=settings.http_body_timeout,
        max_connections=settings.http_max_connections,
    )
    return BoundedHttpProtocol
