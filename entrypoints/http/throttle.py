"""Wrong API_TOKENs tried on the dashboard's sign-in form, counted per client address.

An address that got FAILURES_ALLOWED wrong tokens within WINDOW may try none until the
window ends (the form answers 429 with Retry-After); then it starts afresh, and the right
token works at once. Refused tries are not compared, so they count for nothing and reveal
nothing.

Bearer tokens on the API are not counted: they are keys that programs send, often many
behind one address, and a lockout there would stop every producer on a host or behind a
NAT whenever one of them still sent a token that was changed. The API_TOKEN is to be long
and random (the API warns at start about a short one), which no rate of guessing finds.

The counts live in each API process's memory: a process counts only the tries it served,
so with API_WORKERS processes (or several hosts) an address gets up to that many times
FAILURES_ALLOWED per window.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from litestar.types import Scope

FAILURES_ALLOWED = 10
WINDOW = timedelta(minutes=5)
TRACKED_ADDRESSES = 10_000
"""Addresses whose failures are remembered; a new one evicts the one whose last wrong token
is oldest, so a flood from many addresses costs a bounded amount of memory."""


@dataclass(slots=True)
class _Failures:
    window_started: datetime
    count: int


def client_address(scope: Scope) -> str:
    """The address failures are counted by: the client's IP as the server saw it (behind a
    proxy, the one in X-Forwarded-For when the proxy is in FORWARDED_ALLOW_IPS), an IPv6
    address by its /64, which one host commonly holds whole."""
    client = scope.get("client")
    host = client[0] if client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # a Unix socket's peer: one key for all of them
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class TokenThrottle:
    """Wrong tokens by address, at most `tracked` addresses. Not thread-safe: one per
    event loop (an API process serves on one)."""

    def __init__(
        self,
        failures_allowed: int = FAILURES_ALLOWED,
        window: timedelta = WINDOW,
        tracked: int = TRACKED_ADDRESSES,
    ) -> None:
        self._failures_allowed = failures_allowed
        self._window = window
        self._tracked = tracked
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def retry_after(self, address: str, now: datetime) -> int | None:
        """Whole seconds until `address` may try a token again (at least 1), or None when it
        may now."""
        failures = self._current(address, now)
        if failures is None or failures.count < self._failures_allowed:
            return None
        left = (failures.window_started + self._window - now).total_seconds()
        return max(1, math.ceil(left))

    def failed(self, address: str, now: datetime) -> None:
        """Count a wrong token from `address`."""
        failures = self._current(address, now)
        if failures is None:
            failures = self._failures[address] = _Failures(window_started=now, count=0)
            if len(self._failures) > self._tracked:
                self._failures.popitem(last=False)
        failures.count += 1
        self._failures.move_to_end(address)

    @property
    def addresses(self) -> int:
        """How many addresses' failures are remembered."""
        return len(self._failures)

    def _current(self, address: str, now: datetime) -> _Failures | None:
        """The address's failures in its current window; a window that ended is forgotten."""
        failures = self._failures.get(address)
        if failures is not None and now >= failures.window_started + self._window:
            del self._failures[address]
            return None
        return failures
