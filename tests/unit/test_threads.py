"""The threads sync handlers (and failure hooks) run on: a call cancelled while it waits for
a busy pool holds on to nothing it was given."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import weakref

from taskforge.application.threads import HandlerThreads


class Payload:
    """Something a call was given: a job's context, an exception and its frames."""


def test_a_call_cancelled_while_queued_lets_go_of_its_argument() -> None:
    threads = HandlerThreads(1, name="test-pool")
    release = threading.Event()

    async def cancel_a_queued_call() -> weakref.ref[Payload]:
        busy = asyncio.ensure_future(threads.run(lambda _: release.wait(5), None))
        await asyncio.sleep(0.05)  # the one thread is taken, and stays so
        given = Payload()
        queued = asyncio.ensure_future(threads.run(lambda payload: payload, given))
        await asyncio.sleep(0.05)
        queued.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await queued
        busy.cancel()  # abandons the busy thread: it keeps running
        with contextlib.suppress(asyncio.CancelledError):
            await busy
        return weakref.ref(given)

    try:
        kept = asyncio.run(cancel_a_queued_call())
        gc.collect()
        # Before: the queued call kept it until a thread was free, which may be never.
        assert kept() is None
    finally:
        release.set()
        threads.shutdown()
