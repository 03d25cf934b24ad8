"""The files the service serves as they are (the API docs' Swagger UI, the dashboard's CSS
and scripts), from a folder inside the installed package."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar import Router
from litestar.file_system import BaseLocalFileSystem
from litestar.static_files import create_static_files_router

if TYPE_CHECKING:
    from litestar.types import PathType
    from litestar.types.file_types import FileInfo


class _LocalFiles(BaseLocalFileSystem):
    """The package's folder, where a path that no file can have is a missing file: a NUL in
    it (Python's ValueError), a name past the system's length, a file used as a folder. The
    file system refuses such a look-up, which the framework would answer with a 500."""

    async def info(self, path: PathType, **kwargs: Any) -> FileInfo:
        try:
            return await super().info(path, **kwargs)
        except PermissionError:
            raise
        except (OSError, ValueError) as exc:
            raise FileNotFoundError(str(path)) from exc


def static_files(path: str, directory: Path, name: str) -> Router:
    """A router that serves `directory`'s files under `path`; a missing file is a 404."""
    return create_static_files_router(
        path=path,
        directories=[directory],
        file_system=_LocalFiles(),
        name=name,
        include_in_schema=False,
    )
