"""The clients' sans-IO core and retry loop, without a server: request bodies, the error
mapping, the backoff and poll schedules, and retries over a scripted transport."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import re
import socket
import ssl
import time
import typing
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any
from uuid import UUID

import httpx
import msgspec
import pytest

from taskforge.client import (
    Client,
    ClientClosed,
    ClientError,
    ConnectionFailed,
    InvalidResponse,
    InvalidTransition,
    JobFailed,
    JobNotFound,
    RetryPolicy,
    SyncClient,
    Unauthorized,
    Unavailable,
    ValidationError,
    WaitTimeout,
    core,
)
from taskforge.domain.states import JobState

README = Path(__file__).resolve().parents[2] / "README.md"
JOB_ID = "7b5b4f8e-2a7d-4e6f-9d5b-3a6b7f9a0c12"
JOB: dict[str, Any] = {
    "id": JOB_ID, "queue": "jobs:ready", "jobType": "email",
    "payload": {"toAddress": "a@b.com"}, "state": "PENDING", "idempotencyKey": "k",
    "attemptCount": 0, "retryCount": 0, "maxAttempts": 3, "initialDelay": 1.0, "backoff": 2.0,
    "maxDelay": 300.0, "jitter": False, "visibilityTimeout": 30.0, "timeout": 0.0,
    "nextRunAt": "2026-01-02T03:04:05Z", "lastError": None, "reason": None,
    "leaseOwner": None, "leaseExpiresAt": None, "createdAt": "2026-01-02T03:04:05Z",
    "updatedAt": "2026-01-02T03:04:05Z", "startedAt": None, "finishedAt": None,
    "errors": [{"attempt": 1, "at": "2026-01-02T03:04:06Z", "error": "boom",
                "traceback": None}],
    "someFieldANewerApiAdds": 1,
}  # fmt: skip
NO_WAIT = RetryPolicy(attempts=3, initial_delay=0.0, max_delay=0.0)


def test_an_enqueue_without_a_key_gets_a_fresh_one_and_keeps_a_given_one() -> None:
    first = core.job_body("email")
    second = core.job_body("email")
    assert first["idempotencyKey"].startswith("tf-")
    assert first["idempotencyKey"] != second["idempotencyKey"]
    assert core.job_body("email", idempotency_key="mine")["idempotencyKey"] == "mine"


def test_enqueue_options_are_sent_under_the_apis_names() -> None:
    body = core.job_body(
        "email", {"to": "a@b.com"}, queue="mail", max_attempts=5, initial_delay=2.0,
        backoff=3.0, max_delay=60.0, jitter=True, visibility_timeout=45.0, timeout=12.5,
        run_at=datetime(2099, 1, 2, 3, 4, 5), idempotency_key="k", delay=None,
    )  # fmt: skip
    assert body == {
        "jobType": "email", "payload": {"to": "a@b.com"}, "queue": "mail", "maxAttempts": 5,
        "initialDelay": 2.0, "backoff": 3.0, "maxDelay": 60.0, "jitter": True,
        "visibilityTimeout": 45.0, "timeout": 12.5, "runAt": "2099-01-02T03:04:05",
        "idempotencyKey": "k",
    }  # fmt: skip


def test_a_delay_may_be_a_timedelta_and_is_sent_as_seconds() -> None:
    assert core.job_body("email", delay=timedelta(minutes=5, milliseconds=250))["delay"] == 300.25
    assert core.job_body("email", delay=90)["delay"] == 90


def test_an_unknown_enqueue_option_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(TypeError, match="priorty"):
        core.job_body("email", priorty=1)


@pytest.mark.parametrize(
    ("option", "hint"),
    [
        ("countdown", "countdown (use delay, in seconds)"),  # Celery
        ("eta", "eta (use run_at)"),
        ("max_retries", "max_retries (use max_attempts, which counts the first run too"),
        ("_defer_by", "_defer_by (use delay, in seconds)"),  # arq
        ("_job_id", "_job_id (use idempotency_key)"),
        ("time_limit", "time_limit (use timeout, in seconds)"),  # Dramatiq, Celery
        ("maxAttempts", "maxAttempts (use max_attempts)"),  # the HTTP API's spelling
    ],
)
def test_an_option_spelled_as_another_queue_spells_it_names_taskforges(
    option: str, hint: str
) -> None:
    with pytest.raises(TypeError, match=re.escape(f"unknown enqueue option(s): {hint}")):
        core.job_body("email", None, **{option: 1})


class Point(msgspec.Struct):
    x: int
    label: str


@dataclasses.dataclass
class Reading:
    value: float


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def test_a_schedules_payload_is_converted_and_checked_as_a_jobs() -> None:
    at = datetime(2026, 1, 2, tzinfo=UTC)
    body = core.add_schedule("nightly", "@daily", "report", {"payload": {"at": at}}).request.body
    assert body["payload"] == {"at": "2026-01-02T00:00:00Z"}
    with pytest.raises(ValidationError, match="payload: must not contain NaN"):
        core.add_schedule("nightly", "@daily", "report", {"payload": {"x": float("nan")}})


def test_a_payload_is_sent_as_the_json_taskforge_enqueue_would_store() -> None:
    # One rule for both producers: what msgspec writes for the transactional enqueue.
    payload = {
        "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "day": date(2026, 1, 2),
        "id": UUID(JOB_ID), "amount": Decimal("12.50"), "raw": b"\x00\x01", "tags": {"a"},
        "pair": (1, 2.5), "point": Point(1, "p"), "nested": [{"ok": None}], "by_id": {7: "a"},
    }  # fmt: skip

    sent = json.dumps(core.job_body("email", payload)["payload"])  # as httpx sends it
    proxied = core.job_body("email", MappingProxyType(payload))["payload"]

    assert json.loads(sent) == msgspec.json.decode(msgspec.json.encode(payload))
    assert json.dumps(proxied) == sent


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"x": object()}, "payload: must be JSON: "),
        ({"x": float("nan")}, "payload: must not contain NaN or infinite numbers"),
        ({"point": Point(1, "a\x00")}, "payload: must not contain NUL characters"),
        ({"reading": Reading(float("inf"))}, "payload: must not contain NaN or infinite"),
        ({"pair": {(1, 2): "one"}}, "payload: must be JSON: "),
        # Found only by writing the text: refused before any job of a batch is sent.
        ({"text": "\ud800"}, "payload: must be JSON: "),
        ({"n": 10**5000}, "payload: must be JSON: "),
        ({"deep": nested(3000)}, "payload: must be JSON: "),
        ([("a", 1)], "payload: must be a JSON object"),
    ],
)
def test_a_payload_that_is_not_a_json_object_is_a_validation_error_naming_it(
    payload: Any, message: str
) -> None:
    with pytest.raises(ValidationError) as one:
        core.job_body("email", payload)
    with pytest.raises(ValidationError) as batched:
        core.enqueue_chunks([{"job_type": "noop"}, {"job_type": "noop", "payload": payload}])

    assert one.value.message.startswith(message), one.value.message
    assert one.value.details == {"field": "payload"}
    assert batched.value.message.startswith(f"jobs[1].{message}"), batched.value.message
    assert batched.value.details == {"field": "jobs[1].payload", "index": 1}  # as the API


SPECS_REFUSED = {
    "no job_type": [{"payload": {}}],
    "a job_type of None, after a good job": [{"job_type": "noop"}, {"job_type": None}],
    "the API's camelCase name": [{"jobType": "noop"}],
    "a misspelt option": [{"job_type": "noop"}, {"job_type": "noop", "priorty": 1}],
    "a job type alone, not a mapping": [{"job_type": "noop"}, "noop"],
    "pairs, not a mapping": [[("job_type", "noop")]],
}


@pytest.mark.parametrize("specs", SPECS_REFUSED.values(), ids=SPECS_REFUSED.keys())
def test_enqueue_many_refuses_a_job_spec_as_the_transactional_enqueue_many_does(
    specs: list[Any],
) -> None:
    import taskforge

    no_connection: Any = object()  # every job is checked before the connection is used
    with pytest.raises((ValidationError, TypeError)) as stored:
        taskforge.enqueue_many(no_connection, specs)
    with pytest.raises(type(stored.value)) as sent:
        core.enqueue_chunks(specs)

    assert str(sent.value) == str(stored.value)
    assert getattr(sent.value, "details", None) == getattr(stored.value, "details", None)


def test_a_job_spec_without_a_job_type_is_a_validation_error_naming_it() -> None:
    specs: list[Any] = [{"job_type": "noop"}, {"payload": {"to": "a@b.com"}}]
    with pytest.raises(ValidationError) as refused:
        core.enqueue_chunks(specs)

    assert refused.value.message == "jobs[1].job_type: must be a string"
    assert refused.value.details == {"field": "jobs[1].job_type", "index": 1}


def test_a_job_spec_with_an_unknown_key_is_a_type_error_naming_it() -> None:
    specs: list[Any] = [{"jobType": "noop", "payload": {}}]
    with pytest.raises(TypeError, match=r"^unknown enqueue option\(s\): jobType \(use job_type\)$"):
        core.enqueue_chunks(specs)


def test_enqueue_many_sends_chunks_of_the_batch_limit_each_job_with_its_own_key() -> None:
    calls = core.enqueue_chunks({"job_type": "noop"} for _ in range(2 * core.BATCH_LIMIT + 1))
    chunks = [call.request.body["jobs"] for call in calls]
    assert [len(chunk) for chunk in chunks] == [1000, 1000, 1]
    keys = {job["idempotencyKey"] for chunk in chunks for job in chunk}
    assert len(keys) == 2 * core.BATCH_LIMIT + 1
    assert all(call.request.retry for call in calls)


def test_a_job_that_is_not_a_mapping_is_a_type_error_saying_so() -> None:
    with pytest.raises(TypeError, match=r"^jobs\[1\] is a str: each job is a mapping of"):
        core.enqueue_chunks([{"job_type": "noop"}, "noop"])  # type: ignore[list-item]


@pytest.mark.parametrize("jobs", [{"job_type": "noop"}, "noop"], ids=["one job", "text"])
def test_one_job_given_for_a_list_of_them_is_a_type_error_saying_so(jobs: Any) -> None:
    with pytest.raises(TypeError, match=r"^enqueue_many takes an iterable of jobs.*: for one job"):
        core.enqueue_chunks(jobs)


def test_a_refusal_of_a_later_chunk_names_the_job_by_its_index_in_the_call() -> None:
    calls = core.enqueue_chunks({"job_type": "noop"} for _ in range(core.BATCH_LIMIT + 5))
    refusal = {
        "code": "validation_error",
        "message": "jobs[3].priority: must be a whole number from 0 to 9",
        "details": {"field": "jobs[3].priority", "index": 3},
    }
    answers = [httpx.Response(400, json=refusal) for _ in calls]

    refused = []
    for call, answer in zip(calls, answers, strict=True):
        with pytest.raises(ValidationError) as caught:
            core.answer_of(answer, call.request)
        refused.append(caught.value)

    assert [error.message for error in refused] == [
        "jobs[3].priority: must be a whole number from 0 to 9",
        "jobs[1003].priority: must be a whole number from 0 to 9",
    ]
    assert refused[1].details == {"field": "jobs[1003].priority", "index": 1003}
    assert (
        str(refused[1])
        == "validation_error: jobs[1003].priority: must be a whole number from 0 to 9"
    )


def test_a_job_is_decoded_to_snake_case_with_the_payload_left_as_given() -> None:
    job = core.get_job(JOB_ID).decode(core.Response(200, "", JOB, None))
    assert (job.job_type, job.max_attempts, job.payload) == ("email", 3, {"toAddress": "a@b.com"})
    assert job.next_run_at == datetime.fromisoformat("2026-01-02T03:04:05+00:00")
    assert job.errors[0].error == "boom"
    assert not job.terminal


def test_a_job_value_is_immutable_and_copied_with_changes_as_the_readme_says() -> None:
    job = core.get_job(JOB_ID).decode(core.Response(200, "", JOB, None))

    with pytest.raises(AttributeError):
        job.state = JobState.CANCELLED  # type: ignore[misc]
    cancelled = msgspec.structs.replace(job, state=JobState.CANCELLED)

    assert (cancelled.state, job.state) == (JobState.CANCELLED, JobState.PENDING)
    assert cancelled.terminal
    assert msgspec.structs.asdict(job)["job_type"] == "email"


def test_a_succeeded_job_carries_its_result_as_given() -> None:
    result = {"rowCount": 2, "rows": [[1, "a"], [2, None]]}
    answer = {**JOB, "state": "SUCCEEDED", "result": result}

    job = core.get_job(JOB_ID).decode(core.Response(200, "", answer, None))
    older_api = core.get_job(JOB_ID).decode(core.Response(200, "", JOB, None))

    assert (job.terminal, job.result) == (True, result)
    assert older_api.result is None


def _answer(status: int, body: bytes, content_type: str = "application/json") -> httpx.Response:
    request = httpx.Request("GET", "http://api/jobs/x")
    headers = {"Content-Type": content_type, "X-Request-ID": "req-1"}
    return httpx.Response(status, content=body, headers=headers, request=request)


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [
        (400, ValidationError, "validation_error"),
        (401, Unauthorized, "unauthorized"),
        (404, JobNotFound, "not_found"),
        (409, InvalidTransition, "invalid_state_transition"),
        (413, ValidationError, "payload_too_large"),
        (429, Unavailable, "rate_limited"),
        (503, Unavailable, "not_ready"),
        (500, ClientError, "internal_error"),  # not retried: the API may have done the work
    ],
)
def test_each_api_error_becomes_its_type_with_code_message_details_and_request_id(
    status: int, error_type: type[ClientError], code: str
) -> None:
    body = b'{"code":"%s","message":"what went wrong","details":{"field":"x"}}' % code.encode()
    with pytest.raises(error_type) as raised:
        core.answer_of(_answer(status, body), core.Request("GET", "/jobs/x"))
    error = raised.value
    assert (error.code, error.message, error.details) == (code, "what went wrong", {"field": "x"})
    assert (error.status, error.request_id) == (status, "req-1")


def test_an_answer_that_is_not_the_apis_is_named_by_its_status() -> None:
    with pytest.raises(Unavailable) as raised:
        core.answer_of(_answer(502, b"<html/>", "text/html"), core.Request("GET", "/stats"))
    assert (raised.value.code, raised.value.message) == ("http_502", "GET /stats: Bad Gateway")
    with pytest.raises(InvalidResponse):
        core.answer_of(_answer(200, b"<html/>", "text/html"), core.Request("GET", "/stats"))


NOT_FOUND_PAGE = b"<html><body><h1>Error response</h1><p>Error code: 404</p></body></html>"
NOT_THE_APIS_ERRORS = {
    # `python -m http.server`, or any other web server, on the API's address
    "a web server's 404 page": (404, "text/html", NOT_FOUND_PAGE, core.Request("GET", "/jobs/x")),
    "the same for a schedule": (
        404, "text/html", NOT_FOUND_PAGE, core.get_schedule("nightly").request
    ),
    # other frameworks' JSON errors
    "JSON without a code": (
        404, "application/json", b'{"status_code":404,"detail":"Not Found"}',
        core.Request("GET", "/jobs/x"),
    ),
    "a code that is a number": (
        404, "application/json", b'{"code":404,"message":"Not Found"}',
        core.Request("GET", "/jobs/x"),
    ),
    "a code without a message": (
        409, "application/json", b'{"code":"conflict"}', core.Request("POST", "/jobs/x/cancel")
    ),
    "a 400 in plain text": (400, "text/plain", b"bad request", core.Request("POST", "/jobs")),
    "an authenticating proxy's 401": (
        401, "text/html", b"<html>log in</html>", core.Request("GET", "/stats")
    ),
    "a proxy's body size limit": (
        413, "text/html", b"<html>too large</html>", core.Request("POST", "/jobs/batch")
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("status", "content_type", "body", "request_"),
    NOT_THE_APIS_ERRORS.values(),
    ids=NOT_THE_APIS_ERRORS.keys(),
)
def test_an_error_status_without_the_apis_error_body_is_an_invalid_response(
    status: int, content_type: str, body: bytes, request_: core.Request
) -> None:
    # JobNotFound, InvalidTransition, ValidationError and Unauthorized say what the API
    # decided: only its `{"code", "message", "details"}` can say it.
    with pytest.raises(InvalidResponse) as raised:
        core.answer_of(_answer(status, body, content_type), request_)

    error = raised.value
    assert error.code == "invalid_response"
    assert error.message.startswith(f"{request_.method} {request_.path} answered {status} ("), (
        error.message
    )
    assert error.message.endswith("with a body that is not the API's error"), error.message
    assert (error.status, error.request_id) == (status, "req-1")


def test_a_job_id_that_is_not_a_uuid_is_a_validation_error_sent_nowhere() -> None:
    with pytest.raises(ValidationError, match="not a UUID"):
        core.get_job("42")


def test_a_job_given_where_its_id_goes_is_named_by_its_type_not_printed() -> None:
    # `tf.wait(tf.enqueue(...))`: the message says what to pass, without the job's payload.
    job = core.values.job_of(JOB)
    with pytest.raises(ValidationError) as raised:
        core.get_job(job)  # type: ignore[arg-type]

    assert raised.value.message == "job id must be a UUID or its text, not a Job: pass its .id"
    assert raised.value.details == {"field": "id"}


def test_a_dead_letter_given_where_its_id_goes_says_to_pass_its_job_id() -> None:
    at = datetime(2026, 1, 2, tzinfo=UTC)
    dead = core.values.DeadLetter(
        job_id=UUID(JOB_ID), queue="jobs:ready", job_type="email", payload={}, reason="r",
        last_error=None, attempts=3, failed_at=at, created_at=at, updated_at=at,
    )  # fmt: skip
    with pytest.raises(ValidationError) as raised:
        core.replay_job(dead)  # type: ignore[arg-type]

    assert raised.value.message == (
        "job id must be a UUID or its text, not a DeadLetter: pass its .job_id"
    )


RETRY = core.Request("POST", "/jobs", retry=True)
UNAVAILABLE = Unavailable("not_ready", "starting", status=503)


@pytest.mark.parametrize(
    ("tries", "delay"),
    [
        (1, 0.2),  # initial_delay
        (2, 0.4),  # doubled
        (4, 1.6),
        (5, 2.0),  # 3.2 capped at max_delay
        (6, None),  # attempts used up: the error is raised
    ],
)
def test_retries_back_off_exponentially_up_to_a_cap(tries: int, delay: float | None) -> None:
    policy = RetryPolicy(attempts=6, initial_delay=0.2, max_delay=2.0)
    assert policy.delay_after(UNAVAILABLE, RETRY, tries) == delay


def test_a_policy_of_many_attempts_keeps_to_its_cap_however_many_tries_failed() -> None:
    policy = RetryPolicy(attempts=5000, initial_delay=0.2, max_delay=2.0)
    assert policy.delay_after(UNAVAILABLE, RETRY, 1025) == 2.0
    assert policy.delay_after(UNAVAILABLE, RETRY, 4999) == 2.0


def test_a_retry_after_from_the_api_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=6, initial_delay=0.2, max_delay=2.0)
    slow_down = Unavailable("rate_limited", "slow down", status=429)
    slow_down.retry_after = 1.0
    assert policy.delay_after(slow_down, RETRY, 1) == 1.0
    slow_down.retry_after = 60.0
    assert policy.delay_after(slow_down, RETRY, 1) == 2.0


@pytest.mark.parametrize(
    ("failure", "request_"),
    [
        (UNAVAILABLE, core.Request("POST", "/jobs/x/cancel")),  # not marked safe to repeat
        (ClientError("internal_error", "boom", status=500), RETRY),  # not a retryable answer
        (JobNotFound("not_found", "gone", status=404), RETRY),
    ],
)
def test_only_retryable_requests_meeting_an_unavailable_api_are_retried(
    failure: ClientError, request_: core.Request
) -> None:
    assert RetryPolicy().delay_after(failure, request_, 1) is None


@pytest.mark.parametrize("client", [SyncClient, Client])
@pytest.mark.parametrize("policy", [3, 0, {"attempts": 3}])
def test_a_retry_policy_that_is_not_a_retry_policy_is_refused_when_the_client_is_built(
    client: type[SyncClient | Client], policy: Any
) -> None:
    with pytest.raises(TypeError) as refused:
        client("http://api", retry_policy=policy)

    assert str(refused.value) == (
        f"retry_policy must be a RetryPolicy or None, not {type(policy).__name__}"
    )


@pytest.mark.parametrize(
    ("values", "error", "message"),
    [
        # A count that never runs out: an enqueue, and a wait on an API that stays away,
        # went on for ever.
        ({"attempts": float("nan")}, TypeError, "attempts must be a whole number, not float"),
        ({"attempts": float("inf")}, TypeError, "attempts must be a whole number, not float"),
        ({"attempts": True}, TypeError, "attempts must be a whole number, not bool"),
        ({"attempts": "3"}, TypeError, "attempts must be a whole number, not str"),
        ({"attempts": 0}, ValueError, "attempts must be at least 1, not 0"),
        # No cap: a Retry-After of a day was slept for a day.
        (
            {"max_delay": float("inf")},
            ValueError,
            "max_delay must be a non-negative finite number of seconds, not inf",
        ),
        # Refused before too, but not saying which value.
        (
            {"initial_delay": float("nan")},
            ValueError,
            "initial_delay must be a non-negative finite number of seconds, not nan",
        ),
        (
            {"initial_delay": -1},
            ValueError,
            "initial_delay must be a non-negative finite number of seconds, not -1",
        ),
        ({"max_delay": "5"}, TypeError, "max_delay must be a number of seconds, not str"),
        ({"initial_delay": 2.0, "max_delay": 1.0}, ValueError, "need 0 <= initial_delay <= max"),
    ],
)
def test_a_retry_policy_with_a_value_no_retry_can_use_is_refused_when_made(
    values: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}"):
        RetryPolicy(**values)


def test_polls_grow_to_a_ceiling_and_stop_at_the_deadline() -> None:
    schedule = core.PollSchedule(started=100.0, timeout=2.0, first=0.5, factor=2.0, longest=1.0)
    assert schedule.next_delay(100.0) == 0.5
    assert schedule.next_delay(100.5) == 1.0
    assert schedule.next_delay(101.5) == 0.5  # 1.0, clipped to what is left
    assert schedule.next_delay(102.0) is None


def test_a_wait_past_its_deadline_names_the_state_last_read_or_else_the_last_failure() -> None:
    unread = core.JobWait(JOB_ID, 1.0, 100.0, request_timeout=10.0, attempts=3)
    unread.failed(UNAVAILABLE)
    with pytest.raises(WaitTimeout) as not_read:
        unread.next_delay(101.0)
    assert not_read.value.message == f"job {JOB_ID} not read within 1s: starting"

    read = core.JobWait(JOB_ID, 1.0, 100.0, request_timeout=10.0, attempts=3)
    assert read.answered(core.values.job_of({**JOB, "state": "RUNNING"})) is False
    read.failed(UNAVAILABLE)  # a failure after a read: the state read is still named
    with pytest.raises(WaitTimeout) as still:
        read.next_delay(101.0)
    assert still.value.message == f"job {JOB_ID} still RUNNING after 1s"
    assert still.value.details == {"jobId": JOB_ID, "state": "RUNNING"}


@pytest.mark.parametrize(
    ("timeout", "request_timeout", "now", "poll_timeout"),
    [
        (None, 10.0, 100.0, 10.0),  # no limit: the request timeout
        (float("inf"), 10.0, 100.0, 10.0),  # no limit either
        (60.0, 10.0, 100.0, 10.0),  # the request timeout, within what is left
        (5.0, 10.0, 100.0, 5.0),  # what is left, within the request timeout
        (5.0, 10.0, 103.5, 1.5),
        # Less left than any answer takes: given no time, the poll failed before reaching
        # the API, and the wait reported the API as failing.
        (1.0, 10.0, 100.25, 1.0),  # 0.75 s left: SHORTEST_POLL
        (1.0, 10.0, 101.0, 1.0),  # the last poll, at the deadline
        (0.0, 10.0, 100.0, 1.0),  # the one poll of a timeout of 0
        (0.0, 0.5, 100.0, 0.5),  # still within the request timeout
    ],
)
def test_a_poll_is_given_what_is_left_of_the_wait_but_never_less_than_an_answer_needs(
    timeout: float | None, request_timeout: float, now: float, poll_timeout: float
) -> None:
    waiting = core.JobWait(JOB_ID, timeout, 100.0, request_timeout=request_timeout, attempts=3)
    assert waiting.poll_timeout(now) == poll_timeout


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        # Was a poll given no time, failing as a ConnectionFailed as if the API were down.
        (-1, ValueError, "timeout must be a non-negative number of seconds (inf: no limit)"),
        (-0.5, ValueError, "timeout must be a non-negative number of seconds (inf: no limit)"),
        (float("-inf"), ValueError, "timeout must be a non-negative number of seconds"),
        # Never ran out: the wait went on until the job ended.
        (float("nan"), ValueError, "timeout must be a non-negative number of seconds"),
        ("5", TypeError, "timeout must be a number of seconds, not str"),
        (True, TypeError, "timeout must be a number of seconds, not bool"),
    ],
)
async def test_a_wait_timeout_that_is_negative_nan_or_no_number_is_refused_before_any_request(
    timeout: Any, error: type[Exception], message: str
) -> None:
    transport, seen = _scripted()
    with (
        SyncClient("http://api", transport=transport) as client,
        pytest.raises(error, match=f"^{re.escape(message)}"),
    ):
        client.wait(JOB_ID, timeout)
    async with Client("http://api", transport=transport) as async_client:
        with pytest.raises(error, match=f"^{re.escape(message)}"):
            await async_client.wait(JOB_ID, timeout)
    assert seen == []


def test_a_wait_raises_the_failure_once_as_many_polls_in_a_row_failed_as_tries_allowed() -> None:
    waiting = core.JobWait(JOB_ID, None, 100.0, request_timeout=10.0, attempts=2)
    waiting.failed(UNAVAILABLE)
    waiting.answered(core.values.job_of(JOB))  # an answer starts the count again
    waiting.failed(UNAVAILABLE)
    with pytest.raises(Unavailable):
        waiting.failed(UNAVAILABLE)


def _scripted(
    *steps: Callable[[httpx.Request], httpx.Response],
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    script = iter(steps)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(script)(request)

    return httpx.MockTransport(handle), seen


def _lost(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadError("connection reset after the request was sent", request=request)


def _busy(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json={"code": "not_ready", "message": "busy", "details": None})


def _stored(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=JOB)


def test_an_enqueue_is_retried_with_the_same_idempotency_key_after_a_lost_answer() -> None:
    transport, seen = _scripted(_lost, _busy, _stored)
    with SyncClient("http://api", transport=transport, retry_policy=NO_WAIT) as client:
        job = client.enqueue("email", {"to": "a@b.com"})
    assert str(job.id) == JOB["id"]
    keys = [httpx.Response(200, content=r.content).json()["idempotencyKey"] for r in seen]
    assert len(keys) == 3
    assert len(set(keys)) == 1


def _sent_key(request: httpx.Request) -> str:
    key: str = json.loads(request.content)["idempotencyKey"]
    return key


def _holding_the_sent_key(status: int) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={**JOB, "idempotencyKey": _sent_key(request)})

    return answer


async def test_an_enqueue_that_found_its_job_stored_returns_it_marked_as_a_conflict() -> None:
    # POST /jobs answers 200, not 201, with the job holding the key (or the unique key).
    answers = iter([201, 200, 200, 201, 200])

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers), json=JOB)

    transport = httpx.MockTransport(answer)
    with SyncClient("http://api", transport=transport) as client:
        created = client.enqueue("email", idempotency_key="k")
        found = client.enqueue("email", idempotency_key="k")
        read = client.get(JOB_ID)  # answered 200, as every read: no enqueue's conflict
    async with Client("http://api", transport=transport) as async_client:
        async_created = await async_client.enqueue("email", idempotency_key="k")
        async_found = await async_client.enqueue("email", unique_key="nightly")

    assert (created.conflict, found.conflict, read.conflict) == (False, True, False)
    assert (async_created.conflict, async_found.conflict) == (False, True)
    assert found.id == created.id


def test_a_job_an_earlier_try_stored_under_the_key_the_client_made_up_is_no_conflict() -> None:
    # The first try stored the job and its answer was lost: the second finds the job
    # holding the call's own made-up key, which only this call could have stored.
    transport, _ = _scripted(_lost, _holding_the_sent_key(200))
    with SyncClient("http://api", transport=transport, retry_policy=NO_WAIT) as client:
        job = client.enqueue("email")
    held_by_another = {**JOB, "idempotencyKey": "tf-another-call", "uniqueKey": "nightly"}
    transport, _ = _scripted(_lost, lambda request: httpx.Response(200, json=held_by_another))
    with SyncClient("http://api", transport=transport, retry_policy=NO_WAIT) as client:
        unique = client.enqueue("email", unique_key="nightly")
    transport, _ = _scripted(_holding_the_sent_key(200))
    with SyncClient("http://api", transport=transport) as client:
        own_key = client.enqueue("email", idempotency_key="order-7")  # named by the caller

    assert job.conflict is False
    assert unique.conflict is True  # the unique key's holder, stored by another call
    assert own_key.conflict is True


def _batch_answer(
    status_of: Callable[[dict[str, Any]], str],
) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        jobs = json.loads(request.content)["jobs"]
        items = [{"id": JOB_ID, "status": status_of(job), "state": "PENDING"} for job in jobs]
        return httpx.Response(200, json={"items": items})

    return answer


async def test_enqueue_many_marks_each_job_it_found_stored_as_a_conflict() -> None:
    specs: list[core.JobSpec] = [
        {"job_type": "noop", "idempotency_key": "old"},
        {"job_type": "noop", "idempotency_key": "new"},
    ]
    answer = _batch_answer(lambda job: "existing" if job["idempotencyKey"] == "old" else "created")
    with SyncClient("http://api", transport=httpx.MockTransport(answer)) as client:
        items = client.enqueue_many(specs)
    async with Client("http://api", transport=httpx.MockTransport(answer)) as async_client:
        async_items = await async_client.enqueue_many(specs)

    assert [(item.status, item.conflict) for item in items] == [
        ("existing", True), ("created", False)
    ]  # fmt: skip
    assert async_items == items


def test_a_batch_an_earlier_try_stored_under_made_up_keys_was_created_by_the_call() -> None:
    # Every job is `existing` on the second try: the lost first try stored them. A job
    # with a unique key may have found another call's holder of it instead.
    specs: list[core.JobSpec] = [
        {"job_type": "noop"},
        {"job_type": "noop", "idempotency_key": "mine"},
        {"job_type": "noop", "unique_key": "nightly"},
    ]
    transport, _ = _scripted(_lost, _batch_answer(lambda job: "existing"))
    with SyncClient("http://api", transport=transport, retry_policy=NO_WAIT) as client:
        items = client.enqueue_many(specs)

    assert [item.conflict for item in items] == [False, True, True]
    assert items[0].status == "created"


def test_an_enqueue_gives_up_after_its_attempts_with_the_last_error() -> None:
    transport, seen = _scripted(_lost, _lost, _lost)
    with (
        SyncClient("http://api", transport=transport, retry_policy=NO_WAIT) as client,
        pytest.raises(ConnectionFailed, match="request to http://api failed"),
    ):
        client.enqueue("email")
    assert len(seen) == 3


def test_a_failed_call_names_the_api_without_the_password_in_its_url() -> None:
    transport, _ = _scripted(_lost)
    with (
        SyncClient("http://ops:s3cret@api", transport=transport, retry_policy=NO_WAIT) as client,
        pytest.raises(ConnectionFailed) as failed,
    ):
        client.stats()

    assert "s3cret" not in failed.value.message
    assert failed.value.message.startswith("request to http://ops:***@api failed")


class _Trickle:
    """JOB's JSON 64 bytes at a time, 0.05 s apart: each part in time, the whole (about
    0.7 s) not within the 0.2 s the clients below allow. Counts the parts sent."""

    def __init__(self) -> None:
        self.body = json.dumps(JOB).encode()
        self.parts = [self.body[start : start + 64] for start in range(0, len(self.body), 64)]
        self.sent = 0


class _SyncTrickle(_Trickle, httpx.SyncByteStream):
    def __iter__(self) -> typing.Iterator[bytes]:
        for part in self.parts:
            time.sleep(0.05)
            self.sent += 1
            yield part


class _AsyncTrickle(_Trickle, httpx.AsyncByteStream):
    async def __aiter__(self) -> typing.AsyncIterator[bytes]:
        for part in self.parts:
            await asyncio.sleep(0.05)
            self.sent += 1
            yield part


def test_an_answer_trickling_in_past_the_request_timeout_fails_as_timed_out() -> None:
    trickle = _SyncTrickle()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=trickle))

    with (
        SyncClient("http://api", transport=transport, request_timeout=0.2) as client,
        pytest.raises(ConnectionFailed) as failed,
    ):
        client.get(JOB_ID)

    assert failed.value.code == "timeout"
    assert failed.value.message == "no answer from http://api within 0.2s"
    assert trickle.sent < len(trickle.parts)


async def test_the_async_client_bounds_the_whole_exchange_too() -> None:
    trickle = _AsyncTrickle()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=trickle))

    async with Client("http://api", transport=transport, request_timeout=0.2) as client:
        with pytest.raises(ConnectionFailed) as failed:
            await client.get(JOB_ID)

    assert failed.value.code == "timeout"
    assert trickle.sent < len(trickle.parts)


def test_an_answer_in_parts_within_the_request_timeout_is_read_whole() -> None:
    trickle = _SyncTrickle()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=trickle))

    with SyncClient("http://api", transport=transport, request_timeout=10) as client:
        job = client.get(JOB_ID)

    assert str(job.id) == JOB_ID
    assert trickle.sent == len(trickle.parts)


def test_an_operator_move_is_not_retried() -> None:
    transport, seen = _scripted(_busy, _stored)
    with (
        SyncClient("http://api", transport=transport, retry_policy=NO_WAIT) as client,
        pytest.raises(Unavailable),
    ):
        client.cancel(JOB_ID)
    assert len(seen) == 1


@pytest.mark.parametrize("body", [[1, 2], {}, {"items": 3}, {**JOB, "state": 5, "id": "x"}])
async def test_json_of_another_shape_than_the_apis_answer_is_an_invalid_response(
    body: Any,
) -> None:
    # Another server, or a proxy's own page, on the API's address.
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body, headers={"X-Request-ID": "r-1"})

    calls: list[Callable[[Any], Any]] = [
        lambda tf: tf.get(JOB_ID), lambda tf: tf.list(), lambda tf: tf.stats(),
        lambda tf: tf.queues(), lambda tf: tf.enqueue("email"), lambda tf: tf.dead_letters(),
    ]  # fmt: skip
    with SyncClient("http://api", transport=httpx.MockTransport(answer)) as client:
        for call in calls:
            with pytest.raises(InvalidResponse) as sync_error:
                call(client)
            assert sync_error.value.message.endswith(")"), sync_error.value.message
            assert "answered 200 with JSON that is not the API's answer" in str(sync_error.value)
            assert (sync_error.value.status, sync_error.value.request_id) == (200, "r-1")
    async with Client("http://api", transport=httpx.MockTransport(answer)) as async_client:
        for call in calls:
            with pytest.raises(InvalidResponse):
                await call(async_client)


async def test_a_body_that_cannot_be_decompressed_is_an_invalid_response() -> None:
    # A proxy that labels its own body gzip: httpx's DecodingError is no ClientError.
    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Encoding": "gzip", "X-Request-ID": "r-1"}
        return httpx.Response(200, content=b"not gzip", headers=headers)

    with (
        SyncClient("http://api", transport=httpx.MockTransport(answer)) as client,
        pytest.raises(InvalidResponse, match="GET /stats answered with a body that cannot be"),
    ):
        client.stats()
    async with Client("http://api", transport=httpx.MockTransport(answer)) as async_client:
        with pytest.raises(InvalidResponse, match="POST /jobs answered with a body that cannot be"):
            await async_client.enqueue("email")


async def test_a_batch_over_the_apis_body_limit_is_sent_again_in_halves() -> None:
    # 1000 jobs of 1.2 KB are over the API's 1 MiB body limit together, not one by one.
    # The 413 stored nothing of the batch: its halves are sent instead, in order.
    sizes: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        jobs = json.loads(request.content)["jobs"]
        sizes.append(len(jobs))
        if len(jobs) > 300:
            too_large = {"code": "payload_too_large", "message": "request body too large"}
            return httpx.Response(413, json=too_large)
        items = [{"id": job["idempotencyKey"][3:], "status": "created", "state": "PENDING"}
                 for job in jobs]  # fmt: skip
        return httpx.Response(201, json={"items": items})

    specs: list[core.JobSpec] = [{"job_type": "noop", "payload": {"x": "a" * 1200}}] * 1000
    with SyncClient("http://api", transport=httpx.MockTransport(answer)) as client:
        items = client.enqueue_many(specs)
    assert sizes == [1000, 500, 250, 250, 500, 250, 250]
    assert len({item.id for item in items}) == 1000
    async with Client("http://api", transport=httpx.MockTransport(answer)) as async_client:
        assert len(await async_client.enqueue_many(specs)) == 1000
    one_job: list[core.JobSpec] = [{"job_type": "noop"}]

    def refuse(request: httpx.Request) -> httpx.Response:
        too_large = {"code": "payload_too_large", "message": "request body too large"}
        return httpx.Response(413, json=too_large)

    with (
        SyncClient("http://api", transport=httpx.MockTransport(refuse)) as client,
        pytest.raises(ValidationError, match="payload_too_large"),
    ):
        client.enqueue_many(one_job)  # one job too large: nothing to split


def test_the_token_and_user_agent_go_with_every_request() -> None:
    transport, seen = _scripted(_stored)
    options: dict[str, Any] = {"token": "s3cret", "user_agent": "me/1"}
    with SyncClient("http://api/", transport=transport, **options) as client:
        client.get(JOB_ID)
    assert seen[0].headers["Authorization"] == "Bearer s3cret"
    assert seen[0].headers["User-Agent"] == "me/1"
    assert str(seen[0].url) == f"http://api/jobs/{JOB['id']}"


async def test_wait_polls_with_growing_gaps_until_the_job_is_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    states = iter(["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"])
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={**JOB, "state": next(states)})

    monkeypatch.setattr("taskforge.client.async_client.asyncio.sleep", sleep)
    async with Client(transport=httpx.MockTransport(answer)) as client:
        job = await client.wait(JOB_ID, timeout=60)
    assert job.state == "SUCCEEDED"
    assert slept == pytest.approx([0.05, 0.075, 0.1125])  # each gap 1.5 times the last


async def test_wait_polls_again_through_an_api_that_is_briefly_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = iter(
        [
            httpx.Response(503, json={"code": "not_ready", "message": "restarting"}),
            httpx.Response(502, text="bad gateway"),
            httpx.Response(200, json={**JOB, "state": "RUNNING"}),
            httpx.Response(504, text="gateway timeout"),
            httpx.Response(200, json={**JOB, "state": "SUCCEEDED"}),
        ]
    )

    async def sleep(delay: float) -> None:
        return None

    monkeypatch.setattr("taskforge.client.async_client.asyncio.sleep", sleep)
    async with Client(transport=httpx.MockTransport(lambda request: next(answers))) as client:
        job = await client.wait(JOB_ID, timeout=60)
    assert job.state == "SUCCEEDED"


def _finished(state: str, **fields: Any) -> httpx.MockTransport:
    return httpx.MockTransport(
        lambda request: httpx.Response(200, json={**JOB, "state": state, **fields})
    )


async def test_result_answers_what_a_succeeded_jobs_handler_returned() -> None:
    transport = _finished("SUCCEEDED", result={"total": 41.5})
    with SyncClient(transport=transport) as client:
        assert client.result(JOB_ID, timeout=0) == {"total": 41.5}
    async with Client(transport=_finished("SUCCEEDED")) as async_client:
        assert await async_client.result(JOB_ID, timeout=0) is None  # returned nothing


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"state": "DLQ", "reason": "attempts exhausted", "lastError": "ValueError: boom"},
            "ended DLQ (attempts exhausted); last error: ValueError: boom",
        ),
        (
            {"state": "CANCELLED", "reason": "not needed", "lastError": None},
            "ended CANCELLED (not needed); no error recorded",
        ),
    ],
)
async def test_result_of_a_job_that_ended_without_one_raises_job_failed_with_the_job(
    fields: dict[str, Any], message: str
) -> None:
    state = fields.pop("state")
    with (
        SyncClient(transport=_finished(state, **fields)) as client,
        pytest.raises(JobFailed) as failed,
    ):
        client.result(JOB_ID)
    async with Client(transport=_finished(state, **fields)) as async_client:
        with pytest.raises(JobFailed) as async_failed:
            await async_client.result(JOB_ID)

    assert failed.value.message == f"job {JOB_ID} {message}"
    assert (failed.value.code, str(failed.value.job.id), failed.value.job.state) == (
        "job_failed", JOB_ID, state
    )  # fmt: skip
    assert failed.value.details == {
        "jobId": JOB_ID, "state": state, "reason": fields["reason"],
        "lastError": fields["lastError"],
    }  # fmt: skip
    assert isinstance(failed.value, ClientError)
    assert async_failed.value.message == failed.value.message


async def test_result_of_a_job_not_finished_in_time_raises_wait_timeout() -> None:
    with (
        SyncClient(transport=_finished("RUNNING")) as client,
        pytest.raises(WaitTimeout, match="still RUNNING after 0s"),
    ):
        client.result(JOB_ID, timeout=0)
    async with Client(transport=_finished("FAILED")) as async_client:
        with pytest.raises(WaitTimeout, match="still FAILED after 0s"):
            await async_client.result(JOB_ID, timeout=0)


def test_wait_gives_up_after_as_many_unanswered_polls_in_a_row_as_an_enqueue_tries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[httpx.Request] = []

    def unavailable(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503, json={"code": "not_ready", "message": "down"})

    monkeypatch.setattr("taskforge.client.sync_client.time.sleep", lambda delay: None)
    transport = httpx.MockTransport(unavailable)
    with (
        SyncClient(transport=transport, retry_policy=RetryPolicy(attempts=3)) as client,
        pytest.raises(Unavailable) as failed,
    ):
        client.wait(JOB_ID)  # no timeout: an API that stays away is an error, not a hang
    assert failed.value.code == "not_ready"
    assert len(seen) == 3


async def test_async_wait_on_a_silent_api_ends_at_its_timeout_not_the_request_timeout() -> None:
    async def silent(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        raise AssertionError("never answered")

    began = time.monotonic()
    async with Client(transport=httpx.MockTransport(silent), request_timeout=20) as client:
        with pytest.raises(WaitTimeout) as timed_out:
            await client.wait(JOB_ID, timeout=0.3)
    assert time.monotonic() - began < 5  # not the 20 s request timeout
    assert timed_out.value.message.startswith(f"job {JOB_ID} not read within 0.3s: no answer")
    assert timed_out.value.details == {"jobId": JOB_ID}


def test_sync_wait_on_a_silent_api_ends_at_its_timeout_not_the_request_timeout() -> None:
    with socket.socket() as silent:  # takes connections into its backlog, answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        began = time.monotonic()
        with SyncClient(url, request_timeout=20) as client, pytest.raises(WaitTimeout) as late:
            client.wait(JOB_ID, timeout=0.3)
    assert time.monotonic() - began < 5  # not the 20 s request timeout
    assert late.value.message.startswith(f"job {JOB_ID} not read within 0.3s: no answer")


def test_a_client_of_an_http_api_loads_no_ca_yet_verifies_any_tls_it_would_meet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    context = core.http_options("http://api:8080", None, 1.0, "ua")["verify"]
    assert isinstance(context, ssl.SSLContext)
    assert context.cert_store_stats()["x509_ca"] == 0
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)


@pytest.mark.parametrize(
    ("base_url", "https_proxy"),
    [
        ("https://api:8443", None),  # TLS to the API: the default context and its CA bundle
        ("http://api:8080", "https://proxy:3128"),  # TLS to the proxy
    ],
)
def test_a_client_that_may_speak_tls_keeps_the_default_verification(
    base_url: str, https_proxy: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    if https_proxy:
        monkeypatch.setenv("http_proxy", https_proxy)
    assert "verify" not in core.http_options(base_url, None, 1.0, "ua")


def test_every_public_name_of_the_client_package_resolves() -> None:
    # The values load on first use (the package's __getattr__), not on import.
    import taskforge.client as package
    from taskforge.client import values

    missing = [name for name in package.__all__ if not hasattr(package, name)]
    assert missing == []
    assert package.Job is values.Job
    assert package.QueueStats is values.QueueStats


def test_every_client_error_the_readme_names_is_an_attribute_of_taskforge() -> None:
    import taskforge
    import taskforge.client as package

    quoted = set(re.findall(r"`(?:taskforge\.)?([A-Z]\w*)`", README.read_text("utf-8")))
    errors = {
        name
        for name in quoted
        if isinstance(found := getattr(package, name, None), type)
        and issubclass(found, ClientError)
    }

    assert {"ClientError", "JobNotFound", "InvalidResponse"} <= errors  # the README was read
    missing = [
        name
        for name in sorted(errors)
        if getattr(taskforge, name, None) is not getattr(package, name)
    ]
    assert missing == []


def _readme_on_the_clients() -> str:
    """The README's "Enqueue from Python" section and its other "From Python" paragraphs."""
    readme = README.read_text("utf-8")
    section = readme.split("\n## Enqueue from Python\n", 1)[1].split("\n## ", 1)[0]
    others = [paragraph for paragraph in readme.split("\n\n") if "From Python" in paragraph]
    return "\n\n".join([section, *others])


