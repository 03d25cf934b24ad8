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
        with self._lock:
            value = self._next_value()
        return _uuid_of(value)

    def new_ids(self, count: int) -> list[UUID]:
        """`count` new ids in order, under one hold of the lock."""
        with self._lock:
            values = [self._next_value() for _ in range(count)]
        return [_uuid_of(value) for value in values]

    def _next_value(self) -> int:
        # Called with the lock held.
        ms = time.time_ns() // 1_000_000
        if ms <= self._last_ms:
            ms = self._last_ms
            self._counter += 1
            if self._counter >= 1 << 12:
                ms += 1
                self._counter = 0
        else:
            self._counter = 0
        self._last_ms = ms
        rand = self._random.getrandbits(62)
        return (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | self._counter << 64 | 0b10 << 62 | rand


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
