"""The RateLimiter contract, run against the in-memory and the Redis implementation.

Time is real here (the Redis bucket reads the server's clock), so the bounds allow for the
milliseconds that pass between calls, and no more.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from taskforge.application.ports import RateLimiter

from .conftest import LimiterForWorker


@pytest.mark.parametrize(
    ("rate", "burst"),
    [
        (5.0, 5),  # a full bucket holds one second of permits
        (2.5, 2),  # only whole permits are granted
        (0.5, 1),  # below one per second the bucket still holds one permit
    ],
)
async def test_asking_for_more_than_the_rate_grants_at_most_the_bucket(
    limiter_for_worker: LimiterForWorker, queue_name: str, rate: float, burst: int
) -> None:
    limiter = limiter_for_worker()

    grant = await limiter.acquire(queue_name, rate, 100)

    assert grant.granted == burst


async def test_a_grant_of_everything_asked_has_no_retry_after(
    limiter_for_worker: LimiterForWorker, queue_name: str
) -> None:
    grant = await limiter_for_worker().acquire(queue_name, 10.0, 3)

    assert grant.granted == 3
    assert grant.retry_after == 0.0


async def test_retry_after_is_about_the_time_for_one_permit_when_the_bucket_runs_dry(
    limiter_for_worker: LimiterForWorker, queue_name: str
) -> None:
    rate = 4.0

    grant = await limiter_for_worker().acquire(queue_name, rate, 10)

    assert grant.granted == 4
    assert grant.retry_after == pytest.approx(1 / rate, rel=0.05)


async def test_retry_after_shrinks_as_the_next_permit_accrues(
    limiter_for_worker: LimiterForWorker, queue_name: str
) -> None:
    limiter, rate = limiter_for_worker(), 0.5
    await limiter.acquire(queue_name, rate, 1)

    grant = await limiter.acquire(queue_name, rate, 1)

    assert grant.granted == 0
    assert 0 < grant.retry_after <= 1 / rate


async def test_two_workers_on_the_same_queue_share_one_budget(
    limiter_for_worker: LimiterForWorker, queue_name: str
) -> None:
    first_worker, second_worker, rate = limiter_for_worker(), limiter_for_worker(), 10.0
    started = time.monotonic()

    first = await first_worker.acquire(queue_name, rate, 10)
    second = await second_worker.acquire(queue_name, rate, 10)

    elapsed = time.monotonic() - started
    assert first.granted == 10
    # Only what accrued between the two calls is left for the second worker.
    assert second.granted <= rate * elapsed
    assert second.retry_after > 0


async def test_different_queues_do_not_share_a_budget(
    limiter_for_worker: LimiterForWorker, queue_name: str
) -> None:
    limiter = limiter_for_worker()
    await limiter.acquire(f"{queue_name}:busy", 10.0, 10)

    grant = await limiter.acquire(f"{queue_name}:quiet", 10.0, 10)

    assert grant.granted == 10


async def test_workers_together_get_the_rate_over_a_window_plus_one_burst(
    limiter_for_worker: LimiterForWorker, queue_name: str
) -> None:
    rate, window = 20.0, 2.0
    workers = [limiter_for_worker(), limiter_for_worker()]
    loop = asyncio.get_running_loop()
    started = loop.time()
    finished = started

    async def take_until_window_closes(limiter: RateLimiter) -> int:
        nonlocal finished
        total = 0
        while loop.time() - started < window:
            grant = await limiter.acquire(queue_name, rate, 5)
            finished = max(finished, loop.time())
            total += grant.granted
            # Waiting for the next permit is how a worker uses the limiter, not synchronisation.
            await asyncio.sleep(grant.retry_after)
        return total

    totals = await asyncio.gather(*(take_until_window_closes(w) for w in workers))

    elapsed = finished - started
    most_allowed = rate + rate * elapsed  # one burst, then the refill
    assert sum(totals) <= most_allowed + 1
    # Each wait ends when the next permit is due, so hardly anything goes unclaimed.
    assert sum(totals) >= most_allowed - 0.1 * rate * window - 1
