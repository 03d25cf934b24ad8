"""The spec's Prometheus metrics, in one registry per process."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

# The `_created` series double every counter's output and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# From 1 ms to 10 min: jobs range from no-ops to long batch work.
JOB_SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)


class PrometheusMetrics:
    """Owns the registry that GET /metrics renders; implements the WorkerMetrics port."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge(
            "taskforge_queue_depth", "Hints waiting in the ready queue.", ["queue"], registry=r
        )
        self.dlq_count = Gauge("taskforge_dlq_count", "Jobs in the dead-letter queue.", registry=r)
        self.attempts = Counter(
            "taskforge_job_attempts", "Attempts started.", ["queue"], registry=r
        )
        self.successes = Counter(
            "taskforge_job_success", "Attempts that succeeded.", ["queue"], registry=r
        )
        self.failures = Counter(
            "taskforge_job_failure",
            "Attempts that failed (retryable or terminal).",
            ["queue"],
            registry=r,
        )
        self.runtime = Histogram(
            "taskforge_job_runtime_seconds",
            "Handler run time per attempt.",
            ["queue", "job_type"],
            buckets=JOB_SECONDS_BUCKETS,
            registry=r,
        )
        self.time_in_queue = Histogram(
            "taskforge_job_time_in_queue_seconds",
            "From due to start of an attempt.",
            ["queue", "job_type"],
            buckets=JOB_SECONDS_BUCKETS,
            registry=r,
        )
        self.worker_utilization = Gauge(
            "taskforge_worker_utilization",
            "Busy slots over total slots.",
            ["queue"],
            registry=r,
        )
        self.concurrency_throttled_total = Counter(
            "taskforge_worker_concurrency_throttled",
            "Fetches deferred because every slot was busy.",
            ["queue"],
            registry=r,
        )
        self.rate_throttled_total = Counter(
            "taskforge_worker_rate_throttled",
            "Jobs deferred by the queue's rate limit.",
            ["queue"],
            registry=r,
        )
        self.leases_lost = Counter(
            "taskforge_worker_leases_lost",
            "Attempts whose lease was lost before they settled.",
            ["queue"],
            registry=r,
        )

    def job_started(self, queue: str, job_type: str, time_in_queue: float) -> None:
        self.attempts.labels(queue).inc()
        self.time_in_queue.labels(queue, job_type).observe(time_in_queue)

    def job_finished(self, queue: str, job_type: str, runtime: float, succeeded: bool) -> None:
        self.runtime.labels(queue, job_type).observe(runtime)
        (self.successes if succeeded else self.failures).labels(queue).inc()

    def concurrency_throttled(self, queue: str) -> None:
        self.concurrency_throttled_total.labels(queue).inc()

    def rate_throttled(self, queue: str, count: int) -> None:
        self.rate_throttled_total.labels(queue).inc(count)

    def utilization(self, queue: str, busy: int, slots: int) -> None:
        self.worker_utilization.labels(queue).set(busy / slots if slots else 0.0)

    def lease_lost(self, queue: str) -> None:
        self.leases_lost.labels(queue).inc()
