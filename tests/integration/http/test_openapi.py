"""The served OpenAPI document describes the API as it behaves: every spec route, its
request and response models, its error responses (all ErrorOut) and an example job."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from importlib import metadata
from typing import Any

import httpx
import pytest

from taskforge.application.handlers import HandlerRegistry
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.container import Backend, make_container
from taskforge.entrypoints.http.app import DOCS_ASSETS_PATH, create_app
from tests.integration.http.conftest import BASE_URL, assert_error

SPEC_OPERATIONS = {
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/stats"),
    ("get", "/jobs"),
    ("post", "/jobs"),
    ("get", "/jobs/{job_id}"),
    ("get", "/queues/{queue_name}/jobs"),
    ("post", "/jobs/{job_id}/retry"),
    ("post", "/jobs/{job_id}/dlq"),
    ("post", "/jobs/{job_id}/cancel"),
    ("get", "/dlq"),
    ("get", "/dlq/{job_id}"),
    ("post", "/dlq/{job_id}/replay"),
    ("get", "/metrics"),
    ("post", "/jobs/batch"),  # beyond the spec: batch enqueue
    ("get", "/queues"),  # beyond the spec: queues with their pause
    ("post", "/queues/{queue_name}/pause"),
    ("post", "/queues/{queue_name}/resume"),
    ("post", "/schedules"),  # beyond the spec: periodic jobs
    ("get", "/schedules"),
    ("get", "/schedules/{name}"),
    ("delete", "/schedules/{name}"),
    ("post", "/schedules/{name}/pause"),
    ("post", "/schedules/{name}/resume"),
    ("get", "/workers"),  # beyond the spec: the worker registry
}
ERROR_REF = "#/components/schemas/ErrorOut"
OPEN_ROUTES = {"/healthz", "/readyz", "/metrics"}


@contextlib.asynccontextmanager
async def api_client(api_token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The API on the in-memory backend, called in this process."""
    settings = Settings(api_token=api_token)
    container = make_container(settings, Backend.MEMORY, HandlerRegistry())
    transport = httpx.ASGITransport(app=create_app(container, settings))  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client
    finally:
        await container.close()


