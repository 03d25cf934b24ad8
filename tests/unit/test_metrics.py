"""Job metrics in memory: the recorder a worker counts into, the publisher that flushes it
in batches, and the cluster view the API renders."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from taskforge.adapters.memory.metrics import InMemoryMetricsStore
from taskforge.adapters.telemetry.metrics import job_metric_families
from taskforge.application.metrics import (
    JOB_SECONDS_BUCKETS,
    ClusterMetrics,
    DurationHistogram,
    JobMetrics,
    JobMetricsRecorder,
    QueueCounts,
    QueueLoad,
    WorkerLoad,
)
from taskforge.application.metrics_publisher import MetricsPublisher


@dataclass
class FakeMonotonic:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FlakyStore:
    """A MetricsStore that fails the next `failures` writes, then keeps what it is given."""

    failures: int = 0
    batches: list[JobMetrics] = field(default_factory=list)
    loads: list[WorkerLoad] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    sequences: list[int] = field(default_factory=list)

    async def add(self, batch: JobMetrics, load: WorkerLoad, ttl: float, *, sequence: int) -> None:
        self.sequences.append(sequence)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("store down")
        self.batches.append(batch.copy())
        self.loads.append(load)

    async def remove_worker(self, worker_id: str) -> None:
        self.removed.append(worker_id)

    async def read(self) -> ClusterMetrics:
        raise NotImplementedError


def test_the_recorder_counts_attempts_outcomes_and_throttles_per_queue() -> None:
    recorder = JobMetricsRecorder()
    recorder.job_started("emails", "send", time_in_queue=0.2)
    recorder.job_finished("emails", "send", runtime=0.01, succeeded=True)
    recorder.job_started("emails", "send", time_in_queue=0.3)
    recorder.job_finished("emails", "send", runtime=0.02, succeeded=False)
    recorder.job_started("reports", "build", time_in_queue=1.0)
    recorder.concurrency_throttled("emails")
    recorder.rate_throttled("reports", 4)
    recorder.lease_lost("reports")

    totals = recorder.totals()

    assert totals.counts == {
        "emails": QueueCounts(attempts=2, success=1, failure=1, concurrency_throttled=1),
        "reports": QueueCounts(attempts=1, rate_throttled=4, leases_lost=1),
    }
    assert totals.runtime[("emails", "send")].count == 2
    assert totals.runtime[("emails", "send")].total == pytest.approx(0.03)
    assert totals.time_in_queue[("reports", "build")].count == 1
    assert ("reports", "build") not in totals.runtime  # still running


def test_snoozed_and_interrupted_attempts_are_counted_as_outcomes_of_their_own() -> None:
    recorder = JobMetricsRecorder()
    for _ in range(3):
        recorder.job_started("emails", "send", time_in_queue=0.1)
    recorder.job_snoozed("emails", "send", runtime=0.25)
    recorder.job_finished("emails", "send", runtime=0.5, succeeded=True)
    recorder.job_interrupted("emails")

    totals = recorder.totals()

    # attempts = success + failure + snoozed + interrupted, once every attempt ended
    assert totals.counts == {"emails": QueueCounts(attempts=3, success=1, snoozed=1, interrupted=1)}
    assert totals.runtime[("emails", "send")].count == 2  # the interrupted one has no run time
    assert totals.runtime[("emails", "send")].total == pytest.approx(0.75)


def test_every_counter_of_a_queue_is_rendered_at_zero_before_anything_is_counted() -> None:
    families = job_metric_families(JobMetrics(), {}, queues=["emails"])

    values = {
        sample.name: sample.value
        for family in families
        for sample in family.samples
        if sample.labels == {"queue": "emails"}
    }
    assert values == {
        "taskforge_job_attempts_total": 0,
        "taskforge_job_success_total": 0,
        "taskforge_job_failure_total": 0,
        "taskforge_job_snoozed_total": 0,
        "taskforge_job_interrupted_total": 0,
        "taskforge_worker_concurrency_throttled_total": 0,
        "taskforge_worker_rate_throttled_total": 0,
        "taskforge_worker_leases_lost_total": 0,
        "taskforge_worker_utilization": 0,
    }


def test_the_failure_help_says_it_counts_outcomes_the_store_did_not_take() -> None:
    # A handler that returned while its job was cancelled or reaped is counted as a
    # failure: the HELP must not tell an operator that the handler raised.
    [failure] = [
        family
        for family in job_metric_families(JobMetrics(), {}, queues=["emails"])
        if family.name == "taskforge_job_failure"
    ]

    assert "timeout" in failure.documentation
    assert "the store did not take" in failure.documentation
    assert "even a handler's return" in failure.documentation


@pytest.mark.parametrize(
    ("seconds", "bound"),
    [
        (0.0, 0.001),  # below the first bound
        (0.001, 0.001),  # a bound is inclusive (Prometheus' `le`)
        (0.0011, 0.0025),
        (42.0, 60.0),
        (600.0, 600.0),  # the last bound
        (601.0, None),  # above every bound: only +Inf counts it
    ],
)
def test_a_duration_counts_in_the_bucket_of_the_first_bound_at_or_above_it(
    seconds: float, bound: float | None
) -> None:
    histogram = DurationHistogram()

    histogram.observe(seconds)

    index = JOB_SECONDS_BUCKETS.index(bound) if bound is not None else len(JOB_SECONDS_BUCKETS)
    assert histogram.buckets[index] == 1
    assert histogram.count == 1
    cumulative = histogram.cumulative()
    assert cumulative[index:] == [1] * (len(cumulative) - index)
    assert cumulative[:index] == [0] * index


def test_take_hands_over_what_accumulated_and_starts_afresh() -> None:
    recorder = JobMetricsRecorder()
    recorder.job_started("emails", "send", time_in_queue=0.1)

    first, _ = recorder.take()
    recorder.job_started("emails", "send", time_in_queue=0.1)
    second, _ = recorder.take()
    third, _ = recorder.take()

    assert first.counts["emails"].attempts == 1
    assert second.counts["emails"].attempts == 1
    assert third.is_empty()
    assert recorder.totals().counts["emails"].attempts == 2  # the process's own view keeps all


def test_utilization_is_busy_slot_time_averaged_over_the_interval() -> None:
    clock = FakeMonotonic()
    recorder = JobMetricsRecorder(monotonic=clock)
    recorder.utilization("emails", busy=0, slots=4)
    recorder.take()  # the interval starts at 100.0

    clock.now = 100.5
    recorder.utilization("emails", busy=2, slots=4)  # two slots busy for the second half
    clock.now = 101.0
    _, load = recorder.take()
    clock.now = 102.0
    _, next_load = recorder.take()  # still two busy, the whole interval

    assert load == {"emails": QueueLoad(busy=1.0, slots=4)}  # 2 slots x 0.5 s / 1 s
    assert next_load == {"emails": QueueLoad(busy=2.0, slots=4)}


def test_a_queue_served_but_idle_is_published_with_zero_counts() -> None:
    recorder = JobMetricsRecorder()
    recorder.utilization("emails", busy=0, slots=4)

    batch, load = recorder.take()

    assert batch.counts == {"emails": QueueCounts()}
    assert load == {"emails": QueueLoad(busy=0.0, slots=4)}


def test_cluster_utilization_is_busy_over_slots_of_every_live_worker_of_the_queue() -> None:
    view = ClusterMetrics(
        JobMetrics(),
        [
            WorkerLoad("a", {"emails": QueueLoad(busy=4.0, slots=4)}),
            WorkerLoad("b", {"emails": QueueLoad(busy=0.0, slots=4), "reports": QueueLoad(1, 2)}),
        ],
    )

    assert view.utilization() == {"emails": 0.5, "reports": 0.5}
    assert view.live_workers() == {"emails": 2, "reports": 1}
    assert view.queues == {"emails", "reports"}


def test_adding_metrics_shares_nothing_with_the_batch_added() -> None:
    batch = JobMetrics()
    batch.queue("emails").attempts = 1
    batch.runtime[("emails", "send")] = DurationHistogram()
    batch.runtime[("emails", "send")].observe(0.1)
    totals = JobMetrics()

    totals.add(batch)
    totals.add(batch)
    batch.runtime[("emails", "send")].observe(0.1)

    assert totals.counts["emails"].attempts == 2
    assert totals.runtime[("emails", "send")].count == 2


async def test_a_failed_flush_is_resent_unchanged_before_the_next_one() -> None:
    recorder = JobMetricsRecorder()
    store = FlakyStore(failures=2)
    publisher = MetricsPublisher(recorder, store, worker_id="w1", interval=1.0)
    recorder.job_started("emails", "send", time_in_queue=0.1)

    assert await publisher.flush() is False
    recorder.job_started("emails", "send", time_in_queue=0.1)
    assert await publisher.flush() is False  # the resend failed too; nothing newer was sent
    assert await publisher.flush() is True
    assert await publisher.flush() is True

    assert [batch.counts.get("emails", QueueCounts()).attempts for batch in store.batches] == [
        1,
        1,
        0,
    ]
    # The first write, resent under its number until it lands, then the newer counts.
    assert store.sequences == [1, 1, 1, 2, 3]


class LosesTheFirstReply(InMemoryMetricsStore):
    """Applies every write, but the first one's caller hears only an error."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = False

    async def add(self, batch: JobMetrics, load: WorkerLoad, ttl: float, *, sequence: int) -> None:
        await super().add(batch, load, ttl, sequence=sequence)
        if not self.lost:
            self.lost = True
            raise ConnectionError("connection reset after the write")