@pytest.mark.parametrize("client", [SyncClient, Client])
def test_the_readme_names_every_call_of_the_clients(client: type[SyncClient | Client]) -> None:
    text = _readme_on_the_clients()
    calls = [
        name
        for name, _ in inspect.getmembers(client, inspect.isfunction)
        if not name.startswith("_") and name not in ("close", "aclose")  # `with` closes them
    ]

    assert "dead_letters" in calls
    unnamed = [name for name in calls if not re.search(rf"`(\w+\.)?{name}(\(|`)", text)]
    assert unnamed == []


def test_the_readme_names_every_error_of_the_clients() -> None:
    import taskforge.client as package

    text = _readme_on_the_clients()
    errors = [
        name
        for name in package.__all__
        if isinstance(found := getattr(package, name), type) and issubclass(found, ClientError)
    ]

    assert "WaitTimeout" in errors
    assert [name for name in errors if not re.search(rf"`(taskforge\.)?{name}`", text)] == []


def test_every_error_of_the_client_package_is_an_attribute_of_taskforge() -> None:
    # `taskforge`'s docstring: the clients' errors, `ClientError` and its subclasses.
    import taskforge
    import taskforge.client as package

    errors = [
        name
        for name in package.__all__
        if isinstance(found := getattr(package, name), type) and issubclass(found, ClientError)
    ]

    assert "ConnectionFailed" in errors
    assert [name for name in errors if name not in taskforge.__all__] == []
    assert [name for name in errors if getattr(taskforge, name) is not getattr(package, name)] == []


