"""Calling the failure hooks (`@taskforge.on_failure`) in a worker, where nothing a hook
does may reach the job or the worker.

A failed attempt's hooks run in a task of their own once its settlement is written, so the
job's outcome is decided and stored whatever they do, and no other job's settlement waits
for them. Each failure's hooks run concurrently and the worker waits for them at most
`timeout` seconds; a hook still running then is left to finish on its own (a plain one keeps
its thread, an async one is cancelled). Plain hooks get threads of their own, so a stuck
hook never takes a handler's thread; once every one of them is held by a hook that did not
return, plain hooks are skipped (and logged) until one does.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from uuid import UUID

from taskforge.application.handlers import FailureHook, JobContext, call_failure_hook
from taskforge.application.threads import HandlerThreads

log = logging.getLogger("taskforge.worker")

FAILURE_HOOK_TIMEOUT = 5.0
"""Seconds the worker waits for a failure's hooks."""


class FailureHooks:
    """The hooks of one worker: `report` calls them for one failure, `close` waits for the
    reports in flight, bounded by `timeout`."""

    def __init__(self, hooks: tuple[FailureHook, ...], threads: int, timeout: float) -> None:
        self._hooks = hooks
        self._timeout = timeout
        self._size = threads
        self._threads = HandlerThreads(threads, name="taskforge-failure-hook")
        self._reports: set[asyncio.Task[None]] = set()
        self._left: set[asyncio.Task[None]] = set()
        """Hook calls past the timeout, still running: kept so that they are not collected."""

    @property
    def in_flight(self) -> int:
        """Failures whose hooks are still being called (each for at most `timeout`)."""
        return len(self._reports)

    def report(self, ctx: JobContext, exc: BaseException, dead_lettered: bool) -> None:
        """Call every hook with this failure, in a task of its own; returns at once."""
        if not self._hooks:
            return
        task = asyncio.create_task(
            self._report(ctx, exc, dead_lettered), name=f"taskforge-failure-hooks-{ctx.job_id}"
        )
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _report(self, ctx: JobContext, exc: BaseException, dead_lettered: bool) -> None:
        calls = {
            asyncio.create_task(self._call(hook, ctx, exc, dead_lettered)): hook
            for hook in self._hooks
        }
        _, late = await asyncio.wait(calls, timeout=self._timeout)
        for call in late:
            log.warning(
                "job %s: failure hook %s did not return within %gs; no longer waiting for it",
                ctx.job_id,
                _name(calls[call]),
                self._timeout,
            )
            self._left.add(call)
            call.add_done_callback(self._left.discard)
            call.cancel()

    async def _call(
        self, hook: FailureHook, ctx: JobContext, exc: BaseException, dead_lettered: bool
    ) -> None:
        if not inspect.iscoroutinefunction(hook) and self._threads.abandoned >= self._size:
            # Every hook thread is held by an earlier hook that never returned: queued, this
            # call would wait for one for ever, holding its job's context and exception.
            log.warning(
                "job %s: failure hook %s skipped: all %d failure hook threads are held by "
                "earlier calls that did not return",
                ctx.job_id,
                _name(hook),
                self._size,
            )
            return
        try:
            await call_failure_hook(
                hook, ctx, exc, dead_lettered, self._threads, lambda stack: _abandoned(ctx, stack)
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # past the timeout
            _failed(hook, ctx.job_id)  # the hook raised it of its own
        except BaseException:  # noqa: BLE001 - a hook's error never reaches the worker
            # KeyboardInterrupt and SystemExit too: raised in a task they would stop the loop.
            _failed(hook, ctx.job_id)

    async def close(self) -> None:
        """Wait for the reports in flight (each ends within `timeout`), then let the idle
        threads end."""
        if self._reports:
            await asyncio.wait(set(self._reports))
        self._threads.shutdown()


def _failed(hook: FailureHook, job_id: UUID) -> None:
    log.exception("job %s: failure hook %s raised; the job's outcome stands", job_id, _name(hook))


def _abandoned(ctx: JobContext, stack: str) -> None:
    log.info("job %s: a failure hook's thread is left running\n%s", ctx.job_id, stack)


def _name(hook: FailureHook) -> str:
    return getattr(hook, "__qualname__", repr(hook))
