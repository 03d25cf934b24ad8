"""How the SDK refuses what it is given, as the API would: a payload or an option that does
not fit is the client's ValidationError, with the API's code, message and field."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

import msgspec

from taskforge.application.handlers import DeclarationError

if TYPE_CHECKING:
    from taskforge.client import ValidationError


@functools.cache
def declaration_refused() -> type[ValidationError]:
    """The ValidationError an enqueue raises for the same value, and a DeclarationError too,
    which a process starting with the module reports in one line. Made on first use, as the
    client's module is imported only when needed."""
    from taskforge.client.errors import ValidationError

    class DeclarationRefused(ValidationError, DeclarationError):
        def __str__(self) -> str:
            return self.message

    return DeclarationRefused


_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_NAMED = re.compile(r"(?:missing required|unknown) field `(?P<name>[^`]+)`")


def field_of(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's complaint as the field it is about, from `payload` down
    (`payload.items[0].sku`), and what is wrong with it."""
    message = str(exc)
    path = ""
    at = _AT.search(message)
    if at:
        path = at["path"]
        message = message[: at.start()]
    named = _NAMED.search(message)
    if named:
        path += f".{named['name']}"
    return f"payload{path}", message


def validation_error(
    field: str, message: str, kind: type[ValidationError] | None = None
) -> ValidationError:
    """The API's 400 for the same input: its code, its message, its details (`kind`: a
    subclass to raise instead)."""
    from taskforge.client.errors import ValidationError

    return (kind or ValidationError)(
        "validation_error", f"{field}: {message}", details={"field": field}
    )
