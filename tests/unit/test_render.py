"""taskforge-cli's views of the API's resources, as plain text."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console, RenderableType

from taskforge.cli.render import _policy, job_detail, jobs_table, watch_line


def test_a_policy_reads_its_numbers_in_full_never_in_exponent_form() -> None:
    job = {
        "initialDelay": 1.0,
        "backoff": 1_000_000.0,
        "maxDelay": 315_360_000.0,
        "jitter": False,
        "visibilityTimeout": 30.0,
        "timeout": 0,
    }

    assert _policy(job) == (
        "backoff 1s x1000000 up to 87600h00m, no jitter; visibility timeout 30s"
    )


def _text(renderable: RenderableType) -> str:
    console = Console(width=200, file=io.StringIO(), color_system=None)
    console.print(renderable)
    output = console.file
    assert isinstance(output, io.StringIO)
    return output.getvalue()


def _job(state: str) -> dict[str, Any]:
    return {
        "id": "0190d3f6-0000-7000-8000-000000000001",
        "queue": "mail",
        "jobType": "email",
        "state": state,
        "attemptCount": 2,
        "maxAttempts": 3,
        "createdAt": "2026-12-07T10:00:00Z",
        "updatedAt": "2026-12-07T10:00:05Z",
        "lastError": "RuntimeError: upstream 503",
    }


def test_a_job_that_succeeded_after_a_failure_lists_no_error_and_shows_it_as_earlier() -> None:
    succeeded, failed = _job("SUCCEEDED"), _job("FAILED")

    assert "upstream 503" not in _text(jobs_table([succeeded], plain=True, width=200))
    assert "upstream 503" in _text(jobs_table([failed], plain=True, width=200))
    assert "upstream 503" not in watch_line(succeeded).plain
    assert "last error: RuntimeError: upstream 503" in watch_line(failed).plain
    detail = _text(job_detail(succeeded, sent=succeeded, plain=True))
    assert "earlier error" in detail and "last error" not in detail
    assert "last error" in _text(job_detail(failed, sent=failed, plain=True))
