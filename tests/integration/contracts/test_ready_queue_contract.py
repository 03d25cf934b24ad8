"""The ReadyQueue contract, run against the in-memory and the Redis implementation."""

from __future__ import annotations

import asyncio
import time
import uuid

from taskforge.adapters.memory.ready_queue import InMemoryReadyQueue
from taskforge.application.ports import ReadyQueue
from taskforge.domain.job import ReadyHint

from .conftest import WaitUntilPopping


def hints_for(queue: str, count: int) -> list[ReadyHint]:
    return [ReadyHint(queue, uuid.uuid4()) for _ in range(count)]


async def test_hints_are_popped_in_the_order_they_were_pushed(
    ready_queue: ReadyQueue, queue_name: str
) -> None:
    first_batch, second_batch = hints_for(queue_name, 3), hints_for(queue_name, 2)
    await ready_queue.push(first_batch)
    await ready_queue.push(second_batch)

    popped = await ready_queue.pop([queue_name], 10, 1.0)

    assert popped == first_batch + second_batch


async def test_pop_takes_at_most_max_count_and_leaves_the_rest_in_order(
    ready_queue: ReadyQueue, queue_name: str
) -> None:
    hints = hints_for(queue_name, 5)
    await ready_queue.push(hints)

    assert await ready_queue.pop([queue_name], 2, 1.0) == hints[:2]
    assert await ready_queue.pop([queue_name], 10, 1.0) == hints[2:]


async def test_pop_tops_up_across_queues_in_the_order_given(
    ready_queue: ReadyQueue, queues: list[str]
) -> None:
    first, second, third = queues
    in_first, in_second, in_third = hints_for(first, 2), hints_for(second, 3), hints_for(third, 2)
    await ready_queue.push(in_third + in_second + in_first)

    popped = await ready_queue.pop(queues, 4, 1.0)

    assert popped == in_first + in_second[:2]
    assert await ready_queue.depth(queues) == {first: 0, second: 1, third: 2}


async def test_pop_starts_with_a_later_queue_when_the_earlier_ones_are_empty(
    ready_queue: ReadyQueue, queues: list[str]
) -> None:
    in_third = hints_for(queues[2], 2)
    await ready_queue.push(in_third)

    assert await ready_queue.pop(queues, 5, 1.0) == in_third


async def test_pop_returns_nothing_after_the_timeout_when_every_queue_is_empty(
    ready_queue: ReadyQueue, queues: list[str]
) -> None:
    started = time.monotonic()

    popped = await ready_queue.pop(queues, 5, 0.3)

    assert popped == []
    assert 0.28 <= time.monotonic() - started < 2.0


async def test_pop_without_a_timeout_returns_at_once_when_empty(
    ready_queue: ReadyQueue, queue_name: str
) -> None:
    started = time.monotonic()

    assert await ready_queue.pop([queue_name], 5, 0) == []
    assert time.monotonic() - started < 0.5


async def test_pop_without_a_timeout_still_takes_waiting_hints(
    ready_queue: ReadyQueue, queue_name: str
) -> None:
    hints = hints_for(queue_name, 3)
    await ready_queue.push(hints)

    assert await ready_queue.pop([queue_name], 5, 0) == hints


async def test_a_waiting_pop_returns_promptly_when_a_hint_is_pushed(
    ready_queue: ReadyQueue, queues: list[str], wait_until_popping: WaitUntilPopping
) -> None:
    started = time.monotonic()
    waiting = asyncio.create_task(ready_queue.pop(queues, 5, 10.0))
    await wait_until_popping()
    assert not waiting.done()
    hint = ReadyHint(queues[1], uuid.uuid4())

    await ready_queue.push([hint])

    assert await asyncio.wait_for(waiting, 5.0) == [hint]
    assert time.monotonic() - started < 3.0


async def test_pushed_front_hints_are_popped_before_older_ones_in_their_given_order(
    ready_queue: ReadyQueue, queue_name: str
) -> None:
    older = hints_for(queue_name, 2)
    put_back = hints_for(queue_name, 3)
    await ready_queue.push(older)

    await ready_queue.push_front(put_back)

    assert await ready_queue.pop([queue_name], 10, 1.0) == put_back + older


