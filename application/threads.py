"""The threads sync handlers run on, and the ones the worker had to abandon.

A thread cannot be interrupted. When the attempt a sync handler runs for is over without it
(its time limit passed, its lease was lost, the worker shut down), the worker stops waiting
for it: the attempt is settled and its slot freed at once, and the thread is *abandoned*, left
to finish on its own. Abandoned threads are counted while they still run; the worker stops
(and its supervisor restarts the process) once too many are stuck.

The threads are daemon threads, so a process that exits never waits for a stuck handler
(the standard library's executors join every thread at exit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import queue
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("taskforge.worker")


@dataclass(slots=True)
class _Call:
    run: Callable[[], Any]
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    thread_id: int | None = None


class HandlerThreads:
    """A pool of at most `size` daemon threads, started as work needs them."""

    def __init__(self, size: int, name: str = "taskforge-handler") -> None:
        if size < 1:
            raise ValueError("a thread pool needs at least one thread")
        self._size = size
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._abandoned = 0
        self._abandoned_total = 0

    @property
    def abandoned(self) -> int:
        """Abandoned threads that are still running their handler."""
        with self._lock:
            return self._abandoned

    @property
    def abandoned_total(self) -> int:
        """Threads abandoned since the pool started, finished or not."""
        with self._lock:
            return self._abandoned_total

    async def run(
        self,
        function: Callable[[Any], Any],
        argument: Any,
        on_abandon: Callable[[str], None] | None = None,
    ) -> Any:
        """`function(argument)` on a pool thread, in a copy of the caller's context.

        If the caller is cancelled while the function runs, its thread is abandoned: counted
        in `abandoned` until the function returns, and `on_abandon` is called with the stack
        the thread was at. CancelledError propagates either way."""
        context = contextvars.copy_context()
        call = _Call(run=lambda: context.run(function, argument))
        self._calls.put(call)
        self._add_thread_if_needed()
        try:
            return await asyncio.wrap_future(call.future)
        except asyncio.CancelledError:
            # wrap_future has cancelled the call if it was still queued; a running one
            # cannot be cancelled.
            if call.future.cancelled():
                # Still queued behind busy threads: let go of what it would have run with
                # (a payload, an exception and its frames) and of this coroutine (the
                # future's callbacks lead to it) rather than hold them until a thread is
                # free, which may be never. A thread skips a cancelled call.
                call.run = _not_run
                call.future = _cancelled()
            elif not call.future.done():
                stack = _stack_of(call.thread_id)
                with self._lock:
                    self._abandoned += 1
                    self._abandoned_total += 1
                call.future.add_done_callback(self._abandoned_call_returned)
                if on_abandon is not None:
                    on_abandon(stack)
            raise

    def _abandoned_call_returned(self, _: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._abandoned -= 1
            still_running = self._abandoned
        log.info("an abandoned handler thread returned (%d still running)", still_running)

    def _add_thread_if_needed(self) -> None:
        if self._idle.acquire(blocking=False):
            return  # an idle thread takes the call
        with self._lock:
            if len(self._threads) >= self._size:
                return  # every thread is busy: the call waits for the first one free
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            if call.future.set_running_or_notify_cancel():
                call.thread_id = threading.get_ident()
                try:
                    result = call.run()
                except (StopIteration, GeneratorExit) as exc:
                    # An asyncio future refuses StopIteration, so the attempt awaiting it
                    # would never end: it becomes a RuntimeError, as one a coroutine raises
                    # does (PEP 479). GeneratorExit likewise: re-raised in the awaiting
                    # coroutine it reads as that coroutine being closed, and the attempt
                    # would stay unsettled until its lease ran out.
                    error = RuntimeError(f"handler raised {type(exc).__name__}")
                    error.__cause__ = exc
                    call.future.set_exception(error)
                except BaseException as exc:  # noqa: BLE001 - handed to the awaiting attempt
                    call.future.set_exception(exc)
                else:
                    call.future.set_result(result)
                call.thread_id = None
            self._idle.release()

    def shutdown(self) -> None:
        """Let idle threads end; busy and abandoned ones end when their call returns."""
        with self._lock:
            count = len(self._threads)
        for _ in range(count):
            self._calls.put(None)


def _not_run() -> None:
    """What a call cancelled while queued runs: nothing (its thread skips it anyway)."""


def _cancelled() -> concurrent.futures.Future[Any]:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    future.cancel()
    return future


def _stack_of(thread_id: int | None) -> str:
    """Where a thread is now, as a traceback reads (most recent call last)."""
    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    if frame is None:
        return "(the thread's stack is not available)"
    return "Stack of the handler's thread (most recent call last):\n" + "".join(
        traceback.format_stack(frame)
    )
