"""Metrics (Prometheus), tracing (OpenTelemetry) and structured logging."""