async def test_push_front_spreads_over_several_queues(
    ready_queue: ReadyQueue, queues: list[str]
) -> None:
    first, second, _ = queues
    older = [ReadyHint(first, uuid.uuid4())]
    await ready_queue.push(older)
    put_back = [ReadyHint(second, uuid.uuid4()), *hints_for(first, 2)]

    await ready_queue.push_front(put_back)

    assert await ready_queue.pop([first], 10, 1.0) == put_back[1:] + older
    assert await ready_queue.pop([second], 10, 1.0) == put_back[:1]


async def test_depth_counts_the_hints_waiting_in_each_queue(
    ready_queue: ReadyQueue, queues: list[str]
) -> None:
    first, second, third = queues
    await ready_queue.push(hints_for(first, 3) + hints_for(second, 1))

    assert await ready_queue.depth(queues) == {first: 3, second: 1, third: 0}


async def test_duplicate_hints_are_kept_for_the_claim_to_decide(
    ready_queue: ReadyQueue, queue_name: str
) -> None:
    hint = ReadyHint(queue_name, uuid.uuid4())
    await ready_queue.push([hint, hint])
    await ready_queue.push([hint])

    assert await ready_queue.depth([queue_name]) == {queue_name: 3}
    assert await ready_queue.pop([queue_name], 10, 1.0) == [hint, hint, hint]


async def test_check_intact_is_true_on_the_second_call(ready_queue: ReadyQueue) -> None:
    await ready_queue.check_intact()

    assert await ready_queue.check_intact() is True


async def test_ping_answers(ready_queue: ReadyQueue) -> None:
    await ready_queue.ping()


async def test_in_memory_check_intact_is_true_from_the_first_call() -> None:
    # Memory loses its hints only together with the process and the jobs it would resync.
    ready_queue = InMemoryReadyQueue()

    assert await ready_queue.check_intact() is True


def hints_at(queue: str, priority: int, count: int) -> list[ReadyHint]:
    return [ReadyHint(queue, uuid.uuid4(), priority=priority) for _ in range(count)]


async def test_pop_takes_higher_priorities_first_whatever_the_push_order(
    ready_queue: ReadyQueue, queue_name: str
) -> None:
    low, default, high = (hints_at(queue_name, p, 2) for p in (9, 5, 0))
    await ready_queue.push(low)
    await ready_queue.push(default)
    await ready_queue.push(high)

    popped = await ready_queue.pop([queue_name], 10, 1.0)

    assert popped == high + default + low
    assert [hint.priority for hint in popped] == [0, 0, 5, 5, 9, 9]


async def test_a_waiting_pop_takes_the_highest_priority_first(
    ready_queue: ReadyQueue, queue_name: str
) -> None:
    low, high = hints_at(queue_name, 7, 3), hints_at(queue_name, 1, 1)
    await ready_queue.push(low + high)

    assert await ready_queue.pop([queue_name], 1, 1.0) == high
    assert await ready_queue.pop([queue_name], 1, 1.0) == low[:1]


async def test_priority_comes_before_the_order_of_the_queues(
    ready_queue: ReadyQueue, queues: list[str]
) -> None:
    first, second, _ = queues
    in_first, urgent_in_second = hints_at(first, 5, 2), hints_at(second, 2, 1)
    await ready_queue.push(in_first + urgent_in_second)

    assert await ready_queue.pop(queues, 2, 1.0) == urgent_in_second + in_first[:1]


async def test_hints_put_back_go_to_the_head_of_their_priority(
    ready_queue: ReadyQueue, queue_name: str
) -> None:
    high, low = hints_at(queue_name, 0, 1), hints_at(queue_name, 8, 2)
    await ready_queue.push(high + low)
    put_back = hints_at(queue_name, 8, 1)

    await ready_queue.push_front(put_back)

    assert await ready_queue.pop([queue_name], 10, 1.0) == high + put_back + low


async def test_depth_sums_the_hints_of_every_priority(
    ready_queue: ReadyQueue, queues: list[str]
) -> None:
    first, second, third = queues
    await ready_queue.push(
        hints_at(first, 0, 1)
        + hints_at(first, 5, 2)
        + hints_at(first, 9, 3)
        + hints_at(second, 4, 1)
    )

    assert await ready_queue.depth(queues) == {first: 6, second: 1, third: 0}
