"""The files the service serves as they are (the API docs' Swagger UI, the dashboard's CSS
and scripts), from a folder inside the installed package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Router
from litestar.connection import ASGIConnection
from litestar.exceptions import NotFoundException
from litestar.handlers import BaseRouteHandler
from litestar.static_files import create_static_files_router


def _no_nul_in_path(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """No file name holds a NUL, and the file system refuses to look one up (Python raises
    ValueError), so such a path is a file that does not exist."""
    if "\x00" in connection.scope["path"]:
        raise NotFoundException()


def static_files(path: str, directory: Path, name: str) -> Router:
    """A router that serves `directory`'s files under `path`; a missing file is a 404."""
    return create_static_files_router(
        path=path,
        directories=[directory],
        name=name,
        guards=[_no_nul_in_path],
        include_in_schema=False,
    )
