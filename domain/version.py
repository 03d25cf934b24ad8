"""TaskForge's version, as its installed package metadata states it (pyproject.toml is the
one place it is written). Read on first use, not on import: `import taskforge` stays fast."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version

UNKNOWN_VERSION = "0+unknown"
"""The version of a TaskForge run from a checkout that was never installed."""


@functools.cache
def taskforge_version() -> str:
    try:
        return installed_version("taskforge")
    except PackageNotFoundError:
        return UNKNOWN_VERSION
