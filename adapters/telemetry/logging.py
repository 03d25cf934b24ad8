"""Logs with the request and trace ids of the request being served: one JSON object per line
for machines, or readable lines (rich) for a person at a terminal."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from taskforge.adapters.postgres.redaction import WITHHELD, quotes_an_argument, value_free_text

request_id_var: ContextVar[str | None] = ContextVar("taskforge_request_id", default=None)
trace_id_var: ContextVar[str | None] = ContextVar("taskforge_trace_id", default=None)

LEVELS = {  # the LOG_LEVEL values
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}

FORMATS = ("json", "text")
"""The LOG_FORMAT values."""

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


class ValueFreeFormatter(logging.Formatter):
    """Tells a database driver's errors in tracebacks by kind, SQLSTATE and argument
    position, never by the statement's values."""

    def formatException(  # noqa: N802 - logging.Formatter's name
        self,
        ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        exc = ei[1]
        if exc is None or all(value_free_text(link) is None for link, _ in _chain(exc)):
            return super().formatException(ei)
        return _value_free_traceback(exc)


class JsonFormatter(ValueFreeFormatter):
    """One JSON object per record: time (ISO-8601 UTC), level, logger, message, then the
    context fields (request_id, trace_id, extras) and, at error level, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": _LEVEL_NAMES.get(record.levelno, record.levelname.lower()),
            "logger": record.name,
            "message": _message(record),
            **context_fields(record),
        }
        if record.exc_info and record.levelno >= logging.ERROR:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _message(record: logging.LogRecord) -> str:
    """The record's message, with driver errors among its arguments told without values.
    A message its arguments do not fit (a handler's `log.info("%s %s", 1)`) is told as it
    is, with them, in the record's one line: not Python's "--- Logging error ---" block."""
    try:
        if isinstance(record.args, tuple) and any(
            value_free_text(arg) is not None
            for arg in record.args
            if isinstance(arg, BaseException)
        ):
            args = tuple(
                _value_free_str(arg) if isinstance(arg, BaseException) else arg
                for arg in record.args
            )
            return str(record.msg) % args
        return record.getMessage()
    except (TypeError, ValueError, KeyError) as exc:
        return f"{record.msg!s} (arguments {record.args!r} do not fit it: {exc})"


def _value_free_str(exc: BaseException) -> str:
    text = value_free_text(exc)
    return str(exc) if text is None else text


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _chain(exc: BaseException) -> list[tuple[BaseException, BaseException | None]]:
    """`exc` and the exceptions behind it, each with the one it is behind (outermost first)."""
    chain: list[tuple[BaseException, BaseException | None]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    outer: BaseException | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, outer))
        outer, current = (
            current,
            current.__cause__
            if current.__cause__ is not None
            else None
            if current.__suppress_context__
            else current.__context__,
        )
    return chain


def _value_free_traceback(exc: BaseException) -> str:
    """The standard traceback text, each driver error's message told without values."""
    parts: list[str] = []
    for link, outer in reversed(_chain(exc)):
        if link.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(traceback.format_tb(link.__traceback__))
        kind = type(link)
        name = kind.__qualname__
        if kind.__module__ != "builtins":
            name = f"{kind.__module__}.{name}"
        text = WITHHELD if quotes_an_argument(link, outer) else _value_free_str(link)
        parts.append(f"{name}: {text}\n" if text else f"{name}\n")
        if outer is not None:
            parts.append(_CAUSE if outer.__cause__ is link else _CONTEXT)
    return "".join(parts).rstrip("\n")


_SAID_BY_ACCESS_LINE = {"method", "path", "status"}
"""Extras an access line's message already says ("GET /jobs 200")."""


class TextFormatter(ValueFreeFormatter):
    """The message, then the context fields as `key=value` (request_id, trace_id, latency_ms
    ...), then the exception if any. Time, level and logger are the handler's columns."""

    def format(self, record: logging.LogRecord) -> str:
        text = self.line(record)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text

    def line(self, record: logging.LogRecord) -> str:
        """The message and the context fields, without the exception."""
        fields = context_fields(record)
        if record.name == "taskforge.http.access":
            fields = {k: v for k, v in fields.items() if k not in _SAID_BY_ACCESS_LINE}
        return _message(record) + "".join(f" {key}={value}" for key, value in fields.items())


class LineFormatter(TextFormatter):
    """TextFormatter's text after the time (ISO-8601 UTC, as in JSON lines) and the level
    (as LOG_LEVEL names it): one line per record, its line breaks written `\\n` (a handler's
    error text cannot split a record or forge one), a traceback continuing it. For text logs
    that go to a file or a collector: there, rich's columns would pad every line to the
    width and wrap a long message onto lines of its own, away from its time and level."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        level = _LEVEL_NAMES.get(record.levelno, record.levelname.lower()).upper()
        text = self.line(record).replace("\r", "\\r").replace("\n", "\\n")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return f"{when} {level:<5} {text}"


def _handler(log_format: str | None, stream: TextIO) -> logging.Handler:
    """`text`: rich lines on a terminal, plain lines elsewhere (LineFormatter); `json`: JSON
    lines; None: text when `stream` is a terminal."""
    terminal = stream.isatty()
    if log_format is None:
        log_format = "text" if terminal else "json"
    if log_format == "text" and not terminal:
        lines = logging.StreamHandler(stream)
        lines.setFormatter(LineFormatter())
        return lines
    if log_format == "text":
        # Loaded only for text logs: a service logging JSON never imports rich.
        from rich.console import Console
        from rich.logging import RichHandler

        console = Console(file=stream, soft_wrap=True)
        rich = RichHandler(console=console, show_path=False, markup=False, log_time_format="%X")
        rich.setFormatter(TextFormatter())
        return rich
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    return handler


QUIET_AT_DEBUG = ("dishka", "faker")
"""Libraries whose DEBUG lines describe their own workings, not TaskForge's (dishka's
dependency graph at every start; Faker's locales, loaded with the API docs' schema):
LOG_LEVEL=debug leaves them at INFO."""


def configure_logging(
    level: str, log_format: str | None = None, stream: TextIO | None = None
) -> None:
    """Route every logger to `stream` (stderr) at `level` (a LOG_LEVEL name), formatted as
    LOG_FORMAT says (`json`, `text`, or None: text on a terminal, else json). Python's
    warnings (a handler's library deprecating a call) are records too, logger `py.warnings`,
    not the raw lines Python writes to stderr otherwise."""
    root = logging.getLogger()
    root.handlers[:] = [_handler(log_format, stream or sys.stderr)]
    logging.captureWarnings(True)
    root.setLevel(LEVELS[level])
    for noisy in ("uvicorn.access", "uvicorn.error", "uvicorn", "litestar"):
        logger = logging.getLogger(noisy)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # TaskForge writes its own access lines
    for library in QUIET_AT_DEBUG:
        logging.getLogger(library).setLevel(max(LEVELS[level], logging.INFO))
