"""Structured JSON logs: one object per line, with the request id of the request being served."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

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


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO-8601 UTC), level, logger, message, the
    request_id and trace_id of the context that logged it, then any `extra` fields (an
    access line adds method, path, status and latency_ms)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": _LEVEL_NAMES.get(record.levelno, record.levelname.lower()),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        trace_id = trace_id_var.get()
        if trace_id is not None:
            entry["trace_id"] = trace_id
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.levelno >= logging.ERROR:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """Route every logger to stderr as JSON lines at `level` (a LOG_LEVEL name)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    for noisy in ("uvicorn.access", "uvicorn.error", "uvicorn", "litestar"):
        logger = logging.getLogger(noisy)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # TaskForge writes its own access lines
