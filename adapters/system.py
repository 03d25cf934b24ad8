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
        return self.new_ids(1)[0]

    def new_ids(self, count: int) -> list[UUID]:
        """`count` new ids in order, under one hold of the lock and one read of the clock:
        a batch's ids share its millisecond, counted on, until the 4,096 the counter holds
        move them into the next one."""
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:  # within the last id's millisecond, or the clock went back
                ms, counter = self._last_ms, self._counter + 1
            else:
                counter = 0
            ids: list[UUID] = []
            random_bits = self._random.getrandbits
            while len(ids) < count:
                if counter >= _COUNTER_LIMIT:
                    ms, counter = ms + 1, 0
                # This millisecond's ids: its fixed bits and counter, then the random bits.
                made = min(count - len(ids), _COUNTER_LIMIT - counter)
                fixed = (ms & _MS_MASK) << 80 | _VERSION_7 | _VARIANT
                ids += [
                    _uuid_of(fixed | each << 64 | random_bits(62))
                    for each in range(counter, counter + made)
                ]
                counter += made
            if ids:
                self._last_ms, self._counter = ms, counter - 1
        return ids


_COUNTER_LIMIT = 1 << 12
_MS_MASK = (1 << 48) - 1
_VERSION_7 = 0x7 << 76
_VARIANT = 0b10 << 62
_set_int = UUID.__dict__["int"].__set__
_set_is_safe = UUID.__dict__["is_safe"].__set__
_UNKNOWN_SAFETY = SafeUUID.unknown  # read once: an enum member read from its class is slow


def _uuid_of(value: int) -> UUID:
    """`UUID(int=value)` for a value known to be in range, without the constructor's argument
    parsing: its slots set through their descriptors (UUID's own __setattr__ refuses), a
    fifth of the constructor's cost, and every enqueued job takes an id."""
    uuid = object.__new__(UUID)
    _set_int(uuid, value)
    _set_is_safe(uuid, _UNKNOWN_SAFETY)
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
