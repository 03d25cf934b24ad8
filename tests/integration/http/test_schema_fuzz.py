"""Schema-driven fuzzing: schemathesis generates valid and invalid requests for every
operation in the served OpenAPI document and checks each response against it. No request
may end in a 5xx, every status, content type and body must be one the document declares,
and a request the document calls valid must not be refused (400): the document describes
every rule the API enforces, in JSON Schema where it can. The few it can only state in
words (`stated_in_words_only`) exempt a request from that last check alone.

In process (ASGI), on the in-memory backend; bounded and derandomized, so a run is quick and
repeatable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, checks
from schemathesis.schemas import BaseSchema

from taskforge.adapters.cron import CronsimCalendar
from taskforge.application.handlers import HandlerRegistry
from taskforge.domain.errors import ValidationError
from taskforge.domain.schedule import validate_timezone
from taskforge.domain.validation import EARLIEST_DUE_AT, LATEST_DUE_AT
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.container import Backend, make_container
from taskforge.entrypoints.http.app import create_app

EXAMPLES_PER_OPERATION = 40

CONFORMANCE = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
CHECKS = [*CONFORMANCE, checks.positive_data_acceptance]
"""positive_data_acceptance: a request generated as valid must get 2xx (or 404/409 for a
job or dead letter that does not exist or cannot make that move), never 400."""


def stated_in_words_only(case: Case[Any]) -> str | None:
    """Which rule of the document's descriptions the request's body breaks, among those JSON
    Schema cannot express: maxDelay >= initialDelay (default 1), maxAttempts written as a
    whole number (10, not 10.0), a printable idempotencyKey and uniqueKey (str.isprintable), no NUL
    anywhere in a payload, a runAt inside its range once its offset is applied; for a
    schedule, a cron expression that reads and fires and a known time zone. None when it
    breaks none."""
    body: object = case.body
    if case.path == "/schedules" and isinstance(body, dict):
        for field, check in (("cron", _cron_reads), ("timezone", _zone_known)):
            if isinstance(value := body.get(field), str) and not check(value):
                return f"{field} readable"
    jobs: object = (
        body.get("jobs") if isinstance(body, dict) and case.path == "/jobs/batch" else [body]
    )
    for job in jobs if isinstance(jobs, list) else []:
        if not isinstance(job, dict):
            continue
        initial, most = (
            _number(job.get("initialDelay", 1), default=1.0),
            _number(job.get("maxDelay")),
        )
        if initial is not None and most is not None and most < initial:
            return "maxDelay >= initialDelay"
        if isinstance(job.get("maxAttempts"), float):
            # JSON Schema's integer type takes 10.0; the API wants a whole number as 10.
            return "maxAttempts written without a fraction"
        for field in ("idempotencyKey", "uniqueKey"):
            key = job.get(field)
            if isinstance(key, str) and not key.isprintable():
                return f"{field} printable"
        if "\\u0000" in json.dumps(job.get("payload")):
            return "no NUL in the payload"
        if isinstance(run_at := job.get("runAt"), str) and not _inside_range(run_at):
            return "runAt inside its range"
    return None


def _number(value: object, default: float | None = None) -> float | None:
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _cron_reads(cron: str) -> bool:
    try:
        CronsimCalendar().check(cron)
    except ValidationError:
        return False
    return True


def _zone_known(timezone: str) -> bool:
    try:
        validate_timezone(timezone)
    except ValidationError:
        return False
    return True


def _inside_range(raw: str) -> bool:
    try:
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return EARLIEST_DUE_AT <= moment.astimezone(UTC) <= LATEST_DUE_AT
    except (ValueError, OverflowError):
        return False


def served_schema() -> BaseSchema:
    api_settings = Settings()
    app = create_app(make_container(api_settings, Backend.MEMORY, HandlerRegistry()), api_settings)
    return schemathesis.openapi.from_asgi("/schema/openapi.json", app)


CaseTest = Callable[[Case[Any]], None]

# Typed here: the library declares the decorator as a bare Callable.
for_every_operation: Callable[[CaseTest], CaseTest] = served_schema().parametrize()


@for_every_operation
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_response_conforms_to_the_served_schema(case: Case[Any]) -> None:
    case.call_and_validate(checks=CHECKS if stated_in_words_only(case) is None else CONFORMANCE)
