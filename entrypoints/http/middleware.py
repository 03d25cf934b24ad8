"""ASGI middleware: request ids, bearer-token access, one access log line per request, the
HTTP request metrics and, when tracing is on, a span per request; HEAD and the Allow header;
the API's no-store and nosniff headers.

It wraps the whole application, router included, so unknown routes, wrong methods and
rejected tokens get a request id, an access log line and a count like every other response.
Longer than most modules: one pass over each request does all of the above (ASGI middleware
stacked per concern would wrap every send and receive once per layer), and its helpers sit
beside it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast
from urllib.parse import urlsplit

from dishka import AsyncContainer
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseStartEvent,
    Message,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)

from taskforge.adapters.telemetry.logging import request_id_var
from taskforge.adapters.telemetry.metrics import HttpMetrics
from taskforge.adapters.telemetry.tracing import OpenTelemetrySpan, OpenTelemetryTracing

log = logging.getLogger("taskforge.http.access")

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode("ascii")
"""The header as ASGI carries it: lower-case bytes."""
_SANE_REQUEST_ID = re.compile(rb"[!-~](?:[ -~]{0,126}[!-~])?")
"""Printable ASCII, 1-128 characters, no surrounding spaces: safe to echo and to log."""

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Served without a token even when API_TOKEN is set: probes and scrapers carry none. A
trailing slash (`/healthz/`) reaches the same route and is just as open."""

DASHBOARD_PATH = "/ui"
"""The dashboard (when UI_ENABLED): served without a bearer token, since browsers send none;
with API_TOKEN set it asks for the token once and keeps a session (see http/ui/security)."""

AUTHORIZED_STATE = "taskforge_authorized"
"""Request state: whether the caller sent the token (or none is needed). An open path
shows internal details (addresses, database and role names) only to such a caller."""

NO_STORE = (b"cache-control", b"no-store")
"""Every API answer but a file: jobs' payloads and results (often personal data) must stay
out of shared proxies and the browser's cache. Probes and the metrics scrape too: a cached
health or a stale count is worse than none."""
NOSNIFF = (b"x-content-type-options", b"nosniff")
"""Every answer: a browser takes its Content-Type as sent, never guesses HTML."""
API_HEADERS = (NOSNIFF, NO_STORE)
DASHBOARD_HEADERS = (
    # Nothing but TaskForge itself: no other host is ever contacted, and no inline script.
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    NOSNIFF,
    (b"referrer-policy", b"same-origin"),
    NO_STORE,
)
"""Every answer under the dashboard's path but its files: pages, redirects and errors alike
(a redirect's target carries the job ids an operator acted on)."""

UNTRACED_PATHS = OPEN_PATHS
"""Probes and scrapes come every few seconds and would bury the traces worth reading."""

UNMATCHED_ROUTE = "(unmatched)"
"""The route label of requests no route handled: unknown paths, wrong methods, refused
tokens. Raw paths never become labels (each job id would be a series of its own)."""

CLIENT_CLOSED_REQUEST = 499
"""The status logged and counted when the client went away before its request body was
read (nginx's code): not a server error, and nothing is sent to anyone."""

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_PATH_PARAMETER = re.compile(r"\{(\w+):[^}]*\}")


@dataclass(slots=True)
class _Disconnect:
    """Whether the client went away: one per request, shared by the middleware and the task
    serving the request (which sees a copy of the context, not the middleware's)."""

    gone: bool = False


_client_gone: ContextVar[_Disconnect | None] = ContextVar("taskforge_client_gone", default=None)

_ABANDONED: set[asyncio.Task[None]] = set()
"""Requests answered 503 at their deadline, cancelled and still cleaning up; kept
referenced until they end."""


def client_disconnected() -> bool:
    """Whether the client of the request being served disconnected before its body was
    read: the error handler answers 499 instead of logging a server error."""
    disconnect = _client_gone.get()
    return disconnect is not None and disconnect.gone


def _abandon(task: asyncio.Task[None]) -> None:
    """Cancel a request that outlived its deadline without waiting for it: a driver may
    spend long after a cancellation cleaning up (asyncpg waits for the server to confirm a
    cancelled query, which a black-holed server never does)."""
    task.cancel()
    _ABANDONED.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Task[None]) -> None:
    _ABANDONED.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: nobody waits for this answer any more


DOCS_PREFIX = "/schema"
"""The API docs (Swagger UI, its assets, the OpenAPI document) are open too: a browser
cannot send a bearer token to load them, and they describe the API, not its data. Trying a
route from the page still needs the token (Swagger UI's Authorize button)."""


