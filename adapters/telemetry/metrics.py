"""The spec's Prometheus metrics: rendered from job metric values, plus HTTP and process series.

Two views use the same names:
- the API's GET /metrics: the whole cluster, read from the MetricsStore on each scrape
  (`render_api_metrics`), with live queue depths, the DLQ size, this API process's HTTP
  requests and its process series;
- METRICS_ADDR of a worker or scheduler: that one process (`PrometheusMetrics`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from taskforge.application.metrics import (
    COUNTERS,
    JOB_SECONDS_BUCKETS,
    ClusterMetrics,
    DurationHistogram,
    JobMetrics,
    JobMetricsRecorder,
    QueueCounts,
    QueueLoad,
    SeriesKey,
)

# The `_created` series double every counter's output and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

METRICS_MEDIA_TYPE = "; ".join(
    part for part in CONTENT_TYPE_LATEST.split("; ") if not part.startswith("charset=")
)
"""The exposition format's media type without its charset, which the web framework adds
(written twice otherwise)."""

HTTP_SECONDS_BUCKETS = tuple(bound for bound in JOB_SECONDS_BUCKETS if bound <= 10.0)
"""Requests: the job buckets from 1 ms up to 10 s."""

_BOUNDS = (*(repr(float(bound)) for bound in JOB_SECONDS_BUCKETS), "+Inf")
"""The `le` labels, written as prometheus_client writes them (0.001, 1.0, +Inf)."""

_COUNTERS = (
    ("taskforge_job_attempts", "Attempts started: handler runs, snoozed ones too."),
    ("taskforge_job_success", "Attempts that succeeded."),
    (
        "taskforge_job_failure",
        "Attempts that ended without a stored success: an error (retryable or terminal), a "
        "timeout, or an outcome the store did not take (lease lost, store unavailable), even "
        "a handler's return.",
    ),
    ("taskforge_job_snoozed", "Attempts whose handler snoozed the job (taskforge.Snooze)."),
    (
        "taskforge_job_interrupted",
        "Attempts stopped before they settled: at shutdown, or on a lost lease.",
    ),
    (
        "taskforge_worker_concurrency_throttled",
        "Fetches deferred because every slot of a worker was busy.",
    ),
    (
        "taskforge_worker_rate_throttled",
        "Times a job was deferred by the queue's rate limit (one job may be deferred again).",
    ),
    ("taskforge_worker_leases_lost", "Attempts whose lease was lost before they settled."),
)
"""One series per field of QueueCounts, named after it (the spec's names)."""


def _counter_field(series: str) -> str:
    name = series.removeprefix("taskforge_job_").removeprefix("taskforge_worker_")
    if name not in COUNTERS:
        raise AssertionError(f"{series} renders no field of QueueCounts")
    return name


_COUNTER_FIELDS = tuple((series, _counter_field(series), text) for series, text in _COUNTERS)
if len(_COUNTER_FIELDS) != len(COUNTERS):
    raise AssertionError("every field of QueueCounts is rendered as one series")


def job_metric_families(
    totals: JobMetrics, utilization: Mapping[str, float], queues: Iterable[str] = ()
) -> list[Metric]:
    """The job counters, the runtime and time-in-queue histograms and the utilisation
    gauge, one sample per queue (and job type), sorted. Each of `queues` has its counters
    and utilisation even when nothing was counted on it yet: zeros, not missing series."""
    families: list[Metric] = []
    zeros = dict.fromkeys(queues, 0.0)
    counts = {queue: QueueCounts() for queue in zeros} | totals.counts
    for name, field, documentation in _COUNTER_FIELDS:
        counter = CounterMetricFamily(name, documentation, labels=["queue"])
        for queue, queue_counts in sorted(counts.items()):
            counter.add_metric([queue], getattr(queue_counts, field))
        families.append(counter)
    families.append(
        _histogram("taskforge_job_runtime_seconds", "Handler run time per attempt.", totals.runtime)
    )
    families.append(
        _histogram(
            "taskforge_job_time_in_queue_seconds",
            "From when a job was due (created, or its retry time) to the start of its attempt.",
            totals.time_in_queue,
        )
    )
    gauge = GaugeMetricFamily(
        "taskforge_worker_utilization",
        "Busy slots over all slots of the workers serving the queue, averaged over about "
        "the last second.",
        labels=["queue"],
    )
    for queue, value in sorted((zeros | dict(utilization)).items()):
        gauge.add_metric([queue], value)
    families.append(gauge)
    return families


def _histogram(
    name: str, documentation: str, series: Mapping[SeriesKey, DurationHistogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["queue", "job_type"])
    for (queue, job_type), histogram in sorted(series.items()):
        buckets = list(zip(_BOUNDS, histogram.cumulative(), strict=True))
        family.add_metric([queue, job_type], buckets, sum_value=histogram.total)
    return family


def cluster_metric_families(
    view: ClusterMetrics, depths: Mapping[str, int], dead_letters: int
) -> list[Metric]:
    """What the API's /metrics shows of the cluster: every queue of `depths` (the default
    queue, and each one a worker serves or served) with all its series, at zero until a
    worker counts something there or while no live worker serves it."""
    queues = set(depths) | view.queues
    depth = GaugeMetricFamily(
        "taskforge_queue_depth", "Hints waiting in the queue's ready list.", labels=["queue"]
    )
    for queue, value in sorted(depths.items()):
        depth.add_metric([queue], value)
    dlq = GaugeMetricFamily("taskforge_dlq_count", "Jobs in the dead-letter queue.")
    dlq.add_metric([], dead_letters)
    workers = GaugeMetricFamily(
        "taskforge_workers",
        "Live workers serving the queue (each published its metrics within its TTL).",
        labels=["queue"],
    )
    for queue, count in sorted((dict.fromkeys(queues, 0) | view.live_workers()).items()):
        workers.add_metric([queue], count)
    job_families = job_metric_families(view.totals, view.utilization(), queues)
    return [depth, dlq, *job_families, workers]


class _Families:
    """A collector that yields metric families computed beforehand."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def process_registry() -> CollectorRegistry:
    """A registry with the process_* and python_* series of this process."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class _RecorderCollector:
    def __init__(self, recorder: JobMetricsRecorder) -> None:
        self._recorder = recorder

    def collect(self) -> Iterable[Metric]:
        return job_metric_families(self._recorder.totals(), _utilization(self._recorder.load()))


def _utilization(load: Mapping[str, QueueLoad]) -> dict[str, float]:
    return {
        queue: entry.busy / entry.slots if entry.slots else 0.0 for queue, entry in load.items()
    }


class PrometheusMetrics:
    """This process's own metrics, served on METRICS_ADDR by workers and schedulers: the
    jobs its recorder counted since it started, and the process series."""

    def __init__(self, recorder: JobMetricsRecorder) -> None:
        self.registry = process_registry()
        self.registry.register(_RecorderCollector(recorder))


class HttpMetrics:
    """The API process's requests: a counter and a latency histogram, labelled with the
    route template (never the raw path) and a bounded method."""

    def __init__(self) -> None:
        self.registry = process_registry()
        self.requests = Counter(
            "taskforge_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "taskforge_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["method", "route"],
            buckets=HTTP_SECONDS_BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)


def render_api_metrics(
    view: ClusterMetrics, depths: Mapping[str, int], dead_letters: int, http: HttpMetrics
) -> bytes:
    """The API's /metrics: the cluster view, then this process's HTTP and process series."""
    cluster = generate_latest(_Families(cluster_metric_families(view, depths, dead_letters)))
    return cluster + generate_latest(http.registry)
