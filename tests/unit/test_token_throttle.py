"""Wrong API_TOKENs by client address: a few per window, then none until it ends; the
addresses remembered are bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from litestar.types import Scope

from taskforge.entrypoints.http.throttle import (
    FAILURES_ALLOWED,
    WINDOW,
    TokenThrottle,
    client_address,
)

START = datetime(2026, 1, 1, tzinfo=UTC)


def test_an_address_may_try_until_its_failures_reach_the_allowed_number() -> None:
    throttle = TokenThrottle()

    for _ in range(FAILURES_ALLOWED - 1):
        throttle.failed("192.0.2.1", START)
    allowed = throttle.retry_after("192.0.2.1", START)
    throttle.failed("192.0.2.1", START + timedelta(seconds=30))

    assert allowed is None
    # The window opened with the first failure: it ends WINDOW after that one.
    assert throttle.retry_after("192.0.2.1", START + timedelta(seconds=30)) == (
        WINDOW.total_seconds() - 30
    )


def test_a_refused_address_may_try_again_once_its_window_ends() -> None:
    throttle = TokenThrottle(failures_allowed=2, window=timedelta(seconds=60))
    throttle.failed("192.0.2.1", START)
    throttle.failed("192.0.2.1", START)

    assert throttle.retry_after("192.0.2.1", START + timedelta(seconds=59.5)) == 1
    assert throttle.retry_after("192.0.2.1", START + timedelta(seconds=60)) is None
    # A fresh window: one more failure is not enough to refuse it again.
    throttle.failed("192.0.2.1", START + timedelta(seconds=60))
    assert throttle.retry_after("192.0.2.1", START + timedelta(seconds=60)) is None


def test_failures_of_one_address_never_refuse_another() -> None:
    throttle = TokenThrottle(failures_allowed=1)
    throttle.failed("192.0.2.1", START)

    assert throttle.retry_after("192.0.2.1", START) is not None
    assert throttle.retry_after("192.0.2.2", START) is None


def test_the_addresses_remembered_are_bounded_forgetting_the_longest_quiet() -> None:
    throttle = TokenThrottle(failures_allowed=1, tracked=3)
    for second, address in enumerate(["a", "b", "c", "a", "d"]):
        throttle.failed(address, START + timedelta(seconds=second))
    later = START + timedelta(seconds=10)

    assert throttle.addresses == 3
    # "b" failed longest ago when "d" came: forgotten, so it may try again.
    assert throttle.retry_after("b", later) is None
    assert all(throttle.retry_after(address, later) for address in ["a", "c", "d"])


def test_many_addresses_cost_no_more_than_the_bound() -> None:
    throttle = TokenThrottle(tracked=100)

    for number in range(10_000):
        throttle.failed(f"10.0.{number // 256}.{number % 256}", START)

    assert throttle.addresses == 100


@pytest.mark.parametrize(
    ("client", "address"),
    [
        (("192.0.2.7", 50000), "192.0.2.7"),
        # One host commonly holds a whole /64: its addresses count as one.
        (("2001:db8:1:2:3:4:5:6", 50000), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff::1", 50000), "2001:db8:1:2::/64"),
        (("::ffff:192.0.2.7", 50000), "192.0.2.7"),  # IPv4 on a dual-stack socket
        (None, ""),  # no peer address (a Unix socket)
    ],
)
def test_failures_count_by_the_clients_address(
    client: tuple[str, int] | None, address: str
) -> None:
    assert client_address(cast(Scope, {"client": client})) == address
