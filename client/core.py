"""The clients' one implementation of the REST API, without I/O.

Each API operation is a `Call`: the `Request` to send and how to decode its 2xx answer.
`answer_of` turns any HTTP answer into a `Response` or raises the typed error, and
`RetryPolicy` and `JobWait` say how long to wait between tries. `SyncClient` and
`Client` only move requests and answers over httpx and sleep when told to.
Longer than most modules: one short builder per API operation, so both clients share them.
"""

from __future__ import annotations

import importlib
import json
import math
import ssl
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, NotRequired, Required, TypeVar
from urllib.parse import quote
from uuid import UUID

import httpx

from taskforge.client.errors import (
    ClientClosed,
    ClientError,
    ConnectionFailed,
    InvalidResponse,
    InvalidTransition,
    JobFailed,
    JobNotFound,
    ScheduleNotFound,
    Unauthorized,
    Unavailable,
    ValidationError,
    WaitTimeout,
)
from taskforge.domain.policy import PolicyOptions
from taskforge.domain.states import JobState
from taskforge.domain.version import taskforge_version

if TYPE_CHECKING:
    from taskforge.client import values as values  # explicit: the clients import it from here
else:

    class _ImportedOnFirstUse:
        """A module imported when one of its names is first read."""

        def __init__(self, name: str) -> None:
            self._name = name

        def __getattr__(self, attribute: str) -> Any:
            return getattr(importlib.import_module(self._name), attribute)

    # The answers' values load with the first answer decoded: `taskforge-cli` prints the
    # API's answers as they came and starts without them (about 10 ms of its start-up).
    # The clients' annotations name them through it too (`values.Job`), so tools that
    # evaluate annotations at run time (typing.get_type_hints) still resolve them.
    values = _ImportedOnFirstUse("taskforge.client.values")

T = TypeVar("T")

DEFAULT_BASE_URL = "http://localhost:8080"
DEFAULT_REQUEST_TIMEOUT = 10.0
BATCH_LIMIT = 1000
"""The most jobs `POST /jobs/batch` takes in one request; `enqueue_many` sends chunks."""
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
REQUEST_ID_HEADER = "X-Request-ID"
GENERATED_KEY_PREFIX = "tf-"


class JobPolicyOptions(PolicyOptions, total=False):
    """The retry policy, lease and priority a job is enqueued with, by `enqueue` and by each
    tick of a schedule. Left out, the API's default applies (`timeout`: its JOB_TIMEOUT)."""


class EnqueueOptions(JobPolicyOptions, total=False):
    """`enqueue`'s keyword options, as `POST /jobs` names them in snake_case. Left out, the
    API's default applies (`queue`: its QUEUE_NAME; `timeout`: its JOB_TIMEOUT)."""

    queue: str
    idempotency_key: str
    """Reusing a key returns the existing job. The client makes one up when none is given,
    so that retrying an enqueue never stores the job twice."""
    unique_key: str
    """While a PENDING, RUNNING or FAILED job of the queue has this key, enqueueing returns
    that job instead of a new one; once it finished the key is free again."""
    run_at: datetime
    """Run no sooner than this; a naive datetime is read as UTC. Not with `delay`."""
    delay: float | timedelta
    """Run no sooner than this long from now: seconds, or a timedelta. Not with `run_at`."""


class ScheduleOptions(JobPolicyOptions, total=False):
    """`add_schedule`'s keyword options, as `POST /schedules` names them in snake_case. Left
    out, the API's default applies (`queue`: its QUEUE_NAME; `timezone`: UTC)."""

    payload: Mapping[str, Any]
    queue: str
    timezone: str
    catch_up: bool
    """After every scheduler was down: fire each missed tick, not only the most recent."""


def _body_name(option: str) -> str:
    """An option's name in the API's JSON bodies: `catch_up` -> `catchUp`."""
    first, *rest = option.split("_")
    return first + "".join(word.capitalize() for word in rest)


_SCHEDULE_BODY_NAMES = {option: _body_name(option) for option in ScheduleOptions.__annotations__}


class JobSpec(EnqueueOptions, total=False):
    """One job of `enqueue_many`: `enqueue`'s arguments as a mapping."""

    job_type: Required[str]
    payload: NotRequired[Mapping[str, Any] | None]


_BODY_NAMES = {option: _body_name(option) for option in EnqueueOptions.__annotations__}
_SPEC_KEYS = frozenset(JobSpec.__annotations__)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    params: Mapping[str, str] | None = None
    body: Any = None
    retry: bool = False
    """Safe to send again after a lost or refused attempt (enqueues carry a key)."""
    accept: frozenset[int] = frozenset()
    """Non-2xx statuses answered as a `Response` rather than raised."""
    not_found: type[ClientError] = JobNotFound
    """What a 404 raises: what the path names was not found."""
    first_index: int = 0
    """In one of a call's batch requests, the call's index of the request's first job: an
    error naming `jobs[i]` names the call's `jobs[first_index + i]`."""
    made_up_keys: frozenset[str] = frozenset()
    """The idempotency keys the client made up for the request's jobs. An enqueue answered
    with the job holding one found a job stored by an earlier try of the same call (its
    answer lost), not before the call: no conflict."""


