"""What only the Redis backend promises: its key layout, the epoch check, and tolerance of
foreign data and long waits."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection as RedisConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from taskforge.adapters.redis.client import client_options
from taskforge.adapters.redis.metrics import RedisMetricsStore
from taskforge.adapters.redis.rate_limiter import RedisRateLimiter
from taskforge.adapters.redis.ready_queue import RedisReadyQueue
from taskforge.application.metrics import JobMetricsRecorder, QueueLoad, WorkerLoad
from taskforge.domain.job import ReadyHint
from tests.support import redis_from_url, with_query

pytestmark = pytest.mark.integration


async def all_keys(client: Redis) -> set[bytes]:
    return {key async for key in client.scan_iter(count=1000)}


@pytest.fixture
async def isolated_client(redis_url: str) -> AsyncIterator[Redis]:
    """A client on the server's last database, which the other tests leave alone, so a key
    that appears there during a test was written by that test. Removes those keys after."""
    probe = redis_from_url(redis_url)
    try:
        [databases] = [int(str(count)) for count in (await probe.config_get("databases")).values()]
    except ResponseError as exc:
        pytest.skip(f"cannot list the server's databases: {exc}")
    finally:
        await probe.aclose()
    if databases < 2 or urlsplit(redis_url).path == f"/{databases - 1}":
        pytest.skip("no spare database on this server")
    url = urlunsplit(urlsplit(redis_url)._replace(path=f"/{databases - 1}"))
    client = redis_from_url(url)
    before = await all_keys(client)
    try:
        yield client
    finally:
        created = await all_keys(client) - before
        if created:
            await client.delete(*created)
        await client.aclose()


async def test_the_backend_writes_only_queue_lists_and_keys_under_its_prefix(
    isolated_client: Redis, key_prefix: str, queues: list[str]
) -> None:
    first, second, third = queues
    ready_queue = RedisReadyQueue(isolated_client, key_prefix)
    limiter = RedisRateLimiter(isolated_client, key_prefix)
    before = await all_keys(isolated_client)

    await ready_queue.push([ReadyHint(first, uuid.uuid4()) for _ in range(2)])
    await ready_queue.push([ReadyHint(second, uuid.uuid4())])
    await ready_queue.push_front([ReadyHint(third, uuid.uuid4())])
    await ready_queue.pop(queues, 1, 1.0)
    await ready_queue.depth(queues)
    await ready_queue.check_intact()
    await ready_queue.ping()
    await limiter.acquire(first, 5.0, 10)

    written = await all_keys(isolated_client) - before
    assert written == {
        first.encode(),
        second.encode(),
        third.encode(),
        f"{key_prefix}epoch".encode(),
        f"{key_prefix}probe".encode(),  # a ping writes, as a pop does
        f"{key_prefix}rate:{first}".encode(),
    }


async def test_the_default_priority_keeps_the_verbatim_key_and_the_others_use_the_prefix(
    redis_ready_queue: RedisReadyQueue, redis_client: Redis, queue_name: str, key_prefix: str
) -> None:
    default = ReadyHint(queue_name, uuid.uuid4())
    urgent = ReadyHint(queue_name, uuid.uuid4(), priority=0)
    background = ReadyHint(queue_name, uuid.uuid4(), priority=9)

    await redis_ready_queue.push([default, urgent, background])

    assert await redis_client.lrange(queue_name, 0, -1) == [str(default.job_id).encode()]
    assert await redis_client.lrange(f"{key_prefix}ready:0:{queue_name}", 0, -1) == [
        str(urgent.job_id).encode()
    ]
    assert await redis_client.lrange(f"{key_prefix}ready:9:{queue_name}", 0, -1) == [
        str(background.job_id).encode()
    ]
    assert await redis_ready_queue.depth([queue_name]) == {queue_name: 3}


async def test_a_queue_name_is_its_list_key_verbatim(
    redis_ready_queue: RedisReadyQueue, redis_client: Redis, queue_name: str
) -> None:
    queue = f"{queue_name}:ready"
    older, newer = ReadyHint(queue, uuid.uuid4()), ReadyHint(queue, uuid.uuid4())

    await redis_ready_queue.push([older, newer])

    assert await redis_client.type(queue) == b"list"
    assert await redis_client.llen(queue) == 2
    # Hints enter on the left and leave on the right, so RPOP gives the oldest.
    assert await redis_client.lrange(queue, 0, -1) == [
        str(newer.job_id).encode(),
        str(older.job_id).encode(),
    ]


async def test_check_intact_is_false_on_the_first_call(
    redis_ready_queue: RedisReadyQueue,
) -> None:
    assert await redis_ready_queue.check_intact() is False


async def test_check_intact_is_false_again_once_after_the_epoch_key_is_deleted(
    redis_ready_queue: RedisReadyQueue, redis_client: Redis, key_prefix: str
) -> None:
    await redis_ready_queue.check_intact()
    assert await redis_ready_queue.check_intact() is True

    await redis_client.delete(f"{key_prefix}epoch")

    assert await redis_ready_queue.check_intact() is False
    assert await redis_ready_queue.check_intact() is True


async def test_check_intact_is_false_again_after_forget_intact(
    redis_ready_queue: RedisReadyQueue,
) -> None:
    assert await redis_ready_queue.check_intact() is False

    await redis_ready_queue.forget_intact()  # the re-publishing did not finish

    assert await redis_ready_queue.check_intact() is False
    assert await redis_ready_queue.check_intact() is True


async def test_check_intact_on_a_second_queue_object_sees_the_same_epoch(
    redis_ready_queue: RedisReadyQueue, redis_client: Redis, key_prefix: str
) -> None:
    # Several schedulers share one Redis: only the first to look after a loss resyncs.
    other_scheduler = RedisReadyQueue(redis_client, key_prefix)

    assert await redis_ready_queue.check_intact() is False
    assert await other_scheduler.check_intact() is True


async def test_payloads_that_are_not_job_ids_are_dropped_with_a_warning(
    redis_ready_queue: RedisReadyQueue,
    redis_client: Redis,
    queue_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = ReadyHint(queue_name, uuid.uuid4()), ReadyHint(queue_name, uuid.uuid4())
    await redis_client.lpush(queue_name, "not-a-job-id")
    await redis_ready_queue.push([first])
    await redis_client.lpush(queue_name, b"\xff\xfe")
    await redis_ready_queue.push([second])

    with caplog.at_level(logging.WARNING, logger="taskforge.redis"):
        popped = await redis_ready_queue.pop([queue_name], 10, 1.0)

    assert popped == [first, second]
    assert await redis_ready_queue.depth([queue_name]) == {queue_name: 0}
    assert len([r for r in caplog.records if "not a job id" in r.getMessage()]) == 2


def record_commands(client: Redis) -> list[str]:
    """The names of the commands `client` sends from now on, in order."""
    sent: list[str] = []
    send = cast(Callable[..., Awaitable[Any]], client.execute_command)

    async def recording(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]).upper())
        return await send(*args, **options)

    client.execute_command = recording  # type: ignore[method-assign]
    return sent


async def test_a_pop_takes_waiting_hints_in_one_round_trip_and_blocks_only_when_empty(
    redis_url: str, key_prefix: str, queue_name: str, redis_cleanup: None
) -> None:
    client = redis_from_url(redis_url)
    try:
        ready_queue = RedisReadyQueue(client, key_prefix)
        hints = [ReadyHint(queue_name, uuid.uuid4(), priority=p) for p in (5, 0, 9)]
        await ready_queue.push(hints)
        sent = record_commands(client)

        busy = await ready_queue.pop([queue_name], 10, 1.0)
        busy_commands = list(sent)
        sent.clear()
        idle = await ready_queue.pop([queue_name], 10, 0.05)
    finally:
        await client.aclose()

    assert [hint.priority for hint in busy] == [0, 5, 9]
    assert "BRPOP" not in busy_commands and len(busy_commands) == 1, busy_commands
    assert idle == []
    assert "BRPOP" in sent


async def test_a_pop_longer_than_the_socket_timeout_waits_in_slices(
    redis_url: str, key_prefix: str, queue_name: str, redis_cleanup: None
) -> None:
    client = redis_from_url(with_query(redis_url, socket_timeout="0.4"))
    try:
        assert client.connection_pool.connection_kwargs["socket_timeout"] == 0.4
        ready_queue = RedisReadyQueue(client, key_prefix)
        started = time.monotonic()

        popped = await ready_queue.pop([queue_name], 5, 1.0)

        assert popped == []
        assert time.monotonic() - started >= 0.95
    finally:
        await client.aclose()


async def test_a_rate_bucket_expires_once_it_would_be_full_again(
    redis_client: Redis, key_prefix: str, queue_name: str
) -> None:
    limiter = RedisRateLimiter(redis_client, key_prefix)

    started = time.monotonic()
    await limiter.acquire(queue_name, 0.5, 1)

    # At 0.5 permits/s the one-permit bucket refills in 2 s; a missing key reads as full, so
    # the key lives that long and a second of slack: 3 s from the acquire, less what has
    # passed since (measured, as a busy machine can pause between the two calls).
    ttl_ms = await redis_client.pttl(f"{key_prefix}rate:{queue_name}")
    passed_ms = (time.monotonic() - started) * 1000
    assert 3000 - passed_ms - 5 <= ttl_ms <= 3000


async def test_the_rate_bucket_is_shared_by_clients_on_separate_connections(
    redis_url: str, key_prefix: str, queue_name: str, redis_cleanup: None
) -> None:
    workers = [redis_from_url(redis_url), redis_from_url(redis_url)]
    try:
        first, second = (RedisRateLimiter(client, key_prefix) for client in workers)
        assert (await first.acquire(queue_name, 0.01, 1)).granted == 1
        assert (await second.acquire(queue_name, 0.01, 1)).granted == 0
    finally:
        for client in workers:
            await client.aclose()


class LosesArmedReplies(RedisConnection):
    """Reads each reply, then drops the next `armed` of them as a reset connection would:
    the command ran on the server, the client never hears of it and resends it."""

    armed = 0
    lost = 0

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        response = await super().read_response(*args, **kwargs)
        if LosesArmedReplies.armed:
            LosesArmedReplies.armed -= 1
            LosesArmedReplies.lost += 1
            raise RedisConnectionError("connection reset after the command ran")
        return response


async def test_a_metrics_flush_resent_after_a_lost_reply_counts_once(
    redis_url: str, key_prefix: str, queue_name: str, redis_cleanup: None
) -> None:
    client = redis_from_url(redis_url)
    # The production client's options (its retries above all), over the flaky connection.
    flaky = Redis.from_url(redis_url, connection_class=LosesArmedReplies, **client_options())
    try:
        store = RedisMetricsStore(flaky, key_prefix)
        load = WorkerLoad("w1", {queue_name: QueueLoad(busy=0.0, slots=1)})
        recorder = JobMetricsRecorder()
        await store.add(recorder.take()[0], load, ttl=60, sequence=1)  # loads it
        recorder.job_started(queue_name, "email", time_in_queue=0.25)
        recorder.job_finished(queue_name, "email", runtime=0.5, succeeded=True)

        LosesArmedReplies.armed, LosesArmedReplies.lost = 1, 0
        await store.add(recorder.take()[0], load, ttl=60, sequence=2)

        assert LosesArmedReplies.lost == 1
        totals = (await RedisMetricsStore(client, key_prefix).read()).totals
        counts = totals.queue(queue_name)
        assert (counts.attempts, counts.success) == (1, 1)
        assert totals.runtime[(queue_name, "email")].total == 0.5
    finally:
        LosesArmedReplies.armed = 0
        await flaky.aclose()
        await client.aclose()
