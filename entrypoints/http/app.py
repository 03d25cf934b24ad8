"""The Litestar application: routes, error shape, middleware, OpenAPI."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
from pathlib import Path
from typing import Any

from dishka import AsyncContainer
from litestar import Litestar, MediaType, Request, Response, Router, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIResponse,
    OpenAPIType,
    Schema,
    SecurityScheme,
)
from litestar.response import Redirect
from litestar.routes import HTTPRoute

from taskforge.domain.version import taskforge_version
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.http.errors import STATUS_CODES, error_response, handle_exception
from taskforge.entrypoints.http.injection import setup_injection
from taskforge.entrypoints.http.middleware import (
    DOCS_ALIAS,
    OPEN_PATHS,
    REQUEST_ID_HEADER,
    RequestContextMiddleware,
)
from taskforge.entrypoints.http.routes import ROUTES
from taskforge.entrypoints.http.static import static_files
from taskforge.entrypoints.http.ui import (
    STATIC_PATH,
    charts_from_start,
    dashboard,
    is_ui_path,
    ui_error,
)

BEARER = "BearerToken"
STRICT_BODIES = ("JobIn", "JobBatchIn", "ReasonIn")
"""Request bodies decoded with unknown fields forbidden."""
RUN_AT_AND_DELAY = Schema(
    required=["runAt", "delay"],
    properties={"runAt": Schema(type=OpenAPIType.STRING), "delay": Schema(type=OpenAPIType.NUMBER)},
)
"""What a job body must not be: runAt and delay both set (null counts as unset)."""
DOCS_PATH = "/schema"
DOCS_ASSETS_PATH = f"{DOCS_PATH}/assets"
"""Swagger UI's scripts, styles and icons, served by TaskForge itself: the docs work offline."""
DOCS_PAGE_POLICY = (
    "default-src 'self'; script-src 'self' {scripts}; style-src 'self' {styles}; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
"""The docs page's Content-Security-Policy: TaskForge's own files, the page's own inline
script and style (by hash), the data: icons of Swagger UI's stylesheet; never framed."""
_INLINE_BLOCK = re.compile(rb"<(script|style)\b([^>]*)>(.*?)</\1\s*>", re.IGNORECASE | re.DOTALL)


def create_app(container: AsyncContainer, settings: Settings) -> Litestar:
    """The API on `container`'s backend. The OpenAPI schema is served at /schema
    (openapi.json at /schema/openapi.json)."""
    handlers: list[Any] = [*ROUTES, _docs_assets(), docs_alias]
    template_config = None
    lifespan: list[Any] = []
    if settings.ui_enabled:
        ui_router, template_config, ui_state = dashboard(settings)
        handlers.append(ui_router)
        lifespan.append(charts_from_start)
    app = Litestar(
        route_handlers=handlers,
        lifespan=lifespan,
        exception_handlers={
            Exception: _handle_exception if settings.ui_enabled else handle_exception
        },
        request_max_body_size=settings.max_payload_bytes,
        openapi_config=_openapi_config(settings),
        template_config=template_config,
        debug=False,
        logging_config=None,
    )
    if settings.ui_enabled:
        app.state.taskforge_ui = ui_state
    setup_injection(container, app)
    # Wrapping the router itself (not the route handlers, as Litestar's middleware does)
    # covers unknown routes and wrong methods too.
    route_methods = {
        route.path: frozenset(route.methods) for route in app.routes if isinstance(route, HTTPRoute)
    }
    app.asgi_handler = RequestContextMiddleware(
        app.asgi_handler,
        api_token=settings.api_token,
        container=container,
        route_methods=route_methods,
        deadline=settings.request_deadline,
        file_paths=(DOCS_ASSETS_PATH, STATIC_PATH),
    )
    _complete_openapi(app.openapi_schema, secured=bool(settings.api_token))
    return app


@get(DOCS_ALIAS, include_in_schema=False)
async def docs_alias() -> Redirect:
    """/docs, where users of other Python web APIs look first, leads to the docs page."""
    return Redirect(DOCS_PATH, status_code=307)


def _handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The dashboard answers HTML, its unknown paths and wrong methods too; the API, JSON."""
    if is_ui_path(request.url.path):
        return ui_error(request, exc)
    return handle_exception(request, exc)


def _openapi_config(settings: Settings) -> OpenAPIConfig:
    secured = bool(settings.api_token)
    return OpenAPIConfig(
        title="TaskForge",
        version=taskforge_version(),
        description=(
            "A fault-tolerant distributed job queue and scheduler. Every error response is "
            '`{"code", "message", "details"}`; every response carries `X-Request-ID`.'
        ),
        path=DOCS_PATH,
        openapi_router=Router(
            DOCS_PATH, route_handlers=[], include_in_schema=False, after_request=_docs_answer
        ),
        render_plugins=[
            SwaggerRenderPlugin(
                js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
                css_url=f"{DOCS_ASSETS_PATH}/swagger-ui.css",
                standalone_preset_js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-standalone-preset.js",
                favicon=f"<link rel='icon' href='{DOCS_ASSETS_PATH}/favicon-32x32.png'>",
            )
        ],
        components=Components(
            security_schemes={
                BEARER: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description=(
                        "The server's API_TOKEN. Needed by every API route but /healthz, "
                        "/readyz and /metrics when the server sets API_TOKEN; not needed "
                        "otherwise. This document (/schema) is open, and the dashboard (/ui) "
                        "signs in with the same token."
                    ),
                )
            }
        ),
        security=[{BEARER: []}] if secured else None,
    )


def _docs_answer(response: Response[Any]) -> Response[Any]:
    """A docs page gets DOCS_PAGE_POLICY, made for its inline blocks. Litestar answers a path
    under /schema that no docs page serves with an HTML page; the API's 404 is its JSON
    error, as for any other unknown path."""
    if response.media_type != MediaType.HTML:
        return response
    if response.status_code == 404:
        return error_response(404, *STATUS_CODES[404])
    if isinstance(response.content, bytes):
        response.headers["Content-Security-Policy"] = _docs_page_policy(response.content)
    return response


def _docs_page_policy(page: bytes) -> str:
    """DOCS_PAGE_POLICY admitting exactly the page's inline scripts and styles: the script
    holds the OpenAPI document, so its hash follows the routes, the version and API_TOKEN."""
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for tag, attributes, text in _INLINE_BLOCK.findall(page):
        if b"src=" not in attributes.lower():
            digest = base64.b64encode(hashlib.sha256(text).digest()).decode("ascii")
            hashes[tag.lower()].append(f"'sha256-{digest}'")
    return DOCS_PAGE_POLICY.format(
        scripts=" ".join(hashes[b"script"]), styles=" ".join(hashes[b"style"])
    )


def _docs_assets() -> Router:
    """Swagger UI's files from the swagger-ui-py distribution (found without importing it)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py distribution is not installed")
    static = Path(next(iter(spec.submodule_search_locations))) / "static"
    return static_files(DOCS_ASSETS_PATH, static, "docs-assets")


def _complete_openapi(schema: OpenAPI, *, secured: bool) -> None:
    """Say what the generator cannot: every response carries X-Request-ID, request bodies
    refuse unknown fields, a job takes runAt or delay but not both, and probes and the
    metrics scrape need no token."""
    request_id = OpenAPIHeader(
        schema=Schema(type=OpenAPIType.STRING),
        required=True,
        description="The caller's X-Request-ID when it was a sane token, otherwise a new one.",
    )
    for path, item in (schema.paths or {}).items():
        for operation in (item.get, item.post, item.put, item.patch, item.delete):
            if operation is None:
                continue
            for response in (operation.responses or {}).values():
                if isinstance(response, OpenAPIResponse):
                    headers = {**(response.headers or {}), REQUEST_ID_HEADER: request_id}
                    response.headers = headers
            if secured and path in OPEN_PATHS:
                operation.security = []
    components = schema.components.schemas if schema.components else None
    for name in STRICT_BODIES:
        if components and isinstance(component := components.get(name), Schema):
            component.additional_properties = False
    if components and isinstance(job_in := components.get("JobIn"), Schema):
        job_in.schema_not = RUN_AT_AND_DELAY
