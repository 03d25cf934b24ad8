"""Contract: WorkerRegistry. Workers report themselves, stop, and go stale; the live list
shows exactly the workers that reported within the staleness bound."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from taskforge.application.ports import WorkerRegistry
from taskforge.domain.workers import WORKER_STALE_AFTER, WorkerStatus

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STALE = timedelta(seconds=WORKER_STALE_AFTER)


def status(worker_id: str, heartbeat_at: datetime = T0, **changes: object) -> WorkerStatus:
    reported = WorkerStatus(
        worker_id=worker_id,
        host="node-1",
        pid=4242,
        queues=("jobs:ready", "mail"),
        job_types=("email", "resize"),
        concurrency=8,
        busy_slots=3,
        started_at=T0 - timedelta(minutes=5),
        heartbeat_at=heartbeat_at,
    )
    return replace(reported, **changes)  # type: ignore[arg-type]


async def test_a_reported_worker_is_listed_as_it_reported_itself(
    worker_registry: WorkerRegistry,
) -> None:
    reported = status("node-1:4242:a")

    await worker_registry.report(reported)

    assert await worker_registry.list_live(now=T0) == [reported]


async def test_a_new_report_replaces_the_last_one(worker_registry: WorkerRegistry) -> None:
    await worker_registry.report(status("w1"))
    later = status("w1", T0 + timedelta(seconds=5), busy_slots=0, job_types=("email",))

    await worker_registry.report(later)

    assert await worker_registry.list_live(now=later.heartbeat_at) == [later]


async def test_live_workers_are_listed_by_id(worker_registry: WorkerRegistry) -> None:
    for worker_id in ("w3", "w1", "w2"):
        await worker_registry.report(status(worker_id))

    live = await worker_registry.list_live(now=T0)

    assert [worker.worker_id for worker in live] == ["w1", "w2", "w3"]


async def test_a_worker_is_live_until_its_report_is_older_than_the_staleness_bound(
    worker_registry: WorkerRegistry,
) -> None:
    await worker_registry.report(status("w1"))

    assert len(await worker_registry.list_live(now=T0 + STALE)) == 1
    assert await worker_registry.list_live(now=T0 + STALE + timedelta(seconds=1)) == []


async def test_a_report_prunes_the_rows_of_stale_workers(worker_registry: WorkerRegistry) -> None:
    await worker_registry.report(status("gone"))
    await worker_registry.report(status("alive", T0 + STALE + timedelta(seconds=1)))

    # Seen from an instant when both would count as live, only the pruned one is missing.
    live = await worker_registry.list_live(now=T0)

    assert [worker.worker_id for worker in live] == ["alive"]


async def test_a_removed_worker_is_no_longer_listed(worker_registry: WorkerRegistry) -> None:
    await worker_registry.report(status("w1"))
    await worker_registry.report(status("w2"))

    await worker_registry.remove("w1")
    await worker_registry.remove("never-reported")

    assert [worker.worker_id for worker in await worker_registry.list_live(now=T0)] == ["w2"]