@pytest.mark.parametrize("client", [SyncClient, Client])
def test_the_clients_annotations_resolve_at_run_time(client: type[SyncClient | Client]) -> None:
    # Tools read them so (pydantic's validate_call, typeguard, autodoc), and the values they
    # name load lazily: every public method's annotations must still evaluate.
    from taskforge.client import values

    methods = inspect.getmembers(client, inspect.isfunction)
    unresolved = []
    for name, method in methods:
        try:
            typing.get_type_hints(method)
        except NameError as exc:
            unresolved.append(f"{name}: {exc}")
    assert unresolved == []
    assert typing.get_type_hints(client.get)["return"] is values.Job
    assert typing.get_type_hints(core.list_jobs)["return"] == core.Call[values.JobPage]


@pytest.mark.parametrize("token", ["s3cret-token\n", "s3cret\r\nX-Other: 1", "s3cret-tökén"])
def test_a_token_no_header_can_carry_is_refused_when_the_client_is_made_without_showing_it(
    token: str,
) -> None:
    # Sent, a line break failed every call as a ConnectionFailed quoting `Bearer <token>`.
    for make in (SyncClient, Client):
        with pytest.raises(ValueError, match=r"^token holds a character a request header") as e:
            make("http://api", token=token)
        assert "s3cret" not in str(e.value)


