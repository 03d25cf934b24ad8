"""The dashboard at /ui: server-rendered pages (Jinja templates, every value escaped), a
little plain JavaScript for the live overview, and every asset served from `static/`."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Router
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig

from taskforge.entrypoints.config import Settings
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
    """The router, template engine and state the app needs to serve the dashboard."""
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
    )
    return ui_router(STATIC), config, state


__all__ = ["STATIC_PATH", "dashboard", "is_ui_path", "ui_error"]
