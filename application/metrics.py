"""Job metrics as plain counts: recorded in memory by each worker, published in batches.

A worker's calls to the `WorkerMetrics` port land in a `JobMetricsRecorder`: a few integer
increments per job, no I/O. A `MetricsPublisher` (metrics_publisher.py) hands what
accumulated to the cluster-wide `MetricsStore` about once a second, in one write, with the
worker's load over that interval; the API renders the store's totals. The telemetry adapter
turns these values into Prometheus series.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field, fields

JOB_SECONDS_BUCKETS: tuple[float, ...] = (
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
"""Upper bounds (seconds) of the job runtime and time-in-queue histograms, from 1 ms to
10 min: jobs range from no-ops to long batch work. A last bucket above them counts the rest."""

UNREGISTERED_JOB_TYPE = "(unregistered)"
"""The job_type label of jobs no handler is registered for: any client can invent job
types, and each would otherwise become series of its own. No valid jobType looks like it."""


@dataclass(slots=True)
class QueueCounts:
    """Counters of one queue."""

    attempts: int = 0
    """Attempts started: each handler run, snoozed ones too (a job handed back for lack of
    a handler here is none). Each one that ended is counted once more, in `success`,
    `failure`, `snoozed` or `interrupted`."""
    success: int = 0
    failure: int = 0
    """Attempts that ended in a failure, retryable or terminal, or whose settlement the
    store did not take."""
    snoozed: int = 0
    """Attempts whose handler asked to run the job later (taskforge.Snooze)."""
    interrupted: int = 0
    """Attempts stopped before they settled: at shutdown (the job handed back) or because
    their lease was lost."""
    concurrency_throttled: int = 0
    """Fetches deferred because every slot was busy."""
    rate_throttled: int = 0
    """Times a job was deferred by the queue's rate limit (one job may be deferred more
    than once before it runs)."""
    leases_lost: int = 0

    def add(self, other: QueueCounts) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


COUNTERS = tuple(counter.name for counter in fields(QueueCounts))
"""The fields of `QueueCounts`, in the order they are declared and rendered."""


def _empty_buckets() -> list[int]:
    return [0] * (len(JOB_SECONDS_BUCKETS) + 1)


@dataclass(slots=True)
class DurationHistogram:
    """Observed durations: how many fell in each bucket of JOB_SECONDS_BUCKETS (a value
    equal to a bound counts in that bound's bucket; the last entry counts the values above
    every bound), not cumulative, and their sum."""

    buckets: list[int] = field(default_factory=_empty_buckets)
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(JOB_SECONDS_BUCKETS, seconds)] += 1
        self.total += seconds

    def add(self, other: DurationHistogram) -> None:
        for index, count in enumerate(other.buckets):
            self.buckets[index] += count
        self.total += other.total

    @property
    def count(self) -> int:
        return sum(self.buckets)

    def cumulative(self) -> list[int]:
        """Counts of values at or below each bound, then of all values (Prometheus' `le`)."""
        running, result = 0, []
        for count in self.buckets:
            running += count
            result.append(running)
        return result


SeriesKey = tuple[str, str]
"""(queue, job_type)"""


@dataclass(slots=True)
class JobMetrics:
    """Counters per queue and duration histograms per queue and job type: either a batch
    (what happened since the last flush) or totals (everything since the store began)."""

    counts: dict[str, QueueCounts] = field(default_factory=dict)
    runtime: dict[SeriesKey, DurationHistogram] = field(default_factory=dict)
    """Handler run time per attempt."""
    time_in_queue: dict[SeriesKey, DurationHistogram] = field(default_factory=dict)
    """From when the job was due (created, or its retry time) to the start of the attempt."""

    def queue(self, name: str) -> QueueCounts:
        counts = self.counts.get(name)
        if counts is None:
            counts = self.counts[name] = QueueCounts()
        return counts

    def add(self, other: JobMetrics) -> None:
        """Add `other`'s counts to these; `other` is left as it is and shares nothing."""
        for queue, counts in other.counts.items():
            self.queue(queue).add(counts)
        for mine, theirs in (
            (self.runtime, other.runtime),
            (self.time_in_queue, other.time_in_queue),
        ):
            for key, histogram in theirs.items():
                target = mine.get(key)
                if target is None:
                    target = mine[key] = DurationHistogram()
                target.add(histogram)

    def copy(self) -> JobMetrics:
        duplicate = JobMetrics()
        duplicate.add(self)
        return duplicate

    @property
    def queues(self) -> set[str]:
        keys = (*self.runtime, *self.time_in_queue)
        return set(self.counts) | {queue for queue, _ in keys}

    def is_empty(self) -> bool:
        return not (self.counts or self.runtime or self.time_in_queue)


@dataclass(frozen=True, slots=True)
class QueueLoad:
    busy: float
    """Busy slots, averaged over the interval since the worker's previous flush."""
    slots: int


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """How busy one worker was on each queue it serves."""

    worker_id: str
    queues: dict[str, QueueLoad]


@dataclass(frozen=True, slots=True)
class ClusterMetrics:
    """What the MetricsStore holds: totals summed over every worker that ever flushed, and
    the load of each live worker (one that flushed within its TTL)."""

    totals: JobMetrics
    workers: list[WorkerLoad]

    def utilization(self) -> dict[str, float]:
        """Per queue: busy slots over all slots of the live workers serving it."""
        busy: dict[str, float] = {}
        slots: dict[str, int] = {}
        for worker in self.workers:
            for queue, load in worker.queues.items():
                busy[queue] = busy.get(queue, 0.0) + load.busy
                slots[queue] = slots.get(queue, 0) + load.slots
        return {queue: busy[queue] / slots[queue] if slots[queue] else 0.0 for queue in busy}

    def live_workers(self) -> dict[str, int]:
        """Per queue: how many live workers serve it."""
        live: dict[str, int] = {}
        for worker in self.workers:
            for queue in worker.queues:
                live[queue] = live.get(queue, 0) + 1
        return live

    @property
    def queues(self) -> set[str]:
        return self.totals.queues | {queue for w in self.workers for queue in w.queues}


@dataclass(slots=True)
class _Busy:
    """Slot time used on one queue: `busy` slots since `since` (monotonic seconds), plus the
    slot-seconds accumulated earlier in the current interval."""

    busy: int
    slots: int
    since: float
    slot_seconds: float = 0.0


class JobMetricsRecorder:
    """The `WorkerMetrics` port in memory, for one worker process.

    Each call is a few increments under a lock (the process metrics server reads from its
    own thread). `take` hands over what accumulated since the previous take, as a batch for
    the MetricsStore, and the worker's load over that interval; `totals` is everything this
    process recorded, for its own metrics endpoint."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._pending = JobMetrics()
        self._taken = JobMetrics()
        self._busy: dict[str, _Busy] = {}
        self._interval_start = monotonic()
        self._last_load: dict[str, QueueLoad] = {}

    def job_started(self, queue: str, job_type: str, time_in_queue: float) -> None:
        with self._lock:
            pending = self._pending
            pending.queue(queue).attempts += 1
            _histogram(pending.time_in_queue, queue, job_type).observe(time_in_queue)

    def job_finished(self, queue: str, job_type: str, runtime: float, succeeded: bool) -> None:
        with self._lock:
            pending = self._pending
            _histogram(pending.runtime, queue, job_type).observe(runtime)
            counts = pending.queue(queue)
            if succeeded:
                counts.success += 1
            else:
                counts.failure += 1

    def job_snoozed(self, queue: str, job_type: str, runtime: float) -> None:
        with self._lock:
            _histogram(self._pending.runtime, queue, job_type).observe(runtime)
            self._pending.queue(queue).snoozed += 1

    def job_interrupted(self, queue: str) -> None:
        with self._lock:
            self._pending.queue(queue).interrupted += 1

    def concurrency_throttled(self, queue: str) -> None:
        with self._lock:
            self._pending.queue(queue).concurrency_throttled += 1

    def rate_throttled(self, queue: str, count: int) -> None:
        with self._lock:
            self._pending.queue(queue).rate_throttled += count

    def lease_lost(self, queue: str) -> None:
        with self._lock:
            self._pending.queue(queue).leases_lost += 1

    def utilization(self, queue: str, busy: int, slots: int) -> None:
        now = self._monotonic()
        with self._lock:
            state = self._busy.get(queue)
            if state is None:
                # A queue seen for the first time: its counters start at zero, so they are
                # published (and rate() works) before anything happens on it.
                self._pending.queue(queue)
                self._busy[queue] = _Busy(busy=busy, slots=slots, since=now)
                return
            state.slot_seconds += state.busy * (now - state.since)
            state.busy, state.slots, state.since = busy, slots, now

    def take(self) -> tuple[JobMetrics, dict[str, QueueLoad]]:
        """What was recorded since the previous take, and the average load per queue over
        that interval. The batch becomes the caller's."""
        now = self._monotonic()
        with self._lock:
            batch, self._pending = self._pending, JobMetrics()
            self._taken.add(batch)
            elapsed = now - self._interval_start
            self._interval_start = now
            load = {}
            for queue, state in self._busy.items():
                state.slot_seconds += state.busy * (now - state.since)
                state.since = now
                busy = state.slot_seconds / elapsed if elapsed > 0 else float(state.busy)
                load[queue] = QueueLoad(busy=busy, slots=state.slots)
                state.slot_seconds = 0.0
            self._last_load = load
        return batch, load

    def totals(self) -> JobMetrics:
        """Everything this process recorded so far (a copy)."""
        with self._lock:
            totals = self._taken.copy()
            totals.add(self._pending)
        return totals

    def load(self) -> dict[str, QueueLoad]:
        """The load per queue over the last interval taken; before the first take, now."""
        with self._lock:
            current = {
                queue: QueueLoad(busy=float(state.busy), slots=state.slots)
                for queue, state in self._busy.items()
            }
            return {**current, **self._last_load}


def _histogram(
    series: dict[SeriesKey, DurationHistogram], queue: str, job_type: str
) -> DurationHistogram:
    key = (queue, job_type)
    histogram = series.get(key)
    if histogram is None:
        histogram = series[key] = DurationHistogram()
    return histogram
