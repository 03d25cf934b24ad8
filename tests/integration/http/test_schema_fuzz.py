"""Schema-driven fuzzing: schemathesis generates valid and invalid requests for every
operation in the served OpenAPI document and checks each response against it. No request
may end in a 5xx, and every status, content type and body must be one the document declares.

In process (ASGI), on the in-memory backend; bounded and derandomized, so a run is quick and
repeatable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, checks
from schemathesis.schemas import BaseSchema

from taskforge.application.handlers import HandlerRegistry
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.container import Backend, make_container
from taskforge.entrypoints.http.app import create_app

EXAMPLES_PER_OPERATION = 40

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


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
    case.call_and_validate(checks=CHECKS)
