"""Dependency injection for route handlers, straight from the app container.

Every TaskForge dependency lives for the whole process (dishka's APP scope), so requests
need no container of their own: dishka's Litestar integration would open and close one per
request (and build a Request for it) to hand out the same objects every time.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import Parameter, signature
from typing import Any, ParamSpec, TypeVar, cast

from dishka import AsyncContainer
from dishka.integrations.base import wrap_injection
from litestar import Litestar, Request

P = ParamSpec("P")
T = TypeVar("T")

_REQUEST = "request"


def inject(func: Callable[P, T]) -> Callable[P, T]:
    """Resolve the handler's `FromDishka[...]` parameters from the app's container; the
    handler gains a `request` parameter (Litestar fills it) when it has none."""
    extra = (
        []
        if _REQUEST in signature(func).parameters
        else [Parameter(_REQUEST, Parameter.KEYWORD_ONLY, annotation=Request)]
    )
    return wrap_injection(
        func=func,
        is_async=True,
        additional_params=extra,
        container_getter=_app_container,
    )


def _app_container(_: tuple[Any, ...], kwargs: dict[str, Any]) -> AsyncContainer:
    request = cast("Request[Any, Any, Any]", kwargs[_REQUEST])
    return cast(AsyncContainer, request.app.state.dishka_container)


def setup_injection(container: AsyncContainer, app: Litestar) -> None:
    app.state.dishka_container = container