async def test_a_write_applied_although_it_failed_is_counted_once() -> None:
    recorder = JobMetricsRecorder()
    store = LosesTheFirstReply()
    publisher = MetricsPublisher(recorder, store, worker_id="w1", interval=1.0)
    recorder.job_started("emails", "send", time_in_queue=0.1)

    assert await publisher.flush() is False
    assert await publisher.flush() is True

    assert (await store.read()).totals.counts["emails"].attempts == 1


async def test_the_publisher_flushes_at_once_and_leaves_the_store_when_stopped() -> None:
    recorder = JobMetricsRecorder()
    store = InMemoryMetricsStore()
    publisher = MetricsPublisher(recorder, store, worker_id="w1", interval=60.0)
    recorder.utilization("emails", busy=0, slots=2)
    stop = asyncio.Event()

    running = asyncio.create_task(publisher.run(stop))
    for _ in range(100):
        if (await store.read()).workers:
            break
        await asyncio.sleep(0)
    joined = await store.read()
    recorder.job_started("emails", "send", time_in_queue=0.1)
    stop.set()
    await asyncio.wait_for(running, 5)
    left = await store.read()

    assert [worker.worker_id for worker in joined.workers] == ["w1"]
    assert left.workers == []
    assert left.totals.counts["emails"].attempts == 1  # the last flush came before leaving


