"""Logs keep driver errors' kind, SQLSTATE and argument position, never the values: real
asyncpg errors from a real server, logged through TaskForge's formatter."""

from __future__ import annotations

import io
import json
import logging
import traceback
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from taskforge.adapters.telemetry.logging import JsonFormatter

SECRET = "hunter2-card-4242"

pytestmark = pytest.mark.integration


@pytest.fixture
async def connection(migrated_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(migrated_dsn)
    await conn.execute("CREATE TEMP TABLE notes (body text UNIQUE, n int CHECK (n > 0))")
    await conn.execute("INSERT INTO notes VALUES ($1, 1)", SECRET)
    try:
        yield conn
    finally:
        await conn.close()


async def _failure(conn: asyncpg.Connection, statement: str, *args: Any) -> Exception:
    try:
        await conn.execute(statement, *args)
    except Exception as exc:
        return exc
    raise AssertionError(f"{statement} did not fail")


def _logged(exc: Exception) -> dict[str, Any]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("taskforge.test.driver")
    logger.addHandler(handler)
    try:
        logger.error("statement failed: %s", exc, exc_info=exc)
    finally:
        logger.removeHandler(handler)
    entry: dict[str, Any] = json.loads(stream.getvalue())
    return entry


@pytest.mark.parametrize(
    ("statement", "args", "kept"),
    [
        # Refused by the driver while encoding: asyncpg quotes the argument's repr.
        ("SELECT $1::int", (SECRET,), "query argument $1 (value withheld)"),
        ("SELECT $1::uuid", (SECRET,), "query argument $1 (value withheld)"),
        # The server's DETAIL names the key or the whole failing row.
        ("INSERT INTO notes VALUES ($1, 1)", (SECRET,), 'unique constraint "notes_body_key"'),
        ("INSERT INTO notes VALUES ($1, -1)", (SECRET + "-2",), "SQLSTATE 23514"),
        # A data exception's message quotes the value itself.
        ("SELECT $1::text::uuid", (SECRET,), "invalid input syntax for type uuid"),
    ],
)
async def test_a_logged_driver_error_keeps_its_kind_but_not_the_values(
    connection: asyncpg.Connection, statement: str, args: tuple[Any, ...], kept: str
) -> None:
    exc = await _failure(connection, statement, *args)
    assert SECRET in "".join(traceback.format_exception(exc))  # what a plain log would show

    entry = _logged(exc)

    assert SECRET not in json.dumps(entry)
    assert kept in entry["message"]
    assert type(exc).__name__ in entry["exception"]
    assert "Traceback (most recent call last)" in entry["exception"]


def test_other_errors_are_logged_as_they_are() -> None:
    entry = _logged(RuntimeError(SECRET))

    assert SECRET in entry["message"]
    assert f"RuntimeError: {SECRET}" in entry["exception"]
