"""A job's result end to end on Postgres and Redis: a worker process runs a handler that
returns a dict, and `SyncClient.wait` against the API process returns the job with it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from taskforge.client import SyncClient
from taskforge.client.values import Job

from .conftest import DEADLINE, Stack

pytestmark = pytest.mark.slow

QUOTES = """\
import taskforge


@taskforge.handler("quote")
async def quote(ctx: taskforge.JobContext) -> dict[str, object]:
    return {"order": ctx.payload["order"], "total": 41.5, "lines": [{"sku": "a-1", "qty": 2}]}
"""


async def test_sync_client_wait_returns_the_job_with_its_handlers_result(
    stack: Stack, tmp_path: Path
) -> None:
    (tmp_path / "quotes.py").write_text(QUOTES)
    await stack.start_api()
    stack.start_in(tmp_path, "worker", "--handlers", "quotes", PYTHONPATH="")
    assert stack.api_url is not None

    api_url = stack.api_url
    queue = stack.env["QUEUE_NAME"]  # this test's own: other tests' jobs share the database

    def enqueue_and_wait() -> tuple[Job, tuple[Job, ...]]:
        with SyncClient(api_url) as client:
            job = client.enqueue("quote", {"order": "o-42"})
            done = client.wait(job.id, timeout=DEADLINE)
            return done, client.list(queue=queue, status="SUCCEEDED").items

    done, listed = await asyncio.to_thread(enqueue_and_wait)

    assert done.state == "SUCCEEDED"
    assert done.result == {"order": "o-42", "total": 41.5, "lines": [{"sku": "a-1", "qty": 2}]}
    assert [(job.id, job.result) for job in listed] == [(done.id, None)]  # lists leave it out