DOCS_ALIAS = "/docs"
"""Where many Python web APIs serve their docs: a redirect to DOCS_PREFIX, open as they are."""


def is_open(path: str) -> bool:
    """Served without a token: the probes, the metrics scrape and the API docs, trailing
    slash or not."""
    trimmed = path.rstrip("/") or "/"
    return (
        trimmed in OPEN_PATHS
        or trimmed in (DOCS_PREFIX, DOCS_ALIAS)
        or trimmed.startswith(DOCS_PREFIX + "/")
    )


def allowed_methods(listed: str, route_methods: frozenset[str] | None) -> str:
    """An Allow header: the route's methods when known (else those the framework listed),
    with HEAD wherever GET is, sorted."""
    methods = set(route_methods or (m.strip() for m in listed.split(",") if m.strip()))
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


@lru_cache(maxsize=256)
def route_label(path_template: str) -> str:
    """`/jobs/{job_id:str}` -> `/jobs/{job_id}`."""
    return _PATH_PARAMETER.sub(r"{\1}", path_template)


def method_label(method: str) -> str:
    return method if method in _METHODS else "OTHER"


@dataclass(frozen=True, slots=True)
class _Services:
    """What the middleware takes from the container, on the first request (the app is
    built synchronously)."""

    metrics: HttpMetrics
    tracing: OpenTelemetryTracing | None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def _is_dashboard(path: str) -> bool:
    return path == DASHBOARD_PATH or path.startswith(DASHBOARD_PATH + "/")


def answer_headers(
    path: str, status: int, headers: list[tuple[bytes, bytes]], file_paths: tuple[str, ...]
) -> list[tuple[bytes, bytes]]:
    """`headers` and each of API_HEADERS (under the dashboard's path: DASHBOARD_HEADERS) the
    answer lacks. A file found under `file_paths` (the docs' and the dashboard's scripts and
    styles, revalidated by ETag) gets NOSNIFF only."""
    is_file = status < 400 and any(path.startswith(prefix + "/") for prefix in file_paths)
    wanted = (NOSNIFF,) if is_file else DASHBOARD_HEADERS if _is_dashboard(path) else API_HEADERS
    present = {key.lower() for key, _ in headers}
    return [*headers, *(header for header in wanted if header[0] not in present)]


def caller_is_authorized(scope: Scope) -> bool:
    """Whether this request's caller may see internal details (see AUTHORIZED_STATE)."""
    return bool(scope.get("state", {}).get(AUTHORIZED_STATE, False))


