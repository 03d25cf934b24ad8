"""The providers of the Prometheus exposition, apart from the rest of the wiring so that
only a process that serves metrics loads prometheus_client: the API (its GET /metrics and
the per-request series) and a worker or scheduler given METRICS_ADDR. A worker without
METRICS_ADDR still records its job metrics (`JobMetricsRecorder`, published through the
MetricsStore for the API to render) and starts about 30 ms sooner."""

from __future__ import annotations

from dishka import Provider, Scope, provide

from taskforge.adapters.telemetry.metrics import HttpMetrics, PrometheusMetrics


class PrometheusProvider(Provider):
    """This process's Prometheus series: HTTP requests (the API's) and the process view of
    the job metrics (METRICS_ADDR's)."""

    scope = Scope.APP

    http_metrics = provide(HttpMetrics)
    process_metrics = provide(PrometheusMetrics)
