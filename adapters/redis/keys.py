"""Every Redis key TaskForge uses, in one place.

A queue's name is the list key of its default-priority hints, verbatim, so operators can
inspect a queue with plain Redis commands (`LLEN jobs:ready`). Every other key, the lists of
the other priorities included, starts with the internal prefix, which queue names may not
start with, so the two never collide.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskforge.domain.validation import DEFAULT_PRIORITY, PRIORITIES, RESERVED_QUEUE_PREFIX

DEFAULT_PREFIX = RESERVED_QUEUE_PREFIX
"""The one `taskforge:` prefix: internal keys start with it, queue names may not."""


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Key names under one internal prefix (`taskforge:` unless configured otherwise)."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix:
            raise ValueError("the internal key prefix must not be empty")

    def ready_list(self, queue: str, priority: int = DEFAULT_PRIORITY) -> str:
        """The list of job-id hints for `queue` at `priority`: the queue name itself for the
        default priority, `<prefix>ready:<priority>:<queue>` for the others."""
        if queue.startswith(self.prefix):
            raise ValueError(f"queue {queue!r} would collide with the internal prefix")
        if priority == DEFAULT_PRIORITY:
            return queue
        if priority not in PRIORITIES:
            raise ValueError(f"no hint list for priority {priority!r}")
        return f"{self.prefix}ready:{priority}:{queue}"

    def ready_lists(self, queue: str) -> list[str]:
        """Every hint list of `queue`, highest priority (0) first."""
        return [self.ready_list(queue, priority) for priority in PRIORITIES]

    @property
    def probe(self) -> str:
        """Written by a worker that asks whether the ready queue takes writes again (ping)."""
        return f"{self.prefix}probe"

    @property
    def epoch(self) -> str:
        """Exists for as long as Redis has kept its data; its absence means the hints are gone."""
        return f"{self.prefix}epoch"

    def rate_bucket(self, queue: str) -> str:
        """The token bucket every worker draws from to run jobs of `queue`."""
        return f"{self.prefix}rate:{queue}"

    @property
    def metric_totals(self) -> str:
        """A hash of every job metric of the cluster, summed over all workers (see
        `adapters/redis/metrics.py` for its fields)."""
        return f"{self.prefix}metrics:totals"

    @property
    def metric_workers(self) -> str:
        """The set of worker ids that published their load; members whose load key expired
        are removed by the next reader."""
        return f"{self.prefix}metrics:workers"

    def metric_applied(self, worker_id: str) -> str:
        """The sequence number of the last write from `worker_id` whose counts were added,
        so a write resent after a lost reply is not counted twice."""
        return f"{self.prefix}metrics:applied:{worker_id}"

    def metric_worker_load(self, worker_id: str) -> str:
        """One worker's load per queue (JSON), expiring unless the worker refreshes it."""
        return f"{self.prefix}metrics:worker:{worker_id}"
