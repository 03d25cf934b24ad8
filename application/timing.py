"""Small asyncio helpers shared by the long-running loops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def wait_any(*events: asyncio.Event) -> None:
    """Return as soon as one of `events` is set."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


_LEFT_RUNNING: set[asyncio.Future[Any]] = set()
"""Cancelled calls still cleaning up after `settle_within` returned; kept referenced."""


async def settle_within(limit: float, calls: Sequence[Awaitable[T]]) -> list[T | BaseException]:
    """Run `calls` concurrently for at most `limit` seconds, whatever they do when cancelled:
    each one's result or exception, or TimeoutError for one still running at the limit.

    Those are cancelled and left to finish in the background without being awaited: a
    driver may spend long after a cancellation cleaning up (asyncpg waits for the server to
    confirm a cancelled query before pooling its connection), which `asyncio.wait_for` would
    wait for too."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    if not tasks:
        return []
    _, late = await asyncio.wait(tasks, timeout=limit)
    for task in late:
        task.cancel()
        _LEFT_RUNNING.add(task)
        task.add_done_callback(_forget)
    return [TimeoutError() if task in late else task.exception() or task.result() for task in tasks]


def _forget(task: asyncio.Future[Any]) -> None:
    _LEFT_RUNNING.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: its outcome no longer matters to anyone


def unanswered(exc: BaseException, waited: float) -> str:
    """Why a call to a store failed: its error, or (a timeout says nothing) the wait."""
    return str(exc) or f"no answer within {waited:g}s"