@pytest.mark.parametrize(
    ("base_url", "refusal"),
    [
        # Each was retried for seconds, then raised as a ConnectionFailed (or a JobNotFound).
        ("localhost:18080", "'localhost:18080' is not an http:// or https:// URL"),
        ("", "'' is not an http:// or https:// URL"),
        (" http://api", "' http://api' is not an http:// or https:// URL"),
        ("ftp://api", "'ftp://api' is not an http:// or https:// URL"),
        ("http://", "'http://' names no host"),
        ("https://:8080/", "'https://:8080/' names no host"),
        ("http://api ", "'http://api ' names a host with a space"),  # sent to host `api%20`
        ("http://local host:8080", "'http://local host:8080' names a host with a space"),
        ("http://api:eighty", "'http://api:eighty' is not a valid URL: Invalid port: 'eighty'"),
        # Every call went to `/`, its path added to the query (`/?tenant=a/jobs`).
        ("http://api?tenant=a", "'http://api?tenant=a' has a query: the API's paths would be"),
        ("http://api/?", "'http://api/?' has a query: the API's paths would be added to it"),
    ],
)
def test_a_base_url_no_call_could_reach_the_api_through_is_refused_when_the_client_is_made(
    base_url: str, refusal: str
) -> None:
    for make in (SyncClient, Client):
        with pytest.raises(ValueError, match=f"^{re.escape(refusal)}"):
            make(base_url)


