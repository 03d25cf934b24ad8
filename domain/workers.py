"""The worker registry's value: what a running worker reports about itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

WORKER_REPORT_INTERVAL = 5.0
"""Seconds between a worker's reports to the registry."""

WORKER_STALE_AFTER = 30.0
"""A worker whose last report is older than this many seconds is no longer live: it is left
out of the live list, and the next report of any worker deletes its row. Six missed
reports, so a busy database or a short pause does not make a running worker disappear."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStatus:
    """One worker process as it last reported itself. Timestamps are timezone-aware UTC, by
    the worker's clock.

    `worker_id` is the worker's lease owner name (host:pid:suffix); `queues` the queues it
    claims from; `job_types` the job types it has handlers for (sorted); `busy_slots` how
    many of its `concurrency` slots run a job; `heartbeat_at` when it reported."""

    worker_id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    job_types: tuple[str, ...]
    concurrency: int
    busy_slots: int
    started_at: datetime
    heartbeat_at: datetime

    def is_live(self, now: datetime) -> bool:
        """Reported within WORKER_STALE_AFTER seconds of `now`."""
        return self.heartbeat_at >= stale_before(now)

    def runs(self, queue: str, job_type: str) -> bool:
        """Serves `queue` and has a handler for `job_type`."""
        return queue in self.queues and job_type in self.job_types


def stale_before(now: datetime) -> datetime:
    """Workers whose last report is before this instant are stale."""
    return now - timedelta(seconds=WORKER_STALE_AFTER)
