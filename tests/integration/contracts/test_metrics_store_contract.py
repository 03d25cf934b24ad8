"""The MetricsStore contract, run against the in-memory and the Redis implementation: what
workers add comes back summed, histogram bucket by bucket, and a worker's load lives only
as long as its TTL."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from taskforge.application.metrics import (
    JOB_SECONDS_BUCKETS,
    DurationHistogram,
    JobMetrics,
    JobMetricsRecorder,
    QueueCounts,
    QueueLoad,
    WorkerLoad,
)
from taskforge.application.ports import MetricsStore

DEADLINE = 10.0


SEQUENCES = itertools.count(1)
"""Write numbers, increasing for every worker in these tests."""


def batch_of(recorder: JobMetricsRecorder) -> JobMetrics:
    batch, _ = recorder.take()
    return batch


def idle(worker_id: str, *queues: str) -> WorkerLoad:
    return WorkerLoad(worker_id, {queue: QueueLoad(busy=0.0, slots=1) for queue in queues})


async def test_a_new_store_holds_nothing(metrics_store: MetricsStore) -> None:
    view = await metrics_store.read()

    assert view.totals.is_empty()
    assert view.workers == []


async def test_counts_from_several_workers_and_flushes_add_up(
    metrics_store: MetricsStore, queue_name: str
) -> None:
    other = f"{queue_name}:other"
    first, second = JobMetricsRecorder(), JobMetricsRecorder()
    first.job_started(queue_name, "email", time_in_queue=0.002)
    first.job_finished(queue_name, "email", runtime=0.02, succeeded=True)
    first.concurrency_throttled(queue_name)
    second.job_started(queue_name, "email", time_in_queue=0.3)
    second.job_finished(queue_name, "email", runtime=7.0, succeeded=False)
    second.rate_throttled(other, 5)
    second.lease_lost(other)

    await metrics_store.add(
        batch_of(first), idle("w1", queue_name), ttl=60, sequence=next(SEQUENCES)
    )
    await metrics_store.add(
        batch_of(second), idle("w2", queue_name, other), ttl=60, sequence=next(SEQUENCES)
    )
    first.job_started(queue_name, "email", time_in_queue=0.002)
    await metrics_store.add(
        batch_of(first), idle("w1", queue_name), ttl=60, sequence=next(SEQUENCES)
    )
    totals = (await metrics_store.read()).totals

    assert totals.counts == {
        queue_name: QueueCounts(attempts=3, success=1, failure=1, concurrency_throttled=1),
        other: QueueCounts(rate_throttled=5, leases_lost=1),
    }
    runtime = totals.runtime[(queue_name, "email")]
    assert runtime.count == 2
    assert runtime.total == pytest.approx(7.02)
    assert totals.time_in_queue[(queue_name, "email")].count == 3


async def test_snoozed_and_interrupted_attempts_come_back_with_the_other_outcomes(
    metrics_store: MetricsStore, queue_name: str
) -> None:
    recorder = JobMetricsRecorder()
    for _ in range(4):
        recorder.job_started(queue_name, "poll", time_in_queue=0.01)
    recorder.job_snoozed(queue_name, "poll", runtime=0.5)
    recorder.job_snoozed(queue_name, "poll", runtime=0.5)
    recorder.job_finished(queue_name, "poll", runtime=1.0, succeeded=True)
    recorder.job_interrupted(queue_name)

    await metrics_store.add(
        batch_of(recorder), idle("w1", queue_name), ttl=60, sequence=next(SEQUENCES)
    )
    totals = (await metrics_store.read()).totals

    assert totals.counts == {
        queue_name: QueueCounts(attempts=4, success=1, snoozed=2, interrupted=1)
    }
    assert totals.runtime[(queue_name, "poll")].count == 3


async def test_histograms_come_back_bucket_by_bucket(
    metrics_store: MetricsStore, queue_name: str
) -> None:
    observed = [0.0005, 0.001, 0.3, 0.3, 59.0, 600.0, 3600.0]
    expected = DurationHistogram()
    batch = JobMetrics()
    batch.runtime[(queue_name, "report.build:v2")] = DurationHistogram()
    for seconds in observed:
        expected.observe(seconds)
        batch.runtime[(queue_name, "report.build:v2")].observe(seconds)

    await metrics_store.add(batch, idle("w1"), ttl=60, sequence=next(SEQUENCES))
    stored = (await metrics_store.read()).totals.runtime[(queue_name, "report.build:v2")]

    assert stored.buckets == expected.buckets
    assert len(stored.buckets) == len(JOB_SECONDS_BUCKETS) + 1
    assert stored.total == pytest.approx(sum(observed))


async def test_each_live_workers_latest_load_is_read_back(
    metrics_store: MetricsStore, queue_name: str
) -> None:
    await metrics_store.add(JobMetrics(), idle("w1", queue_name), ttl=60, sequence=next(SEQUENCES))
    await metrics_store.add(
        JobMetrics(),
        WorkerLoad("w2", {queue_name: QueueLoad(busy=1.5, slots=4)}),
        ttl=60,
        sequence=next(SEQUENCES),
    )
    await metrics_store.add(
        JobMetrics(),
        WorkerLoad("w1", {queue_name: QueueLoad(busy=2.0, slots=2)}),
        ttl=60,
        sequence=next(SEQUENCES),
    )

    view = await metrics_store.read()

    assert sorted(view.workers, key=lambda w: w.worker_id) == [
        WorkerLoad("w1", {queue_name: QueueLoad(busy=2.0, slots=2)}),
        WorkerLoad("w2", {queue_name: QueueLoad(busy=1.5, slots=4)}),
    ]
    assert view.utilization() == {queue_name: pytest.approx(3.5 / 6)}


async def test_a_worker_that_stops_writing_drops_out_after_its_ttl(
    metrics_store: MetricsStore, queue_name: str
) -> None:
    await metrics_store.add(
        JobMetrics(), idle("stopped", queue_name), ttl=0.3, sequence=next(SEQUENCES)
    )
    await metrics_store.add(
        JobMetrics(), idle("live", queue_name), ttl=60, sequence=next(SEQUENCES)
    )
    assert {w.worker_id for w in (await metrics_store.read()).workers} == {"stopped", "live"}

    deadline = time.monotonic() + DEADLINE
    while {w.worker_id for w in (await metrics_store.read()).workers} != {"live"}:
        assert time.monotonic() < deadline, "the stopped worker never dropped out"
        await asyncio.sleep(0.05)


async def test_a_removed_worker_drops_out_at_once_and_its_counts_stay(
    metrics_store: MetricsStore, queue_name: str
) -> None:
    recorder = JobMetricsRecorder()
    recorder.job_started(queue_name, "email", time_in_queue=0.1)
    await metrics_store.add(
        batch_of(recorder), idle("leaving", queue_name), ttl=60, sequence=next(SEQUENCES)
    )

    await metrics_store.remove_worker("leaving")
    view = await metrics_store.read()

    assert view.workers == []
    assert view.totals.counts[queue_name].attempts == 1


async def test_a_write_resent_under_its_number_counts_once(
    metrics_store: MetricsStore, queue_name: str
) -> None:
    recorder = JobMetricsRecorder()
    recorder.job_started(queue_name, "email", time_in_queue=0.002)
    batch = batch_of(recorder)
    busy = WorkerLoad("w1", {queue_name: QueueLoad(busy=1.0, slots=1)})

    await metrics_store.add(batch, idle("w1", queue_name), ttl=60, sequence=1)
    await metrics_store.add(batch, busy, ttl=60, sequence=1)  # resent: adds nothing
    after_resend = await metrics_store.read()
    await metrics_store.add(batch, busy, ttl=60, sequence=2)
    await metrics_store.add(batch, idle("w2", queue_name), ttl=60, sequence=1)  # own numbers
    view = await metrics_store.read()

    assert after_resend.totals.counts[queue_name].attempts == 1
    assert after_resend.utilization()[queue_name] == 1.0  # the resend's load counted
    assert view.totals.counts[queue_name].attempts == 3
    assert view.utilization()[queue_name] == 0.5
