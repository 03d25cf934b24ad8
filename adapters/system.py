"""The real clock, id source and random source, shared by every backend."""

from __future__ import annotations

import os
import random
import threading
import time
import weakref
from datetime import UTC, datetime
from uuid import UUID, SafeUUID


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class Uuid7Source:
    """Time-ordered UUIDs (RFC 9562 version 7): newer ids sort after older ones, which keeps
    the jobs table's primary key index append-mostly and "newest first" cheap.

    48 bits of milliseconds, a 12-bit counter for ids made within one millisecond, and 62
    random bits from a generator seeded from the OS (re-seeded in a forked child), so a
    batch of a thousand ids costs no system calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0
        self._random = random.Random(os.urandom(32))
        _SOURCES.add(self)

    def _reseed(self) -> None:
        self._random.seed(os.urandom(32))

    def new_id(self) -> UUID:
        [new_id] = self.new_ids(1)
        return new_id

    def new_ids(self, count: int) -> list[UUID]:
        """`count` new ids in order, under one hold of the lock and one read of the clock."""
        values = []
        with self._lock:
            ms = time.time_ns() // 1_000_000
            counter = self._counter
            if ms <= self._last_ms:
                ms = self._last_ms
            else:
                counter = -1
            for _ in range(count):
                counter += 1
                if counter >= 1 << 12:
                    ms += 1
                    counter = 0
                rand = self._random.getrandbits(62)
                values.append(
                    (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
                )
            self._last_ms = ms
            self._counter = counter
        return [_uuid_of(value) for value in values]


def _uuid_of(value: int) -> UUID:
    """`UUID(int=value)` for a value known to be in range, without the constructor's argument
    parsing: a third of the cost, and every enqueued job takes an id."""
    uuid = object.__new__(UUID)
    object.__setattr__(uuid, "int", value)
    object.__setattr__(uuid, "is_safe", SafeUUID.unknown)
    return uuid


_SOURCES: weakref.WeakSet[Uuid7Source] = weakref.WeakSet()
"""Live id sources: a forked child re-seeds them all, so parent and child never share
random bits. Weak, so a source that is no longer used can go."""


def _reseed_after_fork() -> None:
    for source in list(_SOURCES):
        source._reseed()


os.register_at_fork(after_in_child=_reseed_after_fork)


def system_random() -> float:
    return random.random()
