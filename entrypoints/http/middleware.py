"""ASGI middleware: request ids, bearer-token access, and one access log line per request.

It wraps the whole application, router included, so unknown routes, wrong methods and
rejected tokens get a request id and an access log line like every other response.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseStartEvent, Message, Receive, Scope, Send

from taskforge.adapters.telemetry.logging import request_id_var

log = logging.getLogger("taskforge.http.access")

REQUEST_ID_HEADER = b"x-request-id"
_SANE_REQUEST_ID = re.compile(rb"[!-~](?:[ -~]{0,126}[!-~])?")
"""Printable ASCII, 1-128 characters, no surrounding spaces: safe to echo and to log."""

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Served without a token even when API_TOKEN is set: probes and scrapers carry none."""


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def request_id_for(incoming: bytes | None) -> str:
    """The caller's id when it is sane, otherwise a fresh one."""
    if incoming is not None and _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming.decode("ascii")
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Adds X-Request-ID to every response (the caller's when it is a sane token) and binds it
    to every log line written while serving; checks API_TOKEN when one is configured; logs
    method, path, status and latency once per request."""

    def __init__(self, app: ASGIApp, api_token: str | None) -> None:
        self._app = app
        self._token = api_token.encode() if api_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        request_id = request_id_for(_header(scope, REQUEST_ID_HEADER))
        context = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (key, value)
                    for key, value in message.get("headers", ())
                    if key.lower() != REQUEST_ID_HEADER
                ]
                headers.append((REQUEST_ID_HEADER, request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if self._refuses(scope):
                await _send_unauthorized(send_with_id)
                return
            await self._app(scope, receive, send_with_id)
        finally:
            method = scope.get("method", "")
            log.info(
                "%s %s %d",
                method,
                scope["path"],
                status,
                extra={
                    "method": method,
                    "path": scope["path"],
                    "status": status,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )
            request_id_var.reset(context)

    def _refuses(self, scope: Scope) -> bool:
        if self._token is None or scope["path"] in OPEN_PATHS:
            return False
        return not self._authorized(self._token, _header(scope, b"authorization"))

    @staticmethod
    def _authorized(token: bytes, header: bytes | None) -> bool:
        scheme, _, credentials = (header or b"").partition(b" ")
        # Compare even when the scheme is wrong, so the time taken says nothing about it.
        matches = hmac.compare_digest(credentials.strip(), token)
        return scheme.lower() == b"bearer" and matches


async def _send_unauthorized(send: Send) -> None:
    body: dict[str, Any] = {
        "code": "unauthorized",
        "message": "missing or invalid bearer token",
        "details": None,
    }
    payload = json.dumps(body).encode()
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 401,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"www-authenticate", b"Bearer"),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": payload, "more_body": False})