@dataclass(frozen=True, slots=True)
class Response:
    """An accepted answer: `text` is the body exactly as received, `data` its JSON."""

    status: int
    text: str
    data: Any
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    request: Request
    decode: Callable[[Response], T]

    def answer(self, response: Response) -> T:
        """The accepted `response` decoded; JSON of another shape than the API's answer to
        this request (another server, a proxy's page) is an InvalidResponse."""
        try:
            return self.decode(response)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            # ValueError: msgspec's ValidationError names the field and what it expected.
            raise InvalidResponse(
                "invalid_response",
                f"{self.request.method} {self.request.path} answered {response.status} with"
                f" JSON that is not the API's answer to it ({type(exc).__name__}: {exc})",
                status=response.status,
                request_id=response.request_id,
            ) from None


def http_options(
    base_url: str, token: str | None, request_timeout: float, user_agent: str
) -> dict[str, Any]:
    """The arguments of `httpx.Client` and `httpx.AsyncClient` alike, `timeout` the
    request_timeout as checked (seconds_of: a positive finite number). A base URL no call
    can reach the API through is a ValueError (check_base_url), and so is a token no
    request header can carry, without showing it (sent, it would fail each call as a
    ConnectionFailed quoting the header, token and all)."""
    check_base_url(base_url)
    timeout = seconds_of("request_timeout", request_timeout)
    headers = {"User-Agent": user_agent, "Accept": "application/json"}
    if token and not sendable_token(token):
        raise ValueError(f"token {NOT_A_HEADER_VALUE}")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    options: dict[str, Any] = {
        "base_url": base_url.rstrip("/"),
        "headers": headers,
        "timeout": timeout,
    }
    if _never_tls(base_url):
        options["verify"] = _context_trusting_no_ca()
    return options


def check_base_url(base_url: str) -> None:
    """Refuse, as a ValueError naming it, a base URL that no call could reach the API
    through: one without an http:// or https:// scheme (`localhost:8080`), one httpx
    cannot parse, one with no host (`http://`) or a space in its host (`http://api `: no
    name lookup finds it), or one with a query (`?`: the API's paths would be added to the
    query, and every call sent to `/`). A path is kept: the API may be served under one
    (`https://example.com/taskforge`). `taskforge-cli` checks `--api-url` by the same
    rule."""
    if not base_url.lower().startswith(("http://", "https://")):
        raise ValueError(f"{base_url!r} is not an http:// or https:// URL")
    try:
        url = httpx.URL(base_url)  # as the client will read it
    except httpx.InvalidURL as exc:
        raise ValueError(f"{base_url!r} is not a valid URL: {exc}") from None
    if not url.host:
        raise ValueError(f"{base_url!r} names no host")
    if "%20" in url.host:  # as httpx writes a space there
        raise ValueError(f"{base_url!r} names a host with a space")
    if b"?" in url.raw_path:
        raise ValueError(f"{base_url!r} has a query: the API's paths would be added to it")


def seconds_of(name: str, value: object, *, zero: bool = False, unlimited: bool = False) -> float:
    """`value`, the argument `name` of a client or a call, as seconds: an int or a float
    above 0 (or 0, when `zero`), finite unless `unlimited` (then infinity is no limit).
    Anything else is refused where it is given, as Python's own functions refuse a wrong
    argument: a non-number (a bool too) as a TypeError, a number out of that range (NaN
    included) as a ValueError, each naming the argument and the range. Taken as it was, a
    request_timeout of 0 or less failed every call as a ConnectionFailed, as if the API
    were down, a NaN one failed in httpx, and a NaN wait timeout never ran out."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # an int past any float: no finite time either
        seconds = math.copysign(math.inf, value)
    not_too_small = seconds >= 0 if zero else seconds > 0  # NaN is neither
    if not (not_too_small and (unlimited or math.isfinite(seconds))):
        kind = ("non-negative" if zero else "positive") + ("" if unlimited else " finite")
        no_limit = " (inf: no limit)" if unlimited else ""
        raise ValueError(f"{name} must be a {kind} number of seconds{no_limit}, not {value!r}")
    return seconds


NOT_A_HEADER_VALUE = (
    "holds a character a request header cannot carry"
    " (a line break or another control character, or one outside ASCII)"
)


def sendable_token(token: str) -> bool:
    return token.isascii() and token.isprintable()


def _never_tls(base_url: str) -> bool:
    """A client of an http:// API sends to that URL only (relative paths, no redirects
    followed), so it never makes a TLS handshake unless a proxy is reached over https."""
    from urllib.request import getproxies  # loaded by httpx already

    proxied_over_tls = any(url.lower().startswith("https:") for url in getproxies().values())
    return base_url.lower().startswith("http://") and not proxied_over_tls


def _context_trusting_no_ca() -> ssl.SSLContext:
    """Verifies certificates and host names like the default context but trusts no CA: any
    handshake through it fails, none passes unverified. It spares loading the CA bundle,
    about 20 ms of every `taskforge-cli` run against an http:// API."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def default_user_agent() -> str:
    return f"taskforge-python/{taskforge_version()}"


