"""`Client`: the TaskForge API from asyncio code, over one httpx connection pool."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar, Unpack
from uuid import UUID

import httpx

from taskforge.client import core
from taskforge.client.core import (
    Call,
    EnqueueOptions,
    JobSpec,
    Request,
    Response,
    RetryPolicy,
    ScheduleOptions,
    values,  # the answers' values, loaded with the first answer decoded
)
from taskforge.client.errors import ClientError, Unavailable, ValidationError
from taskforge.domain.states import JobState

T = TypeVar("T")


class Client:
    """An asyncio client; use it as an async context manager
    (`async with Client(url) as tf:`). It behaves as `SyncClient` does, awaited."""

    def __init__(
        self,
        base_url: str = core.DEFAULT_BASE_URL,
        *,
        token: str | None = None,
        request_timeout: float = core.DEFAULT_REQUEST_TIMEOUT,
        retry_policy: RetryPolicy | None = None,
        user_agent: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry_policy = core.retry_policy_of(retry_policy)
        options = core.http_options(
            base_url, token, request_timeout, user_agent or core.default_user_agent()
        )
        self.base_url: str = options["base_url"]
        self.request_timeout: float = options["timeout"]
        self._options = {**options, "transport": transport}
        self._http = httpx.AsyncClient(**self._options)
        self._loop: asyncio.AbstractEventLoop | None = None
        """The event loop whose connections `_http` holds (None until its first call)."""

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._loop not in (None, asyncio.get_running_loop()):
            # Its connections belong to another loop, which alone can close them.
            self._http = httpx.AsyncClient(**self._options)
        await self._http.aclose()

    async def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, Any] | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> values.Job:
        """Store a job; with an idempotency key already used, the job stored under it."""
        return await self._run(core.enqueue(job_type, payload, options))

    async def enqueue_many(self, jobs: Iterable[JobSpec]) -> builtins.list[values.BatchItem]:
        """Store many jobs, in requests of at most 1000 (`POST /jobs/batch`), one over the
        API's body limit sent again as two halves. Each request is all or none; when one
        fails, the requests before it stay stored. Give each job an
        idempotency key to make calling again after a failure store nothing twice."""
        calls = core.enqueue_chunks(jobs)
        items: builtins.list[values.BatchItem] = []
        while calls:
            call = calls.pop(0)
            try:
                stored: builtins.list[values.BatchItem] = await self._run(call)
            except ValidationError as refused:  # over the body limit: sent again in halves
                calls[:0] = core.halves_of_too_large(refused, call)
            else:
                items += stored
        return items

    async def get(self, job_id: UUID | str) -> values.Job:
        return await self._run(core.get_job(job_id))

    async def list(
        self,
        *,
        queue: str | None = None,
        status: JobState | str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> values.JobPage:
        """Jobs newest first, of one `queue` and one `status` when given."""
        call = core.list_jobs(queue=queue, status=status, limit=limit, offset=offset)
        return await self._run(call)

    async def cancel(self, job_id: UUID | str, reason: str | None = None) -> values.Job:
        return await self._run(core.cancel_job(job_id, reason))

    async def retry(self, job_id: UUID | str) -> values.Job:
        return await self._run(core.retry_job(job_id))

    async def dlq(self, job_id: UUID | str, reason: str | None = None) -> values.Job:
        """Move the job to the dead-letter queue."""
        return await self._run(core.dead_letter_job(job_id, reason))

    async def replay(self, job_id: UUID | str) -> values.Job:
        return await self._run(core.replay_job(job_id))

    async def dead_letters(
        self, *, limit: int | None = None, offset: int | None = None
    ) -> values.DeadLetterPage:
        return await self._run(core.list_dead_letters(limit=limit, offset=offset))

    async def dead_letter(self, job_id: UUID | str) -> values.DeadLetter:
        return await self._run(core.get_dead_letter(job_id))

    async def stats(self) -> values.Stats:
        return await self._run(core.get_stats())

    async def queues(self) -> builtins.list[values.QueueInfo]:
        """Every queue with jobs or paused (and the API's QUEUE_NAME): counts and pause."""
        return await self._run(core.list_queues())

    async def workers(self) -> builtins.list[values.WorkerInfo]:
        """The live workers: their queues, job types and busy slots."""
        return await self._run(core.list_workers())

    async def pause_queue(self, queue: str) -> values.QueueInfo:
        """Stop every worker from starting the queue's jobs; idempotent."""
        return await self._run(core.pause_queue(queue))

    async def resume_queue(self, queue: str) -> values.QueueInfo:
        """Let the queue's jobs start again, at once; idempotent."""
        return await self._run(core.resume_queue(queue))

    async def add_schedule(
        self, name: str, cron: str, job_type: str, **options: Unpack[ScheduleOptions]
    ) -> values.Schedule:
        """Create schedule `name` (a `job_type` job at every tick of `cron`), or replace the
        one of that name: it keeps its pause and, when cron and timezone are unchanged, its
        next fire time."""
        schedule, _ = await self._run(core.add_schedule(name, cron, job_type, options))
        return schedule

    async def schedules(self) -> builtins.list[values.Schedule]:
        """Every schedule, by name, with its next and previous fire times."""
        return await self._run(core.list_schedules())

    async def schedule(self, name: str) -> values.Schedule:
        """Raises ScheduleNotFound."""
        return await self._run(core.get_schedule(name))

    async def delete_schedule(self, name: str) -> None:
        """Jobs it already enqueued stay. Raises ScheduleNotFound."""
        await self._run(core.delete_schedule(name))

    async def pause_schedule(self, name: str) -> values.Schedule:
        """Its ticks enqueue nothing until resumed; idempotent."""
        return await self._run(core.pause_schedule(name))

    async def resume_schedule(self, name: str) -> values.Schedule:
        """Fire again from the next tick (the pause's ticks are skipped); idempotent."""
        return await self._run(core.resume_schedule(name))

    async def wait(self, job_id: UUID | str, timeout: float | None = None) -> values.Job:
        """Poll (with growing gaps) until the job is SUCCEEDED, DLQ or CANCELLED and return
        it; past `timeout` seconds raise `WaitTimeout`. None (the default) or infinity
        waits with no limit; 0 reads the job once. Each poll is given what is left of
        `timeout`, at most `request_timeout`, yet at least `core.SHORTEST_POLL` (1 s).
        A negative or NaN `timeout` is a ValueError, a non-number a TypeError, before
        any request (`core.JobWait`)."""
        loop = asyncio.get_running_loop()
        waiting = core.JobWait(
            job_id, timeout, loop.time(), self.request_timeout, self.retry_policy.attempts
        )
        while True:
            try:
                job = await self._run(core.get_job(job_id), waiting.poll_timeout(loop.time()))
            except Unavailable as failure:
                waiting.failed(failure)
            else:
                if waiting.answered(job):
                    return job
            await asyncio.sleep(waiting.next_delay(loop.time()))

    async def result(self, job_id: UUID | str, timeout: float | None = None) -> Any:
        """`wait` for the job, then answer what its handler returned (None for nothing),
        the job's `result` once SUCCEEDED. A job that ended in DLQ or CANCELLED raises
        `JobFailed` (its `job` as read, the message naming its state and last error); one
        not finished within `timeout` raises `WaitTimeout`, as `wait` does."""
        return core.result_of(await self.wait(job_id, timeout))

    async def _run(self, call: Call[T], timeout: float | None = None) -> T:
        return call.answer(await self._send(call.request, timeout))

    async def _send(self, request: Request, timeout: float | None = None) -> Response:
        tries = 0
        while True:
            tries += 1
            try:
                return core.answer_of(await self._exchange(request, timeout), request)
            except ClientError as failure:
                delay = self.retry_policy.delay_after(failure, request, tries)
                if delay is None:
                    raise
            await asyncio.sleep(delay)

    def _http_of_running_loop(self) -> httpx.AsyncClient:
        """The connection pool of the running event loop. A pooled connection belongs to the
        loop that opened it (on another, or once that loop is closed, a request can be sent
        and its answer never read): a call from another loop (a second `asyncio.run`) gets
        a pool of its own, and the other loop's connections are left to it."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop and not self._http.is_closed:
            if self._loop is not None:
                hooks = {name: list(hooks) for name, hooks in self._http.event_hooks.items()}
                self._http = httpx.AsyncClient(**self._options, event_hooks=hooks)
            self._loop = loop
        return self._http

    async def _exchange(self, request: Request, timeout: float | None = None) -> httpx.Response:
        """One exchange within `timeout` (default: the client's request_timeout)."""
        timeout = self.request_timeout if timeout is None else timeout
        http = self._http_of_running_loop()
        if http.is_closed:
            raise core.closed_client()
        outgoing = http.build_request(
            request.method, request.path, params=request.params, json=request.body
        )
        try:
            # The whole exchange, not each read: an answer trickling in fails at the deadline.
            async with asyncio.timeout(timeout):
                return await http.send(outgoing)
        except TimeoutError:
            timed_out = httpx.ReadTimeout("answer not complete in time", request=outgoing)
            raise core.connection_failed(timed_out, self.base_url, timeout) from None
        except httpx.TransportError as exc:
            raise core.connection_failed(exc, self.base_url, timeout) from exc
        except httpx.DecodingError as exc:
            raise core.undecodable(exc, request) from exc
