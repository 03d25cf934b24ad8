"""The dashboard at /ui: server-rendered pages (Jinja templates, every value escaped), a
little plain JavaScript for the live overview, and every asset served from `static/`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from dishka import AsyncContainer
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Litestar, Router
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig

from taskforge.application.dashboard import SampleThroughput
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.http.throttle import TokenThrottle
from taskforge.entrypoints.http.ui.pages import (
    STATIC_PATH,
    UiSettings,
    counted,
    ui_error,
    ui_router,
)
from taskforge.entrypoints.http.ui.security import Sessions, is_ui_path

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def dashboard(settings: Settings) -> tuple[Router, TemplateConfig[JinjaTemplateEngine], UiSettings]:
    """The router, template engine and state the app needs to serve the dashboard; its
    sign-in form slows down guesses of the token (TokenThrottle)."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
    )
    environment.filters["number"] = lambda value: f"{value:,}"
    environment.filters["counted"] = counted
    environment.filters["when"] = lambda value: (
        "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")
    )
    config = TemplateConfig(engine=JinjaTemplateEngine.from_environment(environment))
    state = UiSettings(
        sessions=Sessions(settings.api_token),
        read_only=settings.ui_read_only,
        throttle=TokenThrottle(),
    )
    return ui_router(STATIC), config, state


FIRST_SAMPLE_WAIT = 1.0
"""At shutdown, how long a first sample still under way may take to end once cancelled."""


@asynccontextmanager
async def charts_from_start(app: Litestar) -> AsyncIterator[None]:
    """Take the overview charts' first sample as the API starts, in the background: the
    work finished before anybody opens the overview is in its charts. Without it, they
    would count from the first view. A store that does not answer leaves that to the first
    view; the API serves meanwhile either way."""
    first = asyncio.create_task(_first_sample(app.state.dishka_container))
    try:
        yield
    finally:
        first.cancel()
        await asyncio.wait({first}, timeout=FIRST_SAMPLE_WAIT)


async def _first_sample(container: AsyncContainer) -> None:
    try:
        await (await container.get(SampleThroughput))()
    except Exception as exc:  # noqa: BLE001 - the first view samples instead
        log.debug("the dashboard's charts start at the first view: %s", exc)


log = logging.getLogger("taskforge.http.ui")

__all__ = ["STATIC_PATH", "charts_from_start", "dashboard", "is_ui_path", "ui_error"]
