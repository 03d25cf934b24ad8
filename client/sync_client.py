"""`SyncClient`: the TaskForge API from blocking code, over one httpx connection pool."""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable, Iterator, Mapping
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


class SyncClient:
    """A blocking client; use it as a context manager (`with SyncClient(url) as tf:`).

    Calls return immutable values (`Job`, `JobPage`...) and raise `ClientError` subclasses
    (after `close()` or the `with` block, `ClientClosed`).
    `request_timeout` bounds each HTTP exchange, to the answer's last byte (an answer still
    arriving then fails as timed out; a read that waits for bytes never sent fails after
    `request_timeout` of its own); `enqueue` and `enqueue_many` are retried under
    `retry_policy` when the API is unavailable (no answer, 429, 502, 503, 504).

    A `base_url` no call could reach the API through (`core.check_base_url`: no http:// or
    https:// scheme, no host, a query...) is a ValueError when the client is made, as is a
    token no header can carry and a `request_timeout` that is not a positive finite number
    of seconds (`core.seconds_of`; a non-number is a TypeError): a wrong argument, as
    Python's own constructors raise it, not a call's failure (a `ClientError`), and never
    retried as a `ConnectionFailed` is.
    """

    def __init__(
        self,
        base_url: str = core.DEFAULT_BASE_URL,
        *,
        token: str | None = None,
        request_timeout: float = core.DEFAULT_REQUEST_TIMEOUT,
        retry_policy: RetryPolicy | None = None,
        user_agent: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry_policy = core.retry_policy_of(retry_policy)
        options = core.http_options(
            base_url, token, request_timeout, user_agent or core.default_user_agent()
        )
        self.base_url: str = options["base_url"]
        self.request_timeout: float = options["timeout"]
        self._http = httpx.Client(**options, transport=transport)
        self.raw = RawResponses(self)
        """The same calls answering the API's `Response` (status, text as sent) undecoded."""

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, Any] | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> values.Job:
        """Store a job; with an idempotency key already used, the job stored under it."""
        return self._run(core.enqueue(job_type, payload, options))

    def enqueue_many(self, jobs: Iterable[JobSpec]) -> builtins.list[values.BatchItem]:
        """Store many jobs, in requests of at most 1000 (`POST /jobs/batch`), one over the
        API's body limit sent again as two halves. Each request is all or none; when one
        fails, the requests before it stay stored. Give each job an
        idempotency key to make calling again after a failure store nothing twice."""
        calls = core.enqueue_chunks(jobs)
        items: builtins.list[values.BatchItem] = []
        while calls:
            call = calls.pop(0)
            try:
                stored: builtins.list[values.BatchItem] = self._run(call)
            except ValidationError as refused:  # over the body limit: sent again in halves
                calls[:0] = core.halves_of_too_large(refused, call)
            else:
                items += stored
        return items

    def get(self, job_id: UUID | str) -> values.Job:
        return self._run(core.get_job(job_id))

    def list(
        self,
        *,
        queue: str | None = None,
        status: JobState | str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> values.JobPage:
        """Jobs newest first, of one `queue` and one `status` when given."""
        return self._run(core.list_jobs(queue=queue, status=status, limit=limit, offset=offset))

    def cancel(self, job_id: UUID | str, reason: str | None = None) -> values.Job:
        return self._run(core.cancel_job(job_id, reason))

    def retry(self, job_id: UUID | str) -> values.Job:
        return self._run(core.retry_job(job_id))

    def dlq(self, job_id: UUID | str, reason: str | None = None) -> values.Job:
        """Move the job to the dead-letter queue."""
        return self._run(core.dead_letter_job(job_id, reason))

    def replay(self, job_id: UUID | str) -> values.Job:
        return self._run(core.replay_job(job_id))

    def dead_letters(
        self, *, limit: int | None = None, offset: int | None = None
    ) -> values.DeadLetterPage:
        return self._run(core.list_dead_letters(limit=limit, offset=offset))

    def dead_letter(self, job_id: UUID | str) -> values.DeadLetter:
        return self._run(core.get_dead_letter(job_id))

    def stats(self) -> values.Stats:
        return self._run(core.get_stats())

    def queues(self) -> builtins.list[values.QueueInfo]:
        """Every queue with jobs or paused (and the API's QUEUE_NAME): counts and pause."""
        return self._run(core.list_queues())

    def workers(self) -> builtins.list[values.WorkerInfo]:
        """The live workers: their queues, job types and busy slots."""
        return self._run(core.list_workers())

    def pause_queue(self, queue: str) -> values.QueueInfo:
        """Stop every worker from starting the queue's jobs; idempotent."""
        return self._run(core.pause_queue(queue))

    def resume_queue(self, queue: str) -> values.QueueInfo:
        """Let the queue's jobs start again, at once; idempotent."""
        return self._run(core.resume_queue(queue))

    def add_schedule(
        self, name: str, cron: str, job_type: str, **options: Unpack[ScheduleOptions]
    ) -> values.Schedule:
        """Create schedule `name` (a `job_type` job at every tick of `cron`), or replace the
        one of that name: it keeps its pause and, when cron and timezone are unchanged, its
        next fire time."""
        schedule, _ = self._run(core.add_schedule(name, cron, job_type, options))
        return schedule

    def schedules(self) -> builtins.list[values.Schedule]:
        """Every schedule, by name, with its next and previous fire times."""
        return self._run(core.list_schedules())

    def schedule(self, name: str) -> values.Schedule:
        """Raises ScheduleNotFound."""
        return self._run(core.get_schedule(name))

    def delete_schedule(self, name: str) -> None:
        """Jobs it already enqueued stay. Raises ScheduleNotFound."""
        self._run(core.delete_schedule(name))

    def pause_schedule(self, name: str) -> values.Schedule:
        """Its ticks enqueue nothing until resumed; idempotent."""
        return self._run(core.pause_schedule(name))

    def resume_schedule(self, name: str) -> values.Schedule:
        """Fire again from the next tick (the pause's ticks are skipped); idempotent."""
        return self._run(core.resume_schedule(name))

    def wait(self, job_id: UUID | str, timeout: float | None = None) -> values.Job:
        """Poll (with growing gaps) until the job is SUCCEEDED, DLQ or CANCELLED and return
        it; past `timeout` seconds raise `WaitTimeout`. None (the default) or infinity
        waits with no limit; 0 reads the job once. Each poll is given what is left of
        `timeout`, at most `request_timeout`, yet at least `core.SHORTEST_POLL` (1 s).
        A negative or NaN `timeout` is a ValueError, a non-number a TypeError, before
        any request (`core.JobWait`)."""
        waiting = core.JobWait(
            job_id, timeout, time.monotonic(), self.request_timeout, self.retry_policy.attempts
        )
        while True:
            try:
                job = self._run(core.get_job(job_id), waiting.poll_timeout(time.monotonic()))
            except Unavailable as failure:
                waiting.failed(failure)
            else:
                if waiting.answered(job):
                    return job
            time.sleep(waiting.next_delay(time.monotonic()))

    def result(self, job_id: UUID | str, timeout: float | None = None) -> Any:
        """`wait` for the job, then answer what its handler returned (None for nothing),
        the job's `result` once SUCCEEDED. A job that ended in DLQ or CANCELLED raises
        `JobFailed` (its `job` as read, the message naming its state and last error); one
        not finished within `timeout` raises `WaitTimeout`, as `wait` does."""
        return core.result_of(self.wait(job_id, timeout))

    def _run(self, call: Call[T], timeout: float | None = None) -> T:
        return call.answer(self._send(call.request, timeout))

    def _send(self, request: Request, timeout: float | None = None) -> Response:
        tries = 0
        while True:
            tries += 1
            try:
                return core.answer_of(self._exchange(request, timeout), request)
            except ClientError as failure:
                delay = self.retry_policy.delay_after(failure, request, tries)
                if delay is None:
                    raise
            time.sleep(delay)

    def _exchange(self, request: Request, timeout: float | None = None) -> httpx.Response:
        """One exchange within `timeout` (default: the client's request_timeout)."""
        if self._http.is_closed:
            raise core.closed_client()
        timeout = self.request_timeout if timeout is None else timeout
        outgoing = self._http.build_request(
            request.method,
            request.path,
            params=request.params,
            json=request.body,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout == self.request_timeout else timeout,
        )
        deadline = time.monotonic() + timeout
        try:
            streamed = self._http.send(outgoing, stream=True)
            try:
                streamed.stream = _UntilDeadline(streamed.stream, deadline, outgoing)
                streamed.read()
            finally:
                streamed.close()
        except httpx.TransportError as exc:
            raise core.connection_failed(exc, self.base_url, timeout) from exc
        except httpx.DecodingError as exc:
            raise core.undecodable(exc, request) from exc
        return streamed


class _UntilDeadline(httpx.SyncByteStream):
    """An answer's body read as it arrives, so that one trickling in (each read within the
    timeout, the whole not) fails at the deadline like one that never comes."""

    def __init__(self, body: Any, deadline: float, request: httpx.Request) -> None:
        self._body = body
        self._deadline = deadline
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            if time.monotonic() > self._deadline:
                raise httpx.ReadTimeout("answer not complete in time", request=self._request)
            yield chunk

    def close(self) -> None:
        self._body.close()


class RawResponses:
    """`SyncClient`'s calls answering `Response`: for tools that show the API's JSON as it
    came (`taskforge-cli --json`). Errors are raised exactly as by the typed calls."""

    def __init__(self, client: SyncClient) -> None:
        self._send = client._send

    def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, Any] | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> Response:
        """201 for a new job, 200 for the job stored earlier under the same key."""
        return self._send(core.enqueue(job_type, payload, options).request)

    def get(self, job_id: UUID | str) -> Response:
        return self._send(core.get_job(job_id).request)

    def list(
        self,
        *,
        queue: str | None = None,
        status: JobState | str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Response:
        call = core.list_jobs(queue=queue, status=status, limit=limit, offset=offset)
        return self._send(call.request)

    def cancel(self, job_id: UUID | str, reason: str | None = None) -> Response:
        return self._send(core.cancel_job(job_id, reason).request)

    def retry(self, job_id: UUID | str) -> Response:
        return self._send(core.retry_job(job_id).request)

    def dlq(self, job_id: UUID | str, reason: str | None = None) -> Response:
        return self._send(core.dead_letter_job(job_id, reason).request)

    def replay(self, job_id: UUID | str) -> Response:
        return self._send(core.replay_job(job_id).request)

    def dead_letters(self, *, limit: int | None = None, offset: int | None = None) -> Response:
        return self._send(core.list_dead_letters(limit=limit, offset=offset).request)

    def dead_letter(self, job_id: UUID | str) -> Response:
        return self._send(core.get_dead_letter(job_id).request)

    def stats(self) -> Response:
        return self._send(core.get_stats().request)

    def queues(self) -> Response:
        return self._send(core.list_queues().request)

    def workers(self) -> Response:
        return self._send(core.list_workers().request)

    def pause_queue(self, queue: str) -> Response:
        return self._send(core.pause_queue(queue).request)

    def resume_queue(self, queue: str) -> Response:
        return self._send(core.resume_queue(queue).request)

    def add_schedule(
        self, name: str, cron: str, job_type: str, **options: Unpack[ScheduleOptions]
    ) -> Response:
        """201 for a new schedule, 200 for a replaced one."""
        return self._send(core.add_schedule(name, cron, job_type, options).request)

    def schedules(self) -> Response:
        return self._send(core.list_schedules().request)

    def schedule(self, name: str) -> Response:
        return self._send(core.get_schedule(name).request)

    def delete_schedule(self, name: str) -> Response:
        return self._send(core.delete_schedule(name).request)

    def pause_schedule(self, name: str) -> Response:
        return self._send(core.pause_schedule(name).request)

    def resume_schedule(self, name: str) -> Response:
        return self._send(core.resume_schedule(name).request)

    def health(self) -> Response:
        return self._send(core.get_health().request)

    def readiness(self) -> Response:
        """Answers a 503 too: a service that is not ready names its failing checks."""
        return self._send(core.get_readiness().request)
