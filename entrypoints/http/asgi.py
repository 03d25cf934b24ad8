"""The API as an ASGI application factory, for running several API processes.

`taskforge api` with API_WORKERS > 1 pre-forks that many processes sharing one socket;
each builds its own container (pools, clients) from the environment.
"""

from __future__ import annotations

import dataclasses
import os

from litestar import Litestar

from taskforge.adapters.telemetry.logging import configure_logging
from taskforge.application.handlers import HandlerRegistry
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.container import Backend, make_container
from taskforge.entrypoints.http.app import create_app
from taskforge.entrypoints.http.server import bounded_protocol


def app_from_environment() -> Litestar:
    settings = dataclasses.replace(Settings.from_env(os.environ), service_name="taskforge-api")
    configure_logging(settings.log_level, settings.log_format)
    container = make_container(settings, Backend.POSTGRES_REDIS, HandlerRegistry())
    bounded_protocol(settings)  # this process's HTTP limits (uvicorn builds the protocol)
    app = create_app(container, settings)
    app.on_shutdown.append(container.close)
    return app