@pytest.mark.parametrize(
    ("request_timeout", "error", "message"),
    [
        # Each failed every call: 0 as a ConnectionFailed ("operation now in progress"), as if
        # the API were down; -1 and nan with httpx's bare ValueError; inf in the clock.
        (0, ValueError, "request_timeout must be a positive finite number of seconds, not 0"),
        (-1, ValueError, "request_timeout must be a positive finite number of seconds, not -1"),
        (float("nan"), ValueError, "request_timeout must be a positive finite number of seconds"),
        (float("inf"), ValueError, "request_timeout must be a positive finite number of seconds"),
        ("5", TypeError, "request_timeout must be a number of seconds, not str"),
        (None, TypeError, "request_timeout must be a number of seconds, not NoneType"),
        (True, TypeError, "request_timeout must be a number of seconds, not bool"),
    ],
)
def test_a_request_timeout_no_call_could_keep_to_is_refused_when_the_client_is_made(
    request_timeout: Any, error: type[Exception], message: str
) -> None:
    for make in (SyncClient, Client):
        with pytest.raises(error, match=f"^{re.escape(message)}"):
            make("http://api", request_timeout=request_timeout)


@pytest.mark.parametrize(
    ("base_url", "sent_to"),
    [
        ("http://api/taskforge/", f"http://api/taskforge/jobs/{JOB_ID}"),  # served under a path
        ("HTTP://api", f"http://api/jobs/{JOB_ID}"),  # a scheme is read in any case
        ("http://api:8080 ", f"http://api:8080/jobs/{JOB_ID}"),  # a port ends the host
        ("http://api/my api", f"http://api/my%20api/jobs/{JOB_ID}"),  # a path may hold one
    ],
)
def test_a_base_url_that_reaches_the_api_is_taken_as_before(base_url: str, sent_to: str) -> None:
    transport, seen = _scripted(_stored)
    with SyncClient(base_url, transport=transport) as client:
        client.get(JOB_ID)
    assert str(seen[0].url) == sent_to


