"""Unit-testing handlers: `perform(handler, payload)` runs one job through a handler as a
worker runs it, in the test's process, and returns its result as the job stores it;
`await perform_async(...)` does the same in an async test. See `taskforge.sdk.testing`."""

from taskforge.sdk.testing import perform, perform_async

__all__ = ["perform", "perform_async"]
