"""The cluster's job metrics in Redis: one hash of totals, plus one expiring key per worker.

Fields of the totals hash (`|` cannot occur in a queue name or a job type):

    c|<counter>|<queue>                        an integer, e.g. c|attempts|jobs:ready
    h|<histogram>|<queue>|<job_type>|<bound>   observations in that bucket (not cumulative)
    h|<histogram>|<queue>|<job_type>|sum       the sum of the observations

where <counter> is a field of QueueCounts, <histogram> is `runtime` or `time_in_queue` and
<bound> a bucket's upper bound as written by `_BOUND_NAMES` (`0.005`, `600`, `+Inf`). Naming
bounds rather than numbering buckets keeps workers of different versions from mixing up
buckets; a bound the reader does not know is ignored.
"""

from __future__ import annotations

import json
import logging

from redis.asyncio import Redis

from taskforge.adapters.redis.client import translate_connection_errors
from taskforge.adapters.redis.keys import DEFAULT_PREFIX, RedisKeys
from taskforge.application.metrics import (
    COUNTERS,
    JOB_SECONDS_BUCKETS,
    ClusterMetrics,
    DurationHistogram,
    JobMetrics,
    QueueLoad,
    SeriesKey,
    WorkerLoad,
)
from taskforge.domain.errors import Unavailable

log = logging.getLogger("taskforge.redis")

_BOUND_NAMES = (*(f"{bound:g}" for bound in JOB_SECONDS_BUCKETS), "+Inf")
_BUCKET_OF = {name: index for index, name in enumerate(_BOUND_NAMES)}

APPLIED_MARK_MS = 86_400_000
"""How long a worker's last applied sequence number is kept after its last write: a write
resent later than this (after a day-long outage) could be counted twice."""

# A write whose reply was lost (a reset connection, a timeout) may well have been applied;
# the client library and the publisher both resend it. A worker numbers its writes: one
# whose number is not above the last applied one adds nothing (its load still counts, as
# the latest word on the worker).
ADD_SCRIPT = """
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[5])
local sequence = tonumber(ARGV[1])
if sequence <= tonumber(redis.call('GET', KEYS[4]) or '0') then
  return 0
end
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[2])
for i = 6, #ARGV, 3 do
  if ARGV[i] == 'f' then
    redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i + 1], ARGV[i + 2])
  else
    redis.call('HINCRBY', KEYS[1], ARGV[i + 1], ARGV[i + 2])
  end
end
return 1
"""


class RedisMetricsStore:
    """The `MetricsStore` port on Redis. A write is one script call whose counts are added
    at most once, however often it is resent; a read is two round trips. Connection failures raise
    `Unavailable("redis", ...)`."""

    def __init__(self, client: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._keys = RedisKeys(prefix)
        self._add = client.register_script(ADD_SCRIPT)

    async def add(self, batch: JobMetrics, load: WorkerLoad, ttl: float, *, sequence: int) -> None:
        loads = {queue: [entry.busy, entry.slots] for queue, entry in load.queues.items()}
        increments: list[str | int | float] = []
        for queue, counts in batch.counts.items():
            for name in COUNTERS:
                increments += ("i", f"c|{name}|{queue}", getattr(counts, name))
        for kind, series in _histograms(batch).items():
            for (queue, job_type), histogram in series.items():
                field = f"h|{kind}|{queue}|{job_type}|"
                for name, count in zip(_BOUND_NAMES, histogram.buckets, strict=True):
                    if count:
                        increments += ("i", field + name, count)
                increments += ("f", field + "sum", repr(histogram.total))
        keys = [
            self._keys.metric_totals,
            self._keys.metric_worker_load(load.worker_id),
            self._keys.metric_workers,
            self._keys.metric_applied(load.worker_id),
        ]
        args: list[str | int | float] = [
            sequence,
            APPLIED_MARK_MS,
            max(1, round(ttl * 1000)),
            json.dumps(loads),
            load.worker_id,
        ]
        with translate_connection_errors():
            await self._add(keys=keys, args=[*args, *increments])

    async def remove_worker(self, worker_id: str) -> None:
        with translate_connection_errors():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(
                    self._keys.metric_worker_load(worker_id), self._keys.metric_applied(worker_id)
                )
                pipe.srem(self._keys.metric_workers, worker_id)
                await pipe.execute()

    async def read(self) -> ClusterMetrics:
        with translate_connection_errors():
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self._keys.metric_totals)
                pipe.smembers(self._keys.metric_workers)
                fields, members = await pipe.execute()
            worker_ids = sorted(_text(member) for member in members)
            values = (
                await self._client.mget([self._keys.metric_worker_load(w) for w in worker_ids])
                if worker_ids
                else []
            )
            gone = [w for w, value in zip(worker_ids, values, strict=True) if value is None]
        if gone:
            # Tidying only: a server that refuses writes for now (a replica, a failed
            # snapshot) still answers the read, and the next read tidies again.
            try:
                with translate_connection_errors():
                    await self._client.srem(self._keys.metric_workers, *gone)
            except Unavailable as exc:
                log.debug("could not forget %d gone worker(s): %s", len(gone), exc)
        workers = [
            WorkerLoad(worker_id, _load(value))
            for worker_id, value in zip(worker_ids, values, strict=True)
            if value is not None
        ]
        return ClusterMetrics(_totals(fields), workers)


def _histograms(metrics: JobMetrics) -> dict[str, dict[SeriesKey, DurationHistogram]]:
    return {"runtime": metrics.runtime, "time_in_queue": metrics.time_in_queue}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _load(value: bytes | str) -> dict[str, QueueLoad]:
    entries: dict[str, list[float]] = json.loads(value)
    return {
        queue: QueueLoad(busy=float(busy), slots=int(slots))
        for queue, (busy, slots) in entries.items()
    }


def _totals(fields: dict[bytes | str, bytes | str]) -> JobMetrics:
    totals = JobMetrics()
    histograms = _histograms(totals)
    for raw_field, raw_value in fields.items():
        parts = _text(raw_field).split("|")
        value = _text(raw_value)
        if parts[0] == "c" and len(parts) == 3 and parts[1] in COUNTERS:
            counts = totals.queue(parts[2])
            setattr(counts, parts[1], getattr(counts, parts[1]) + int(value))
        elif parts[0] == "h" and len(parts) == 5 and parts[1] in histograms:
            series = histograms[parts[1]]
            key = (parts[2], parts[3])
            histogram = series.get(key)
            if histogram is None:
                histogram = series[key] = DurationHistogram()
            if parts[4] == "sum":
                histogram.total += float(value)
            elif (index := _BUCKET_OF.get(parts[4])) is not None:
                histogram.buckets[index] += int(value)
        else:
            log.debug("ignored an unknown metrics field %r", parts)
    return totals
