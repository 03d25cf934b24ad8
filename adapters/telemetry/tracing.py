"""OpenTelemetry tracing: a span per HTTP request and per step of a job's life.

A job's `traceparent` names the span that enqueued it; the scheduler's re-queue or
dead-lettering of the job and each of the worker's attempts are children of that span, so a
job's whole life is one trace. Spans carry `job_id` and `queue` attributes; log lines
written while a span is current carry its `trace_id`.

Exporters: `stdout` writes one JSON object per finished span per line to standard output
(logs go to standard error), in batches from a background thread; `none` traces (trace
ids in logs, traceparents stored with jobs) without exporting anything.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import Token
from functools import cache
from types import TracebackType
from typing import TYPE_CHECKING, TextIO
from uuid import UUID

from taskforge.adapters.telemetry.logging import trace_id_var
from taskforge.application.ports import AttributeValue

if TYPE_CHECKING:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

EXPORTERS = ("stdout", "none")
"""The TRACING_EXPORTER values."""


@cache
def _propagator() -> TraceContextTextMapPropagator:
    # OpenTelemetry loads with the first tracer: a process that does not trace never pays
    # for it (its SDK is the larger part of a worker's start-up otherwise).
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def _one_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


def traceparent_of(span: trace.Span) -> str:
    """The span's context in W3C traceparent form: version-traceid-spanid-flags."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_traceparent() -> str | None:
    """The traceparent (as `traceparent_of` writes it) of the span current in the caller's
    context, so that a job stored outside TaskForge's own tracing (on an application's
    connection) continues the application's trace; None without a current, valid span."""
    # An application that traces has imported the trace API to start its span. One that
    # has not cannot have a current span, and does not pay for loading OpenTelemetry here.
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import trace

    span = trace.get_current_span()
    return traceparent_of(span) if span.get_span_context().is_valid else None


def _parent_context(traceparent: str | None) -> otel_context.Context | None:
    """The context a traceparent names; None (the current context) when there is none. An
    invalid traceparent yields an empty context: the span starts a new trace."""
    if traceparent is None:
        return None
    return _propagator().extract({"traceparent": traceparent})


class OpenTelemetrySpan:
    """The `TraceSpan` port on an OpenTelemetry span."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self._tokens: tuple[Token[otel_context.Context], Token[str | None]] | None = None

    @property
    def traceparent(self) -> str:
        return traceparent_of(self.span)

    @property
    def trace_id(self) -> str:
        return f"{self.span.get_span_context().trace_id:032x}"

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.span.set_attribute(key, value)

    def fail(self, error: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        self.span.set_status(Status(StatusCode.ERROR, error))

    def end(self) -> None:
        self.span.end()

    def __enter__(self) -> OpenTelemetrySpan:
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        self._tokens = (
            otel_context.attach(trace.set_span_in_context(self.span)),
            trace_id_var.set(self.trace_id),
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry.trace import Status, StatusCode

        if isinstance(exc, Exception):
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        elif exc is not None:
            self.span.set_attribute("interrupted", True)  # cancelled: not an error of its own
        if self._tokens is not None:
            context_token, trace_id_token = self._tokens
            trace_id_var.reset(trace_id_token)
            otel_context.detach(context_token)
        self.span.end()


class OpenTelemetryTracing:
    """The `JobTracer` port on the OpenTelemetry SDK, plus request spans for the HTTP API.

    Owns its TracerProvider; `install` makes it the global one, so spans that handlers start
    with the OpenTelemetry API become children of the job's span. `shutdown` exports what
    is left."""

    def __init__(
        self,
        service_name: str,
        exporter: str,
        out: TextIO | None = None,
        export_delay_ms: int = 5000,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        export_timeout_ms: int = 30_000,
    ) -> None:
        """`export_delay_ms`: milliseconds between batches of finished spans (positive);
        `max_queue_size`: finished spans held for export, the oldest dropped past it;
        `max_export_batch_size`: spans exported at once (1 to `max_queue_size`);
        `export_timeout_ms`: milliseconds an export may take. Each is passed to the span
        processor, which then reads none of the SDK's OTEL_BSP_* variables itself."""
        if exporter not in EXPORTERS:
            raise ValueError(f"unknown tracing exporter {exporter!r}")
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if exporter == "stdout":
            console = ConsoleSpanExporter(out=out or sys.stdout, formatter=_one_line)
            processor = BatchSpanProcessor(
                console,
                max_queue_size=max_queue_size,
                schedule_delay_millis=export_delay_ms,
                max_export_batch_size=max_export_batch_size,
                export_timeout_millis=export_timeout_ms,
            )
            self.provider.add_span_processor(processor)
        self._tracer = self.provider.get_tracer("taskforge")

    def start_span(
        self,
        name: str,
        *,
        job_id: UUID,
        queue: str,
        parent: str | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> OpenTelemetrySpan:
        span = self._tracer.start_span(
            name,
            context=_parent_context(parent),
            attributes={"job_id": str(job_id), "queue": queue, **(attributes or {})},
        )
        return OpenTelemetrySpan(span)

    @contextmanager
    def request_span(self, method: str, traceparent: str | None) -> Iterator[OpenTelemetrySpan]:
        """A server span for one HTTP request, current while it is served: a child of the
        caller's `traceparent` header when it is valid. Named `<method>` until the caller
        knows the route (`name_request`)."""
        from opentelemetry.trace import SpanKind

        span = self._tracer.start_span(
            method,
            context=_parent_context(traceparent) if traceparent else None,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method},
        )
        with OpenTelemetrySpan(span) as current:
            yield current

    @staticmethod
    def name_request(span: OpenTelemetrySpan, method: str, route: str, status: int) -> None:
        span.span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.fail(f"HTTP {status}")

    def install(self) -> None:
        """Make this provider the process's global one (once per process)."""
        from opentelemetry import trace

        trace.set_tracer_provider(self.provider)

    def shutdown(self) -> None:
        self.provider.shutdown()