def job_body(
    job_type: str, payload: Mapping[str, Any] | None = None, **options: Any
) -> dict[str, Any]:
    """The JSON body of one job; an unknown option is a TypeError, before anything is sent."""
    _refuse_unknown("enqueue option", options, _BODY_NAMES)
    body: dict[str, Any] = {"jobType": job_type, "payload": json_payload(payload)}
    for name, value in options.items():
        if value is not None:
            body[_BODY_NAMES[name]] = _json_option(value)
    body.setdefault("idempotencyKey", GENERATED_KEY_PREFIX + uuid.uuid4().hex)
    return body


def _json_option(value: Any) -> Any:
    """An option as the API's JSON takes it: a datetime as ISO text, a timedelta as seconds."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def enqueue(
    job_type: str, payload: Mapping[str, Any] | None, options: EnqueueOptions
) -> Call[values.Job]:
    """201 with a new job, or 200 with the one stored earlier under the same key (or holding
    the unique key): that job, its `conflict` set."""
    body = job_body(job_type, payload, **options)
    request = Request(
        "POST", "/jobs", body=body, retry=True, made_up_keys=_made_up_keys([options], [body])
    )
    return Call(request, lambda answer: _enqueued(answer, request))


def _made_up_keys(
    specs: Iterable[Mapping[str, Any]], bodies: Iterable[Mapping[str, Any]]
) -> frozenset[str]:
    """The keys job_body made up for the jobs whose spec gave none."""
    return frozenset(
        body["idempotencyKey"]
        for spec, body in zip(specs, bodies, strict=True)
        if spec.get("idempotency_key") is None
    )


def _enqueued(answer: Response, request: Request) -> values.Job:
    """The job `POST /jobs` answered, a conflict when the API found it stored (200) and it
    does not hold the key this call made up (see Request.made_up_keys)."""
    key = answer.data.get("idempotencyKey") if isinstance(answer.data, dict) else None
    conflict = answer.status == 200 and key not in request.made_up_keys
    return values.job_of(answer.data, conflict=conflict)


def enqueue_chunks(jobs: Iterable[JobSpec]) -> list[Call[list[values.BatchItem]]]:
    """`POST /jobs/batch` requests of at most BATCH_LIMIT jobs each, every body built (and
    so every spec checked) before the first is sent. A spec is refused as
    `taskforge.enqueue_many` refuses it: an unknown key (`jobType`) is a TypeError naming
    it, a missing job_type a ValidationError naming `jobs[i].job_type`."""
    refuse_a_single_job(jobs)
    specs, bodies = [], []
    for index, spec in enumerate(jobs):
        refuse_non_mapping(spec, index)
        _refuse_unknown("enqueue option", spec, _SPEC_KEYS)
        if spec.get("job_type") is None:
            raise _input_error("job_type", "must be a string", index)
        try:
            bodies.append(job_body(**spec))
        except ValidationError as exc:  # named as the API names it in a batch
            raise _input_error("payload", exc.message.removeprefix("payload: "), index) from None
        specs.append(spec)
    made_up = _made_up_keys(specs, bodies)
    return [
        _batch(bodies[first : first + BATCH_LIMIT], first, made_up)
        for first in range(0, len(bodies), BATCH_LIMIT)
    ]


def _batch(
    bodies: list[dict[str, Any]], first_index: int, made_up_keys: frozenset[str]
) -> Call[list[values.BatchItem]]:
    request = Request(
        "POST",
        "/jobs/batch",
        body={"jobs": bodies},
        retry=True,
        first_index=first_index,
        made_up_keys=made_up_keys,
    )
    return Call(request, lambda answer: _batch_items(answer, request))


def _batch_items(answer: Response, request: Request) -> list[values.BatchItem]:
    """The items of a batch's answer. An item `existing` under a key this call made up, its
    job holding no unique key, names the job an earlier try of this call stored (see
    Request.made_up_keys): `created` by the call."""
    items = [
        {**item, "status": "created"} if _stored_by_earlier_try(body, item, request) else item
        for body, item in zip(request.body["jobs"], answer.data["items"], strict=True)
    ]
    return values.batch_items_of({"items": items})


def _stored_by_earlier_try(body: Mapping[str, Any], item: Any, request: Request) -> bool:
    return (
        bool(request.made_up_keys)
        and isinstance(item, dict)
        and item.get("status") == "existing"
        and "uniqueKey" not in body
        and body["idempotencyKey"] in request.made_up_keys
    )


def halves_of_too_large(
    refusal: ClientError, call: Call[list[values.BatchItem]]
) -> list[Call[list[values.BatchItem]]]:
    """A batch the API refused as over its body limit (413, MAX_PAYLOAD_BYTES: nothing of it
    stored) as two batches of half its jobs each, in order. Another refusal, or one job
    alone too large, is raised."""
    bodies = call.request.body["jobs"]
    if refusal.status != 413 or len(bodies) < 2:
        raise refusal
    middle, first = len(bodies) // 2, call.request.first_index
    made_up = call.request.made_up_keys
    return [
        _batch(bodies[:middle], first, made_up),
        _batch(bodies[middle:], first + middle, made_up),
    ]


def get_job(job_id: UUID | str) -> Call[values.Job]:
    return Call(Request("GET", f"/jobs/{_id(job_id)}"), _job)


def list_jobs(
    *,
    queue: str | None = None,
    status: JobState | str | None = None,
    limit: int | None = None,
    offset: int | None = None,
) -> Call[values.JobPage]:
    params = _params(status=status, limit=limit, offset=offset)
    path = "/jobs" if queue is None else f"/queues/{_segment(queue, 'queue')}/jobs"
    return Call(Request("GET", path, params=params), lambda answer: values.job_page_of(answer.data))


def cancel_job(job_id: UUID | str, reason: str | None = None) -> Call[values.Job]:
    return Call(Request("POST", f"/jobs/{_id(job_id)}/cancel", body=_reason(reason)), _job)


def retry_job(job_id: UUID | str) -> Call[values.Job]:
    return Call(Request("POST", f"/jobs/{_id(job_id)}/retry"), _job)


def dead_letter_job(job_id: UUID | str, reason: str | None = None) -> Call[values.Job]:
    return Call(Request("POST", f"/jobs/{_id(job_id)}/dlq", body=_reason(reason)), _job)


def replay_job(job_id: UUID | str) -> Call[values.Job]:
    return Call(Request("POST", f"/dlq/{_id(job_id)}/replay"), _job)


def list_dead_letters(
    *, limit: int | None = None, offset: int | None = None
) -> Call[values.DeadLetterPage]:
    request = Request("GET", "/dlq", params=_params(limit=limit, offset=offset))
    return Call(request, lambda answer: values.dead_letter_page_of(answer.data))


def get_dead_letter(job_id: UUID | str) -> Call[values.DeadLetter]:
    return Call(
        Request("GET", f"/dlq/{_id(job_id)}"), lambda answer: values.dead_letter_of(answer.data)
    )


def get_stats() -> Call[values.Stats]:
    return Call(Request("GET", "/stats"), lambda answer: values.stats_of(answer.data))


def list_queues() -> Call[list[values.QueueInfo]]:
    return Call(Request("GET", "/queues"), lambda answer: values.queues_of(answer.data))


def list_workers() -> Call[list[values.WorkerInfo]]:
    return Call(Request("GET", "/workers"), lambda answer: values.workers_of(answer.data))


def pause_queue(queue: str) -> Call[values.QueueInfo]:
    """Idempotent, so safe to send again."""
    return Call(
        Request("POST", f"/queues/{_segment(queue, 'queue')}/pause", retry=True),
        lambda answer: values.queue_of(answer.data),
    )


def resume_queue(queue: str) -> Call[values.QueueInfo]:
    """Idempotent, so safe to send again."""
    return Call(
        Request("POST", f"/queues/{_segment(queue, 'queue')}/resume", retry=True),
        lambda answer: values.queue_of(answer.data),
    )


def add_schedule(
    name: str, cron: str, job_type: str, options: ScheduleOptions
) -> Call[tuple[values.Schedule, bool]]:
    """Create the schedule, or replace the one of that name (the flag: created). Saving the
    same schedule twice changes nothing, so it is safe to send again."""
    _refuse_unknown("schedule option", options, _SCHEDULE_BODY_NAMES)
    body: dict[str, Any] = {"name": name, "cron": cron, "jobType": job_type}
    for option, value in options.items():
        if value is not None:
            body[_SCHEDULE_BODY_NAMES[option]] = value
    if "payload" in body:
        body["payload"] = json_payload(body["payload"])
    return Call(
        Request("POST", "/schedules", body=body, retry=True),
        lambda answer: (values.schedule_of(answer.data), answer.status == 201),
    )


def list_schedules() -> Call[list[values.Schedule]]:
    return Call(Request("GET", "/schedules"), lambda answer: values.schedules_of(answer.data))


def get_schedule(name: str) -> Call[values.Schedule]:
    return Call(_schedule_request("GET", name), _schedule)


def delete_schedule(name: str) -> Call[None]:
    return Call(_schedule_request("DELETE", name), lambda answer: None)


def pause_schedule(name: str) -> Call[values.Schedule]:
    """Idempotent, so safe to send again."""
    return Call(_schedule_request("POST", name, "/pause", retry=True), _schedule)


def resume_schedule(name: str) -> Call[values.Schedule]:
    """Idempotent, so safe to send again."""
    return Call(_schedule_request("POST", name, "/resume", retry=True), _schedule)


def _schedule_request(method: str, name: str, action: str = "", retry: bool = False) -> Request:
    path = f"/schedules/{_segment(name, 'name')}{action}"
    return Request(method, path, retry=retry, not_found=ScheduleNotFound)


def _schedule(answer: Response) -> values.Schedule:
    return values.schedule_of(answer.data)


def get_health() -> Call[Any]:
    return Call(Request("GET", "/healthz"), lambda answer: answer.data)


def get_readiness() -> Call[Any]:
    """Answers the 503 too: a service that is not ready still names its failing checks."""
    return Call(Request("GET", "/readyz", accept=frozenset({503})), lambda answer: answer.data)


def answer_of(response: httpx.Response, request: Request) -> Response:
    """The accepted answer, or the typed error for any other; `response` has been read.
    A 204 (no content) answers None."""
    request_id = response.headers.get(REQUEST_ID_HEADER)
    where = f"{request.method} {request.path}"
    if response.status_code == 204:
        return Response(204, "", None, request_id)
    if response.is_success or response.status_code in request.accept:
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InvalidResponse(
                "invalid_response",
                f"{where} answered {response.status_code} with a body that is not JSON",
                status=response.status_code,
                request_id=request_id,
            ) from None
        return Response(response.status_code, response.text, data, request_id)
    raise _counted_in_call(error_of(response, where, request.not_found), request.first_index)


def _counted_in_call(error: ClientError, first_index: int) -> ClientError:
    """A batch request's ValidationError naming `jobs[i]` (its field, its message, its
    `index`) as the call's `jobs[first_index + i]`, as the call's own checks name a job."""
    details = error.details
    if not (first_index and isinstance(error, ValidationError) and isinstance(details, dict)):
        return error
    index = details.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        return error
    was, now = f"jobs[{index}]", f"jobs[{first_index + index}]"
    details = {**details, "index": first_index + index}
    if isinstance(field := details.get("field"), str):
        details["field"] = field.replace(was, now, 1)
    return ValidationError(
        error.code,
        error.message.replace(was, now, 1),
        details=details,
        status=error.status,
        request_id=error.request_id,
    )


_ERROR_TYPES: Mapping[int, type[ClientError]] = {
    400: ValidationError,
    401: Unauthorized,
    404: JobNotFound,
    409: InvalidTransition,
    413: ValidationError,
    **{status: Unavailable for status in RETRYABLE_STATUSES},
}


def error_of(
    response: httpx.Response, where: str, not_found: type[ClientError] = JobNotFound
) -> ClientError:
    """The API's `{code, message, details}` as its typed error (`not_found` for a 404).

    Without that body the answer is not the API's (another server or a proxy on its
    address): a status whose type says what the API decided (not found, conflict, invalid,
    unauthorized) is an InvalidResponse; 429, 502, 503 and 504 stay Unavailable, since a
    gateway answers them when it cannot reach the API; any other gets `http_<status>`."""
    status = response.status_code
    error_type = not_found if status == 404 else _ERROR_TYPES.get(status, ClientError)
    request_id = response.headers.get(REQUEST_ID_HEADER)
    reason = response.reason_phrase or "unexpected answer"
    body = _api_error_body(response)
    if body is not None:
        error = error_type(
            body["code"],
            body["message"],
            details=body.get("details"),
            status=status,
            request_id=request_id,
        )
    elif error_type is ClientError or issubclass(error_type, Unavailable):
        error = error_type(
            f"http_{status}", f"{where}: {reason}", status=status, request_id=request_id
        )
    else:
        error = InvalidResponse(
            "invalid_response",
            f"{where} answered {status} ({reason}) with a body that is not the API's error",
            status=status,
            request_id=request_id,
        )
    if isinstance(error, Unavailable):
        error.retry_after = _retry_after(response.headers.get("Retry-After"))
    return error


def _api_error_body(response: httpx.Response) -> dict[str, Any] | None:
    """The answer's body when it is the API's error: a JSON object whose `code` and
    `message` are strings (`details` may be left out); else None."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if isinstance(body, dict) and all(
        isinstance(body.get(key), str) for key in ("code", "message")
    ):
        return body
    return None