def request_id_for(incoming: bytes | None) -> str:
    """The caller's id when it is sane, otherwise a fresh one."""
    if incoming is not None and _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming.decode("ascii")
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Adds X-Request-ID to every response (the caller's when it is a sane token) and binds it
    to every log line written while serving; checks API_TOKEN when one is configured; logs
    method, path, status and latency once per request and counts it (by route template);
    with tracing on, serves it in a span that continues the caller's `traceparent`.

    HEAD is served wherever GET is: as a GET whose body is not sent. Allow headers (405 and
    OPTIONS) list every method of the route, HEAD included. A client that disconnects before
    its body is read is logged and counted as 499. Answers get `answer_headers`, those the
    middleware sends itself (401, 403, the deadline's 503) too."""

    def __init__(
        self,
        app: ASGIApp,
        api_token: str | None,
        container: AsyncContainer,
        route_methods: Mapping[str, frozenset[str]],
        deadline: float = 0.0,
        file_paths: tuple[str, ...] = (),
    ) -> None:
        """`route_methods`: the methods of each route, by path template. `deadline`: seconds
        a request may take before it is answered 503 (0: none); the request is then cancelled
        and left to clean up in the background, however long its driver takes. `file_paths`:
        where static files are served, which keep their caching (see answer_headers)."""
        self._app = app
        self._file_paths = file_paths
        self._deadline = deadline if deadline > 0 else None
        self._token = api_token.encode() if api_token else None
        self._container = container
        self._route_methods = route_methods
        self._services: _Services | None = None

    async def _resolve_services(self) -> _Services:
        if self._services is None:
            self._services = _Services(
                metrics=await self._container.get(HttpMetrics),
                tracing=await self._container.get(OpenTelemetryTracing | None),
            )
        return self._services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        services = self._services or await self._resolve_services()
        request_id = request_id_for(_header(scope, _REQUEST_ID_KEY))
        context = request_id_var.set(request_id)
        try:
            if services.tracing is None or scope["path"] in UNTRACED_PATHS:
                await self._serve(scope, receive, send, request_id, services, None)
            else:
                traceparent = _header(scope, b"traceparent")
                method = str(scope.get("method", ""))
                with services.tracing.request_span(
                    method, traceparent.decode("latin-1") if traceparent else None
                ) as span:
                    await self._serve(scope, receive, send, request_id, services, span)
        finally:
            request_id_var.reset(context)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        services: _Services,
        span: OpenTelemetrySpan | None,
    ) -> None:
        started = time.perf_counter()
        status = 500
        method = str(scope.get("method", ""))
        head = method == "HEAD"
        # A copy: the server's own scope keeps HEAD, so it sends no body either.
        app_scope = cast(Scope, {**scope, "method": "GET"}) if head else scope
        disconnect = _Disconnect()
        client_gone = _client_gone.set(disconnect)

        async def receive_watching() -> ReceiveMessage:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnect.gone = True
            return message

        answered = False
        abandoned = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                answered = True
                status = message["status"]
                headers = []
                for key, value in message.get("headers", ()):
                    if key.lower() == _REQUEST_ID_KEY:
                        continue
                    if key.lower() == b"allow":
                        template = app_scope.get("path_template")
                        methods = self._route_methods.get(template) if template else None
                        value = allowed_methods(value.decode("latin-1"), methods).encode()
                    headers.append((key, value))
                headers.append((_REQUEST_ID_KEY, request_id.encode("ascii")))
                headers = answer_headers(scope["path"], status, headers, self._file_paths)
                message = {**message, "headers": headers}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        async def send_from_app(message: Message) -> None:
            if not abandoned:  # once answered at the deadline, the late answer goes nowhere
                await send_with_id(message)

        try:
            if _cross_site(scope):
                await _send_cross_site(send_with_id)
                return
            if self._refuses(scope):
                await _send_unauthorized(send_with_id)
                return
            if self._deadline is None:
                await self._app(app_scope, receive_watching, send_from_app)
                return
            serving = asyncio.ensure_future(self._app(app_scope, receive_watching, send_from_app))
            try:
                done, _ = await asyncio.wait([serving], timeout=self._deadline)
            except asyncio.CancelledError:
                serving.cancel()
                raise
            if done:
                serving.result()
                return
            abandoned = True
            _abandon(serving)
            if answered:
                raise TimeoutError(f"the response outlived the {self._deadline:g}s deadline")
            log.warning("%s %s exceeded the %.1fs deadline", method, scope["path"], self._deadline)
            if _is_dashboard(scope["path"]):
                await _send_page(send_with_id, 503, NOT_READY_PAGE, [(b"retry-after", b"1")])
            else:
                await _send_error(send_with_id, 503, NOT_READY_BODY, [(b"retry-after", b"1")])
        finally:
            if disconnect.gone and status >= 500:
                status = CLIENT_CLOSED_REQUEST
            _client_gone.reset(client_gone)
            elapsed = time.perf_counter() - started
            template = app_scope.get("path_template")
            route = route_label(template) if template else UNMATCHED_ROUTE
            services.metrics.observe(method_label(method), route, status, elapsed)
            if span is not None:
                OpenTelemetryTracing.name_request(span, method_label(method), route, status)
            log.info(
                "%s %s %d",
                method,
                scope["path"],
                status,
                extra={
                    "method": method,
                    "path": scope["path"],
                    "status": status,
                    "latency_ms": round(elapsed * 1000, 3),
                },
            )

    def _refuses(self, scope: Scope) -> bool:
        authorized = self._token is None or self._authorized(
            self._token, _header(scope, b"authorization")
        )
        scope.setdefault("state", {})[AUTHORIZED_STATE] = authorized
        # The dashboard signs its users in with a session cookie and checks it itself.
        return not authorized and not is_open(scope["path"]) and not _is_dashboard(scope["path"])

    @staticmethod
    def _authorized(token: bytes, header: bytes | None) -> bool:
        scheme, _, credentials = (header or b"").partition(b" ")
        # Compare even when the scheme is wrong, so the time taken says nothing about it.
        matches = hmac.compare_digest(credentials.strip(), token)
        return scheme.lower() == b"bearer" and matches


NOT_READY_BODY: dict[str, Any] = {
    "code": "not_ready",
    "message": "the request did not finish within its deadline (REQUEST_DEADLINE); "
    "a dependency is slow or unreachable, retry shortly",
    "details": None,
}


NOT_READY_PAGE = (
    "<!doctype html><html lang=en><head><meta charset=utf-8>"
    "<title>503 Not ready - TaskForge</title></head><body><h1>Not ready</h1>"
    "<p>The page did not finish within its deadline (REQUEST_DEADLINE): a dependency is slow "
    "or unreachable. Reload in a moment.</p><p><a href=/ui>Overview</a></p></body></html>"
)
"""The dashboard answers HTML, its errors too: the deadline's answer under /ui. Built here,
outside the application, because the application is what ran out of time."""


async def _send_page(
    send: Send, status: int, page: str, headers: list[tuple[bytes, bytes]]
) -> None:
    await _send_answer(send, status, b"text/html; charset=utf-8", page.encode(), headers)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_ORIGIN_FETCHES = frozenset({b"same-origin", b"none"})
"""The Sec-Fetch-Site values of a browser request made by TaskForge's own pages (the
dashboard, the API docs) or typed by the user; `cross-site` and `same-site` (another port
or subdomain) are another page's."""


def _cross_site(scope: Scope) -> bool:
    """Whether a browser made this request, one that changes something, for a page of
    another origin. A form or a `fetch` without custom headers goes cross-site without asking
    first, and the API takes a JSON body whatever its Content-Type: without API_TOKEN, any
    web page open in an operator's browser could enqueue, cancel or replay on an API bound to
    localhost or a private network. Clients that are no browser send no Sec-Fetch-Site and,
    as a rule, no Origin. A browser too old for Sec-Fetch-Site still sends Origin on such a
    request (see _same_host)."""
    if scope.get("method") in SAFE_METHODS:
        return False
    site = _header(scope, b"sec-fetch-site")
    if site is not None:
        return site.lower() not in SAME_ORIGIN_FETCHES
    origin, host = _header(scope, b"origin"), _header(scope, b"host")
    if origin is None or _same_host(origin, host):
        return False
    # Said once per refusal: behind a proxy that rewrites Host (nginx's default), the
    # dashboard's own forms are refused in browsers without Sec-Fetch-Site, and this line
    # is how an operator finds out why.
    log.warning(
        "refused %s %s as cross-site: Origin %r is not the Host %r the request came with "
        "(a proxy must pass Host on unchanged)",
        scope.get("method"),
        scope.get("path"),
        origin.decode("latin-1"),
        host.decode("latin-1") if host is not None else None,
    )
    return True


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _same_host(origin: bytes, host: bytes | None) -> bool:
    """Whether `origin` (`scheme://host[:port]`, as a browser writes it) names the host and
    port the request was sent to, by its Host header (X-Forwarded-Host is read nowhere, so a
    proxy must pass Host on as the browser sent it). The scheme is not compared: behind a
    proxy that ends TLS, an `https` page's request arrives over HTTP. `null` (a sandboxed
    page, a file, some redirects) is no host."""
    if host is None:
        return False
    try:
        page = urlsplit(origin.decode("ascii"))
        target = urlsplit("//" + host.decode("ascii"))
        default_port = _DEFAULT_PORTS.get(page.scheme)
        same = (
            default_port is not None
            and page.hostname is not None
            and not (page.path or page.query or page.fragment or page.username)
            and page.hostname == target.hostname
            and (page.port or default_port) == (target.port or default_port)
        )
    except (UnicodeDecodeError, ValueError):  # not ASCII, a port out of range
        return False
    return same


async def _send_cross_site(send: Send) -> None:
    body: dict[str, Any] = {
        "code": "forbidden",
        "message": "a browser page of another origin may not change anything here "
        "(Sec-Fetch-Site, or Origin when the browser sends none); call the API from a "
        "server, a script or TaskForge's own pages",
        "details": None,
    }
    await _send_error(send, 403, body, [])


async def _send_unauthorized(send: Send) -> None:
    body: dict[str, Any] = {
        "code": "unauthorized",
        "message": "missing or invalid bearer token",
        "details": None,
    }
    await _send_error(send, 401, body, [(b"www-authenticate", b"Bearer")])


async def _send_error(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    await _send_answer(send, status, b"application/json", json.dumps(body).encode(), headers)


async def _send_answer(
    send: Send,
    status: int,
    content_type: bytes,
    payload: bytes,
    headers: list[tuple[bytes, bytes]],
) -> None:
    """A whole answer sent by the middleware itself: the application never saw the request,
    or ran out of time."""
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", content_type),
            (b"content-length", str(len(payload)).encode()),
            *headers,
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": payload, "more_body": False})
