"""Strict query strings: a parameter a route does not take is refused, not ignored.

An ignored parameter reads as a filter that applied: `GET /dlq?queue=emails` would answer
every dead letter, and the caller would believe them all in `emails`. The values of the
parameters a route takes stay the handler's to check (and, for paging, to normalize).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast
from weakref import WeakKeyDictionary

from litestar import Request
from litestar.handlers import BaseRouteHandler

from taskforge.domain.errors import ValidationError

if TYPE_CHECKING:
    from litestar.types.internal_types import PathParameterDefinition

_TAKEN: WeakKeyDictionary[BaseRouteHandler, tuple[str, ...]] = WeakKeyDictionary()
"""Each route handler's query parameter names, worked out on its first request."""


async def declared_query_only(request: Request[Any, Any, Any]) -> None:
    """A route's `before_request` hook: a 400 naming the first query parameter its handler
    does not declare (names are case-sensitive), listing the ones it does."""
    taken = _taken_by(request)
    for name in request.query_params:
        if name not in taken:
            raise ValidationError(
                name, f"unknown query parameter; allowed: {', '.join(taken) or 'none'}"
            )


def _taken_by(request: Request[Any, Any, Any]) -> tuple[str, ...]:
    """The query parameters Litestar binds for this request's handler, sorted: its own
    reading of the signature, so a parameter added to a handler is allowed at once."""
    handler = request.route_handler
    if (taken := _TAKEN.get(handler)) is None:
        # Only the path parameters' names matter to the model, not their definitions.
        path_parameters = cast(
            "dict[str, PathParameterDefinition]", dict.fromkeys(request.path_params)
        )
        model = handler.create_kwargs_model(path_parameters=path_parameters)
        taken = tuple(sorted(parameter.field_alias for parameter in model.expected_query_params))
        _TAKEN[handler] = taken
    return taken