async def fetch_schema(api_token: str | None = None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {api_token}"} if api_token else {}
    async with api_client(api_token) as client:
        response = await client.get("/schema/openapi.json", headers=headers)
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


@pytest.fixture
async def document() -> dict[str, Any]:
    return await fetch_schema()


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def response_ref(operation: dict[str, Any], status: str) -> str:
    ref: str = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
    return ref


def component(document: dict[str, Any], ref: str) -> dict[str, Any]:
    found: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return found


async def test_the_document_lists_exactly_the_spec_operations(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.")
    assert set(operations(document)) == SPEC_OPERATIONS


async def test_every_error_response_is_documented_as_error_out(document: dict[str, Any]) -> None:
    for key, operation in operations(document).items():
        errors = [status for status in operation["responses"] if status >= "400"]
        assert "500" in errors, key
        for status in errors:
            if key == ("get", "/readyz") and status == "503":
                continue
            assert response_ref(operation, status) == ERROR_REF, (key, status)


async def test_no_framework_error_shape_is_left_in_the_document(
    document: dict[str, Any],
) -> None:
    assert "status_code" not in str(document)


@pytest.mark.parametrize(
    ("key", "statuses"),
    [
        (("post", "/jobs"), {"400", "401", "403", "413", "415", "500", "503"}),
        (("get", "/jobs"), {"400", "401", "500", "503"}),
        (("get", "/jobs/{job_id}"), {"400", "401", "404", "500", "503"}),
        (("post", "/jobs/{job_id}/cancel"), {"400", "401", "403", "404", "409", "413", "415"}),
        (("post", "/jobs/{job_id}/dlq"), {"400", "401", "403", "404", "409", "413", "415"}),
        (("post", "/jobs/{job_id}/retry"), {"400", "401", "403", "404", "409"}),
        (("post", "/dlq/{job_id}/replay"), {"400", "401", "403", "404", "409"}),
        (("get", "/dlq/{job_id}"), {"400", "401", "404"}),
        (("get", "/readyz"), {"503"}),
        (("post", "/schedules"), {"200", "201", "400", "401", "403", "413", "415"}),
        (("get", "/schedules/{name}"), {"400", "401", "404"}),
        (("delete", "/schedules/{name}"), {"204", "400", "403", "404"}),
        (("post", "/schedules/{name}/pause"), {"400", "403", "404"}),
    ],
)
async def test_each_route_documents_the_errors_it_can_give(
    document: dict[str, Any], key: tuple[str, str], statuses: set[str]
) -> None:
    assert statuses <= set(operations(document)[key]["responses"])


async def test_post_jobs_documents_its_body_both_successes_and_an_example(
    document: dict[str, Any],
) -> None:
    operation = operations(document)[("post", "/jobs")]

    body = operation["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]
    [reference] = schema["allOf"]
    job_in = component(document, reference["$ref"])
    assert job_in["required"] == ["jobType"]
    assert job_in["additionalProperties"] is False
    assert set(job_in["properties"]) == {
        "jobType",
        "payload",
        "idempotencyKey",
        "uniqueKey",
        "queue",
        "maxAttempts",
        "initialDelay",
        "backoff",
        "maxDelay",
        "jitter",
        "visibilityTimeout",
        "runAt",
        "delay",
        "timeout",
        "priority",
    }
    [example] = schema["examples"]
    assert example["jobType"] == "email"
    assert response_ref(operation, "201") == "#/components/schemas/JobOut"
    assert response_ref(operation, "200") == "#/components/schemas/JobOut"


async def test_job_in_states_the_validation_rules(document: dict[str, Any]) -> None:
    properties = component(document, "#/JobIn")["properties"]

    assert (properties["maxAttempts"]["minimum"], properties["maxAttempts"]["maximum"]) == (1, 1000)
    assert (properties["priority"]["minimum"], properties["priority"]["maximum"]) == (0, 9)
    assert properties["initialDelay"]["minimum"] == 0
    assert properties["backoff"]["minimum"] == 1
    assert properties["visibilityTimeout"]["maximum"] == 43200
    assert properties["timeout"]["minimum"] == 0
    assert properties["idempotencyKey"]["maxLength"] == 255
    assert "pattern" in properties["jobType"]
    assert "taskforge:" in properties["queue"]["pattern"]


async def test_one_job_is_documented_with_its_errors_and_result_and_a_list_item_without(
    document: dict[str, Any],
) -> None:
    one = operations(document)[("get", "/jobs/{job_id}")]
    detail = component(document, response_ref(one, "200"))
    attempt_error = component(document, detail["properties"]["errors"]["items"]["$ref"])

    assert set(detail["properties"]) == set(component(document, "#/JobOut")["properties"]) | {
        "errors",
        "result",
    }
    assert {"errors", "result"}.isdisjoint(component(document, "#/JobOut")["properties"])
    assert set(attempt_error["properties"]) == {"attempt", "at", "error", "traceback"}


@pytest.mark.parametrize("path", ["/jobs/{job_id}/cancel", "/jobs/{job_id}/dlq"])
async def test_the_reason_body_is_optional_and_strict(document: dict[str, Any], path: str) -> None:
    body = operations(document)[("post", path)]["requestBody"]

    assert body["required"] is False
    reason_in = component(document, "#/ReasonIn")
    assert set(reason_in["properties"]) == {"reason"}
    assert reason_in["additionalProperties"] is False


@pytest.mark.parametrize(
    ("path", "page", "item"),
    [
        ("/jobs", "JobPage", "JobOut"),
        ("/queues/{queue_name}/jobs", "JobPage", "JobOut"),
        ("/dlq", "DeadLetterPage", "DeadLetterOut"),
    ],
)
async def test_lists_document_the_page_envelope_and_window(
    document: dict[str, Any], path: str, page: str, item: str
) -> None:
    operation = operations(document)[("get", path)]

    assert response_ref(operation, "200") == f"#/components/schemas/{page}"
    envelope = component(document, f"#/{page}")
    assert set(envelope["required"]) == {"items", "limit", "offset", "total"}
    assert envelope["properties"]["items"]["items"] == {"$ref": f"#/components/schemas/{item}"}
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert parameters["limit"]["schema"]["minimum"] == 1


async def test_job_state_is_documented_as_the_lifecycle_states(document: dict[str, Any]) -> None:
    state = component(document, "#/JobOut")["properties"]["state"]
    resolved = component(document, state["$ref"]) if "$ref" in state else state

    assert set(resolved["enum"]) == {
        "PENDING",
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
        "DLQ",
        "CANCELLED",
    }


async def test_metrics_are_documented_as_text(document: dict[str, Any]) -> None:
    content = operations(document)[("get", "/metrics")]["responses"]["200"]["content"]

    assert set(content) == {"text/plain"}


async def test_no_security_is_declared_without_an_api_token(document: dict[str, Any]) -> None:
    assert "security" not in document


async def test_exactly_the_routes_that_change_something_document_the_cross_site_403(
    document: dict[str, Any],
) -> None:
    """The middleware refuses every method but GET, HEAD and OPTIONS from another origin's
    page, before any route sees it."""
    for (method, path), operation in operations(document).items():
        assert ("403" in operation["responses"]) is (method not in {"get", "head"}), (method, path)


async def test_with_an_api_token_every_route_but_probes_and_metrics_needs_it() -> None:
    document = await fetch_schema(api_token="t0ken")

    assert document["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
    assert document["security"] == [{"BearerToken": []}]
    for (_, path), operation in operations(document).items():
        if path in OPEN_ROUTES:
            assert operation["security"] == [], path
        else:
            assert "security" not in operation, path


async def test_every_response_documents_the_request_id_header(document: dict[str, Any]) -> None:
    for key, operation in operations(document).items():
        for status, response in operation["responses"].items():
            header = response["headers"]["X-Request-ID"]
            assert header["required"] is True, (key, status)
            assert header["schema"]["type"] == "string"


async def test_the_bearer_scheme_is_declared_even_without_an_api_token(
    document: dict[str, Any],
) -> None:
    scheme = document["components"]["securitySchemes"]["BearerToken"]

    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


ASSET_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
async def test_the_docs_page_loads_every_asset_from_the_api_itself(page: str) -> None:
    async with api_client() as client:
        html = await client.get(page)
        assets = ASSET_REFERENCE.findall(html.text)
        answers = {asset: (await client.get(asset)).status_code for asset in assets}

    assert html.status_code == 200
    assert "SwaggerUIBundle" in html.text
    assert len(assets) >= 3  # the script bundle, its preset and the stylesheet at least
    assert [asset for asset in assets if not asset.startswith("/") or "//" in asset] == []
    assert "://" not in html.text.replace("http://www.w3.org", "")
    assert answers == dict.fromkeys(assets, 200)


@pytest.mark.parametrize("api_token", [None, "t0ken"], ids=["open API", "API_TOKEN set"])
async def test_docs_leads_to_the_docs_page_without_a_token(api_token: str | None) -> None:
    async with api_client(api_token) as client:
        response = await client.get("/docs")
        page = await client.get("/docs", follow_redirects=True)

    assert (response.status_code, response.headers["location"]) == (307, "/schema")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text


@pytest.mark.parametrize("path", ["/schema/redoc", "/schema/nope", "/schema/openapi.yaml"])
async def test_a_docs_path_that_serves_nothing_is_a_404_in_the_error_shape(path: str) -> None:
    async with api_client() as client:
        response = await client.get(path)

    assert_error(response, 404, "not_found")
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(
    "name",
    ["%00", "swagger-ui.css%00", "x%00.js", "a" * 300, "swagger-ui.css/x", "a/" * 3000],
    ids=["nul", "nul-after-a-file", "nul-inside", "too-long", "a-file-as-a-folder", "too-deep"],
)
async def test_a_docs_asset_path_no_file_can_have_is_a_404_in_the_error_shape(name: str) -> None:
    # The file system refuses such a look-up (ValueError, ENAMETOOLONG, ENOTDIR).
    async with api_client() as client:
        missing = await client.get(f"{DOCS_ASSETS_PATH}/{name}")
        present = await client.get(f"{DOCS_ASSETS_PATH}/swagger-ui.css")

    assert_error(missing, 404, "not_found")
    assert present.status_code == 200


async def test_the_document_states_the_installed_version(document: dict[str, Any]) -> None:
    assert document["info"]["version"] == metadata.version("taskforge")