def connection_failed(exc: httpx.TransportError, base_url: str, timeout: float) -> ConnectionFailed:
    """The error of a call that got no answer, naming where it went (a password in the base
    URL masked: the message ends up in logs)."""
    base_url = _without_password(base_url)
    if isinstance(exc, httpx.TimeoutException):
        return ConnectionFailed("timeout", f"no answer from {base_url} within {timeout:g}s")
    if isinstance(exc, httpx.ConnectError):
        return ConnectionFailed(
            "connection_failed", f"cannot connect to {base_url}: {_os_reason(exc)}"
        )
    return ConnectionFailed("connection_failed", f"request to {base_url} failed: {_os_reason(exc)}")


def _without_password(base_url: str) -> str:
    url = httpx.URL(base_url)  # parsed once already: check_base_url
    if not url.password:
        return base_url
    return str(url.copy_with(username=url.username, password=_MASK))


_MASK = "***"


def closed_client() -> ClientClosed:
    return ClientClosed("client_closed", "the client is closed; nothing was sent")


def undecodable(exc: httpx.DecodingError, request: Request) -> InvalidResponse:
    """An answer whose body its own Content-Encoding cannot decode: not the API's (a proxy
    labelling its page gzip), so an InvalidResponse rather than httpx's DecodingError."""
    return InvalidResponse(
        "invalid_response",
        f"{request.method} {request.path} answered with a body that cannot be decoded: {exc}",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How retryable calls (enqueues) ride out an unavailable API: up to `attempts` tries,
    waiting `initial_delay * 2 ** (n - 1)` seconds, at most `max_delay`, before try n + 1;
    a longer Retry-After from the API is honoured up to `max_delay`.

    Checked when made, as a client's request_timeout is: `attempts` a whole number of at
    least 1 (a NaN or infinite count never ran out: an enqueue, or a wait, on an API that
    stays away went on for ever), each delay a non-negative finite number of seconds (an
    infinite `max_delay` capped nothing: a Retry-After of a day was slept for a day)."""

    attempts: int = 6
    initial_delay: float = 0.2
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise TypeError(f"attempts must be a whole number, not {type(self.attempts).__name__}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        seconds_of("initial_delay", self.initial_delay, zero=True)
        seconds_of("max_delay", self.max_delay, zero=True)
        if self.initial_delay > self.max_delay:
            raise ValueError("need 0 <= initial_delay <= max_delay")

    def delay_after(self, failure: ClientError, request: Request, tries: int) -> float | None:
        """Seconds to wait before the next try after `tries` failed ones, or None to give up
        and raise `failure`."""
        if not (request.retry and isinstance(failure, Unavailable)) or tries >= self.attempts:
            return None
        # The doubling stops once it is past any cap (2.0 ** 1024 overflows a float).
        delay: float = min(self.max_delay, self.initial_delay * 2.0 ** min(tries - 1, 64))
        if failure.retry_after is not None:
            delay = max(delay, min(self.max_delay, failure.retry_after))
        return delay


def retry_policy_of(policy: RetryPolicy | None) -> RetryPolicy:
    """A client's `retry_policy=`: None is the default policy; anything but a RetryPolicy
    is a TypeError when the client is built, not a failure at its first retry."""
    if policy is None:
        return RetryPolicy()
    if not isinstance(policy, RetryPolicy):
        raise TypeError(f"retry_policy must be a RetryPolicy or None, not {type(policy).__name__}")
    return policy


@dataclass(slots=True)
class PollSchedule:
    """`wait`'s polls: first after `first` seconds, each gap `factor` times the last, at
    most `longest`, never past the deadline (`timeout` None: no deadline)."""

    started: float
    timeout: float | None
    first: float = 0.05
    factor: float = 1.5
    longest: float = 1.0
    _gap: float = field(default=0.0, init=False)

    def next_delay(self, now: float) -> float | None:
        """Seconds until the next poll, or None once the deadline has passed."""
        self._gap = self.first if self._gap == 0 else min(self.longest, self._gap * self.factor)
        left = self.left(now)
        if left is None:
            return self._gap
        return None if left <= 0 else min(self._gap, left)

    def left(self, now: float) -> float | None:
        """Seconds until the deadline (None: no deadline)."""
        return None if self.timeout is None else self.started + self.timeout - now


SHORTEST_POLL = 1.0
"""The least time a poll of `wait` is given (the request_timeout when that is shorter),
however little of the wait's timeout is left: see JobWait.poll_timeout."""


@dataclass(slots=True)
class JobWait:
    """One `wait` for a job, without I/O: how long each poll may take, what its answer or
    its failure means, and how long to sleep before the next. Polls the API did not answer
    (Unavailable: a restart, a proxy's 502, no answer in time) are polled again, up to
    `attempts` (the retry policy's) in a row.

    `timeout` None or infinity is no limit, and 0 reads the job once. Negative or NaN is a
    ValueError, a non-number a TypeError (seconds_of), raised when the wait is made, so
    before its first request: a negative timeout was a poll given no time, failing as
    though the API were down, and a NaN one never ran out."""

    job_id: UUID | str
    timeout: float | None
    started: float
    request_timeout: float
    attempts: int
    job: values.Job | None = None
    """The job as last read (None: not read yet)."""
    schedule: PollSchedule = field(init=False)
    _failed_in_a_row: int = field(default=0, init=False)
    _last_failure: Unavailable | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.timeout is not None:
            self.timeout = seconds_of("timeout", self.timeout, zero=True, unlimited=True)
        self.schedule = PollSchedule(self.started, self.timeout)

    def poll_timeout(self, now: float) -> float:
        """How long the next poll may take: what is left of the wait, at most the request
        timeout, yet at least SHORTEST_POLL (or the request timeout, if shorter). Given
        only what is left, the poll of a timeout of 0 and the last poll of any wait (made
        at its deadline) had no time at all: each failed before reaching the API, and the
        wait reported it as the API's failure, or "still RUNNING" of a job that had
        finished. So a wait on an API that does not answer ends up to SHORTEST_POLL past
        its timeout."""
        left = self.schedule.left(now)
        if left is None:
            return self.request_timeout
        return min(self.request_timeout, max(left, SHORTEST_POLL))

    def answered(self, job: values.Job) -> bool:
        """Note the job read; whether it is SUCCEEDED, DLQ or CANCELLED (the wait is over)."""
        self.job = job
        self._failed_in_a_row = 0
        return job.terminal

    def failed(self, failure: Unavailable) -> None:
        """Note `failure`; raise it once as many polls in a row have failed as an enqueue
        would try."""
        self._failed_in_a_row += 1
        self._last_failure = failure
        if self._failed_in_a_row >= self.attempts:
            raise failure

    def next_delay(self, now: float) -> float:
        """Seconds to sleep before the next poll; past the deadline raise WaitTimeout: the
        job's last state read, or (never read) the last failure."""
        delay = self.schedule.next_delay(now)
        if delay is not None:
            return delay
        if self.job is None:
            last = self._last_failure
            reason = last.message if last is not None else "no answer"
            raise WaitTimeout(
                "wait_timeout",
                f"job {self.job_id} not read within {self.timeout:g}s: {reason}",
                details={"jobId": str(self.job_id)},
            )
        raise WaitTimeout(
            "wait_timeout",
            f"job {self.job.id} still {self.job.state} after {self.timeout:g}s",
            details={"jobId": str(self.job.id), "state": str(self.job.state)},
        )


def result_of(job: values.Job) -> Any:
    """`result`'s answer for the finished job `wait` returned: the result a SUCCEEDED job
    stored (None for none); for a job in DLQ or CANCELLED, JobFailed naming its state, its
    reason and its last error."""
    if job.state == JobState.SUCCEEDED:
        return job.result
    reason = f" ({job.reason})" if job.reason else ""
    last_error = f"last error: {job.last_error}" if job.last_error else "no error recorded"
    raise JobFailed(
        "job_failed",
        f"job {job.id} ended {job.state}{reason}; {last_error}",
        job=job,
        details={
            "jobId": str(job.id),
            "state": str(job.state),
            "reason": job.reason,
            "lastError": job.last_error,
        },
    )


def _job(answer: Response) -> values.Job:
    return values.job_of(answer.data)


def _id(job_id: UUID | str) -> str:
    """A job id as the path needs it; not a UUID is a ValidationError, sent nowhere."""
    try:
        return str(job_id if isinstance(job_id, UUID) else UUID(str(job_id)))
    except ValueError:
        raise ValidationError(
            "validation_error", _not_an_id(job_id), details={"field": "id"}
        ) from None


def _not_an_id(given: object) -> str:
    """Why `given` is no job id. What is not text is named by its type, not printed (a Job
    would print its whole payload); a value that holds its job's id says which field."""
    if isinstance(given, str):
        return f"job id {given!r} is not a UUID"
    kind = type(given).__name__
    for name in ("id", "job_id"):  # a Job or BatchItem; a DeadLetter
        if isinstance(getattr(given, name, None), UUID):
            return f"job id must be a UUID or its text, not a {kind}: pass its .{name}"
    return f"job id must be a UUID or its text, not {kind}"


def _segment(name: str, field: str) -> str:
    """A queue's or a schedule's name as one path segment. `.` and `..` are names too (letters,
    digits and `_ - . :`), but as a segment they would be resolved away (`/queues/../jobs`
    is `/jobs`): their dots are sent escaped, which the API reads back as the name. An
    empty name would address another route (`/queues//pause`): it is a ValidationError
    naming `field`, as the API's for an empty name in a body, sent nowhere."""
    if not name:
        raise _input_error(field, "must be 1-128 characters of letters, digits and _ - . :")
    segment = quote(name, safe="")
    return segment.replace(".", "%2E") if segment in {".", ".."} else segment


def json_payload(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """The payload as the JSON values it is sent as (json_values), checked as the API checks
    it: an object, no NUL character and no NaN or infinite number, wherever they sit.
    Anything else is a ValidationError naming the payload."""
    from taskforge.domain.errors import ValidationError as Refused
    from taskforge.domain.validation import validate_payload

    try:
        return validate_payload(json_values(payload))
    except Refused as exc:
        raise _input_error("payload", exc.message) from None


def json_values(payload: object) -> Any:
    """`payload` as JSON values, one rule for the clients and `taskforge.enqueue`, converted
    by msgspec: a datetime, date or UUID as its ISO text, a Decimal as its digits, bytes as
    base64, a set or tuple as an array, a dataclass or Struct (or a mapping at the top) as
    an object, a key that is a number as its text (msgspec's spelling: a NaN key is "nan").
    None is `{}`. A value with no JSON text (a tuple as a key, an object msgspec cannot
    write, a lone surrogate, an int too long to write, nesting deeper than the encoder
    goes) is a ValidationError naming the payload, raised here: before any job of a batch
    is sent or stored. What the values hold (NUL, NaN) is not checked here."""
    if payload is None:
        return {}
    import msgspec  # with the first payload: the client starts without it

    if type(payload) is not dict and isinstance(payload, Mapping):
        payload = dict(payload)  # a mappingproxy, a ChainMap: msgspec takes dicts only
    try:
        converted = msgspec.to_builtins(payload, str_keys=True)
        msgspec.json.encode(converted)  # what only writing it finds
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError) as exc:
        raise _input_error("payload", f"must be JSON: {exc}") from None
    return converted


def refuse_a_single_job(jobs: object) -> None:
    """enqueue_many given one job (a mapping), or text, where an iterable of jobs goes: a
    TypeError saying so, rather than one about the first key or character."""
    if isinstance(jobs, Mapping | str | bytes):
        raise TypeError(
            f"enqueue_many takes an iterable of jobs, such as a list of mappings of enqueue's "
            f"arguments, not a {type(jobs).__name__}: for one job, call enqueue"
        )


def refuse_non_mapping(spec: object, index: int) -> None:
    """A job of enqueue_many (the clients' and the transactional one) that is no mapping of
    enqueue's arguments is a TypeError saying so, before anything is sent or written."""
    if type(spec) is not dict and not isinstance(spec, Mapping):
        raise TypeError(
            f"jobs[{index}] is a {type(spec).__name__}: each job is a mapping of enqueue's"
            " arguments, such as {'job_type': 'email', 'payload': {...}}"
        )


def _refuse_unknown(what: str, options: Iterable[str], known: Iterable[str]) -> None:
    """An option the call does not know is a TypeError naming it, as Python's for an
    unknown keyword argument, before anything is sent."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise unknown_options(what, unknown)


SPELLED_ELSEWHERE = {
    "countdown": "delay, in seconds",
    "eta": "run_at",
    "_defer_by": "delay, in seconds",
    "_defer_until": "run_at",
    "defer_by": "delay, in seconds",
    "enqueue_in": "delay, in seconds",
    "max_retries": "max_attempts, which counts the first run too: max_retries + 1",
    "max_tries": "max_attempts",
    "time_limit": "timeout, in seconds",
    "soft_time_limit": "timeout, in seconds",
    "job_timeout": "timeout, in seconds",
    "_job_id": "idempotency_key",
    "job_id": "idempotency_key",
    "jobType": "job_type",
    "maxAttempts": "max_attempts",
    "runAt": "run_at",
    "idempotencyKey": "idempotency_key",
    "uniqueKey": "unique_key",
    "visibilityTimeout": "visibility_timeout",
    "initialDelay": "initial_delay",
    "maxDelay": "max_delay",
}
"""Enqueue options as Celery, RQ, arq, Dramatiq or the HTTP API spell them, with TaskForge's
name for each: an unknown option's error says which one was meant."""


def unknown_options(what: str, unknown: Sequence[str]) -> TypeError:
    """The TypeError for options a call does not know, each with TaskForge's own name for it
    where another queue's or the HTTP API's spelling was used (`countdown`: use delay)."""
    named = [
        f"{name} (use {SPELLED_ELSEWHERE[name]})" if name in SPELLED_ELSEWHERE else name
        for name in unknown
    ]
    return TypeError(f"unknown {what}(s): {', '.join(named)}")


def _input_error(field: str, message: str, index: int | None = None) -> ValidationError:
    """The API's 400 for the same input: in a batch, `jobs[i].<field>` and the index."""
    if index is None:
        return ValidationError("validation_error", f"{field}: {message}", details={"field": field})
    field = f"jobs[{index}].{field}"
    return ValidationError(
        "validation_error", f"{field}: {message}", details={"field": field, "index": index}
    )


def _params(**fields: object) -> dict[str, str]:
    return {name: str(value) for name, value in fields.items() if value is not None}


def _reason(reason: str | None) -> dict[str, str] | None:
    return {"reason": reason} if reason is not None else None


def _retry_after(header: str | None) -> float | None:
    """Retry-After in seconds (the form the API sends); an HTTP date is ignored."""
    try:
        return max(0.0, float(header)) if header else None
    except ValueError:
        return None


def _os_reason(exc: httpx.TransportError) -> str:
    """The OS-level explanation ("connection refused") beneath httpx's wrapping, if any."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__