def test_a_call_after_close_is_a_client_closed_error_and_sends_nothing() -> None:
    transport, seen = _scripted(_stored)
    client = SyncClient("http://api", transport=transport)
    client.close()
    with pytest.raises(ClientClosed) as raised:
        client.enqueue("email")  # no retry either: a closed client stays closed
    with SyncClient("http://api", transport=transport) as closed_by_with:
        pass
    with pytest.raises(ClientClosed):
        closed_by_with.raw.stats()

    assert seen == []
    assert raised.value.code == "client_closed"
    assert str(raised.value) == "client_closed: the client is closed; nothing was sent"
    assert isinstance(raised.value, RuntimeError)  # what httpx raised, still caught as before


async def test_an_async_call_after_aclose_is_a_client_closed_error_and_sends_nothing() -> None:
    transport, seen = _scripted(_stored)
    client = Client("http://api", transport=transport)
    await client.aclose()
    with pytest.raises(ClientClosed):
        await client.enqueue("email")
    async with Client("http://api", transport=transport) as closed_by_with:
        pass
    with pytest.raises(ClientClosed):
        await closed_by_with.stats()
    assert seen == []


def test_an_async_client_closed_from_another_event_loop_stays_closed() -> None:
    transport, seen = _scripted(_stored)
    client = Client("http://api", transport=transport)
    asyncio.run(client.get(JOB_ID))
    asyncio.run(client.aclose())
    with pytest.raises(ClientClosed):
        asyncio.run(client.get(JOB_ID))
    assert len(seen) == 1
