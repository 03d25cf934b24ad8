"""OpenTelemetryTracing's span processor: batched as the settings say, whatever the SDK's own
OTEL_BSP_* variables hold (Settings has read and checked them already)."""

from __future__ import annotations

import io
import logging
import time
import uuid

import pytest

from taskforge.adapters.telemetry.tracing import OpenTelemetryTracing

DEADLINE = 10.0


def test_the_span_processor_reads_none_of_the_sdks_batch_variables(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Read by the SDK, each would end in a ValueError (the zeros) or a logged error.
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "0")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "0")
    monkeypatch.setenv("OTEL_BSP_EXPORT_TIMEOUT", "soon")
    out = io.StringIO()

    tracing = OpenTelemetryTracing(
        "taskforge-test",
        "stdout",
        out=out,
        export_delay_ms=5000,
        max_queue_size=2048,
        max_export_batch_size=512,
        export_timeout_ms=30_000,
    )
    tracing.start_span("taskforge.job.run", job_id=uuid.uuid4(), queue="jobs:ready").end()
    tracing.shutdown()

    assert len(out.getvalue().splitlines()) == 1
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_a_full_batch_of_spans_is_exported_without_waiting_for_the_delay() -> None:
    out = io.StringIO()
    tracing = OpenTelemetryTracing(
        "taskforge-test", "stdout", out=out, export_delay_ms=3_600_000, max_export_batch_size=1
    )
    try:
        tracing.start_span("taskforge.job.run", job_id=uuid.uuid4(), queue="jobs:ready").end()

        deadline = time.monotonic() + DEADLINE
        while not out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert '"name": "taskforge.job.run"' in out.getvalue()
    finally:
        tracing.shutdown()
