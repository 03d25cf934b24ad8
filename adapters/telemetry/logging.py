"""Logs with the request and trace ids of the request being served: one JSON object per line
for machines, or readable lines (rich) for a person at a terminal."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.logging import RichHandler

request_id_var: ContextVar[str | None] = ContextVar("taskforge_request_id", default=None)
trace_id_var: ContextVar[str | None] = ContextVar("taskforge_trace_id", default=None)

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}

_LEVEL_NAMES = {logging.WARNING: "warn"}
"""Levels are written as LOG_LEVEL names them (warn, not warning)."""

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's terminal-coloured copy of the message
}


def context_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The request_id and trace_id of the context that logged `record` (when set), then its
    `extra` fields (an access line adds method, path, status and latency_ms)."""
    fields: dict[str, Any] = {}
    request_id = request_id_var.get()
    if request_id is not None:
        fields["request_id"] = request_id
    trace_id = trace_id_var.get()
    if trace_id is not None:
        fields["trace_id"] = trace_id
    for key, value in vars(record).items():
        if key not in _RESERVED and not key.startswith("_"):
            fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO-8601 UTC), level, logger, message, then the
    context fields (request_id, trace_id, extras) and, at error level, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": _LEVEL_NAMES.get(record.levelno, record.levelname.lower()),
            "logger": record.name,
            "message": record.getMessage(),
            **context_fields(record),
        }
        if record.exc_info and record.levelno >= logging.ERROR:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_SAID_BY_ACCESS_LINE = {"method", "path", "status"}
"""Extras an access line's message already says ("GET /jobs 200")."""


class TextFormatter(logging.Formatter):
    """The message, then the context fields as `key=value` (request_id, trace_id, latency_ms
    ...), then the exception if any. Time, level and logger are the handler's columns."""

    def format(self, record: logging.LogRecord) -> str:
        fields = context_fields(record)
        if record.name == "taskforge.http.access":
            fields = {k: v for k, v in fields.items() if k not in _SAID_BY_ACCESS_LINE}
        text = record.getMessage() + "".join(f" {key}={value}" for key, value in fields.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _handler(log_format: str | None, stream: TextIO) -> logging.Handler:
    """`text`: rich lines; `json`: JSON lines; None: text when `stream` is a terminal."""
    if log_format is None:
        log_format = "text" if stream.isatty() else "json"
    if log_format == "text":
        console = Console(file=stream, soft_wrap=True)
        rich = RichHandler(console=console, show_path=False, markup=False, log_time_format="%X")
        rich.setFormatter(TextFormatter())
        return rich
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    return handler


def configure_logging(
    level: str, log_format: str | None = None, stream: TextIO | None = None
) -> None:
    """Route every logger to `stream` (stderr) at `level` (a LOG_LEVEL name), formatted as
    LOG_FORMAT says (`json`, `text`, or None: text on a terminal, else json)."""
    root = logging.getLogger()
    root.handlers[:] = [_handler(log_format, stream or sys.stderr)]
    root.setLevel(LEVELS[level])
    for noisy in ("uvicorn.access", "uvicorn.error", "uvicorn", "litestar"):
        logger = logging.getLogger(noisy)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # TaskForge writes its own access lines