@dataclass
class SilentStore(FlakyStore):
    """A MetricsStore that, like a frozen Redis, never answers the calls named in `silent`
    (`add`, `remove_worker`); `asked` records every call made, and `called` is set by the
    first."""

    silent: frozenset[str] = frozenset()
    asked: list[str] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def add(self, batch: JobMetrics, load: WorkerLoad, ttl: float, *, sequence: int) -> None:
        self.asked.append("add")
        self.called.set()
        if "add" in self.silent:
            await asyncio.Event().wait()
        await super().add(batch, load, ttl, sequence=sequence)

    async def remove_worker(self, worker_id: str) -> None:
        self.asked.append("remove_worker")
        self.called.set()
        if "remove_worker" in self.silent:
            await asyncio.Event().wait()
        await super().remove_worker(worker_id)


async def stop_publisher(publisher: MetricsPublisher, store: SilentStore) -> float:
    """Run `publisher` until its first write is asked for, then stop it: the seconds its
    stop took."""
    stop = asyncio.Event()
    running = asyncio.create_task(publisher.run(stop))
    await asyncio.wait_for(store.called.wait(), 5)
    began = time.monotonic()
    stop.set()
    await asyncio.wait_for(running, 5)
    return time.monotonic() - began


async def test_a_store_that_never_answers_holds_the_stop_no_longer_than_the_stop_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = SilentStore(silent=frozenset({"add"}))
    publisher = MetricsPublisher(
        JobMetricsRecorder(), store, worker_id="w1", interval=60.0, stop_timeout=0.2
    )

    took = await stop_publisher(publisher, store)

    assert 0.2 <= took < 1.0  # the flush under way was given the whole stop timeout
    assert store.batches == []
    warned = "gave up publishing the last metrics of this worker"
    assert any(record.getMessage().startswith(warned) for record in caplog.records)


async def test_the_stop_gives_up_leaving_a_store_that_took_the_last_flush_but_never_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = JobMetricsRecorder()
    store = SilentStore(silent=frozenset({"remove_worker"}))
    publisher = MetricsPublisher(recorder, store, worker_id="w1", interval=60.0, stop_timeout=0.2)
    recorder.job_started("emails", "send", time_in_queue=0.1)

    took = await stop_publisher(publisher, store)

    assert took < 1.0
    assert sum(b.counts.get("emails", QueueCounts()).attempts for b in store.batches) == 1
    assert store.asked[-1] == "remove_worker"
    warned = "gave up removing this worker from the metrics store"
    assert any(record.getMessage().startswith(warned) for record in caplog.records)


async def test_the_memory_store_forgets_a_worker_its_ttl_after_its_last_write() -> None:
    clock = FakeMonotonic()
    store = InMemoryMetricsStore(monotonic=clock)
    await store.add(
        JobMetrics(), WorkerLoad("w1", {"emails": QueueLoad(1.0, 1)}), ttl=3.0, sequence=1
    )

    clock.now += 2.9
    still_live = await store.read()
    clock.now += 0.1
    expired = await store.read()

    assert [worker.worker_id for worker in still_live.workers] == ["w1"]
    assert expired.workers == []
