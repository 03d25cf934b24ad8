"""`taskforge.Client` against the API on each backend: an enqueue that finds its job stored
returns it as a conflict, one job at a time and in a batch."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from dishka import AsyncContainer

from taskforge.client import Client
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.http.app import create_app
from tests.integration.http.conftest import BASE_URL


@pytest.fixture
async def tf(container: AsyncContainer, settings: Settings) -> AsyncIterator[Client]:
    transport = httpx.ASGITransport(app=create_app(container, settings))  # type: ignore[arg-type]
    async with Client(BASE_URL, transport=transport) as client:
        yield client


async def test_an_enqueue_that_finds_its_job_stored_returns_it_as_a_conflict(tf: Client) -> None:
    created = await tf.enqueue("email", idempotency_key="order-7")
    held = await tf.enqueue("report", unique_key="daily")
    found = await tf.enqueue("email", idempotency_key="order-7")
    unique = await tf.enqueue("report", unique_key="daily")

    assert (created.conflict, held.conflict) == (False, False)
    assert (found.id, found.conflict) == (created.id, True)
    assert (unique.id, unique.conflict) == (held.id, True)
    assert (await tf.get(found.id)).conflict is False


async def test_enqueue_many_marks_each_job_it_found_stored_as_a_conflict(tf: Client) -> None:
    created = await tf.enqueue("email", idempotency_key="order-7")
    held = await tf.enqueue("report", unique_key="daily")

    items = await tf.enqueue_many(
        [
            {"job_type": "email", "idempotency_key": "order-7"},
            {"job_type": "report", "unique_key": "daily"},
            {"job_type": "email", "idempotency_key": "order-8"},
            {"job_type": "email", "idempotency_key": "order-8"},  # the job before it
            {"job_type": "email"},
        ]
    )

    assert [item.conflict for item in items] == [True, True, False, True, False]
    assert [items[0].id, items[1].id, items[3].id] == [created.id, held.id, items[2].id]
