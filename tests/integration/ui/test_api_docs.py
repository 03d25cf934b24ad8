"""The API docs (/schema) in Chromium against `taskforge dev` with API_TOKEN set: Swagger UI
renders the operations and calls the API from TaskForge's own files, under the page's
Content-Security-Policy (`open_page` fails the test on any breach or other host)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from .conftest import OpenPage, Server, launch, wait_until_healthy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def secured_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = launch([["dev"]], {}, tmp_path_factory.mktemp("docs"), secrets.token_hex(12))
    try:
        wait_until_healthy(server)
        yield server
    finally:
        server.stop()


def test_the_docs_page_lists_the_operations_and_cannot_be_framed(
    secured_dev: Server, open_page: OpenPage
) -> None:
    page = open_page(secured_dev)
    response = page.goto("/schema")

    assert response is not None
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    expect(page.locator(".opblock-post .opblock-summary-path[data-path='/jobs']")).to_be_visible()
    expect(page.locator(".opblock-get .opblock-summary-path[data-path='/dlq']")).to_be_visible()


def test_an_operation_is_tried_from_the_docs_page(secured_dev: Server, open_page: OpenPage) -> None:
    page = open_page(secured_dev)
    page.goto("/schema")

    page.locator(".opblock-get .opblock-summary-path[data-path='/healthz']").click()
    page.get_by_role("button", name="Try it out").click()
    page.get_by_role("button", name="Execute").click()

    status = page.locator(".live-responses-table tr.response .response-col_status")
    expect(status).to_have_text("200")
