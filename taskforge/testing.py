"""Testing with TaskForge in the test's own process.

`perform(handler, payload)` runs one job through a handler as a worker runs it and returns
its result as the job stores it; `await perform_async(...)` does the same in an async test
(see `taskforge.sdk.testing`). `InMemoryTaskForge` runs the API, a worker and a scheduler on
the in-memory backend, with a client and `drain()` (see `taskforge.entrypoints.testing`); it
loads on first use, so that `perform` alone does not load the web framework."""

from typing import TYPE_CHECKING, Any

from taskforge.sdk.testing import perform, perform_async

if TYPE_CHECKING:
    from taskforge.entrypoints.testing import InMemoryTaskForge

__all__ = ["InMemoryTaskForge", "perform", "perform_async"]


def __getattr__(name: str) -> Any:
    if name == "InMemoryTaskForge":
        from taskforge.entrypoints.testing import InMemoryTaskForge

        return InMemoryTaskForge
    raise AttributeError(f"module 'taskforge.testing' has no attribute {name!r}")
