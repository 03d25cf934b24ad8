"""Driver errors without the values they quote, for logs.

asyncpg's errors can carry a statement's data: a server error's DETAIL holds the failing
row or key (`Key (idempotency_key)=(...) already exists`), a data exception's message
quotes the bad value, and an argument that fails to encode is shown with its `repr` (and
the encoder's own error, chained below it, often quotes it again). Logs keep the kind of
error, its SQLSTATE and the argument's position, never the values.
"""

from __future__ import annotations

import re

import asyncpg

WITHHELD = "(value withheld)"

_ARGUMENT = re.compile(r"(?P<position>query argument \$\d+(?: in element #\d+ of [^:]*)?):.*", re.S)
_QUOTED = re.compile(r'"[^"]*"')
_DATA_EXCEPTION_CLASS = "22"


def value_free_text(exc: BaseException) -> str | None:
    """What a driver error says without the values it may quote; None for other errors."""
    if not isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return None
    # args[0] is the message alone: str() would add the DETAIL and HINT.
    message = _ARGUMENT.sub(rf"\g<position> {WITHHELD}", str(exc.args[0]) if exc.args else "")
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate.startswith(_DATA_EXCEPTION_CLASS):
        message = _QUOTED.sub(f'"{WITHHELD}"', message)
    return f"{message} [SQLSTATE {sqlstate}]" if sqlstate else message


def quotes_an_argument(exc: BaseException, outer: BaseException | None) -> bool:
    """Whether `exc` is an encoder's error that asyncpg chained below a DataError about an
    argument (its message usually repeats the value)."""
    return isinstance(outer, asyncpg.DataError) and outer.__cause__ is exc
