"""Start-up checks of the process roles."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from taskforge.entrypoints.runtime import warn_about_eviction

pytestmark = pytest.mark.asyncio


class FakeRedis:
    def __init__(self, policy: str) -> None:
        self.policy = policy

    async def config_get(self, name: str) -> dict[str, str]:
        return {name: self.policy}


class FakeContainer:
    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def get(self, kind: type) -> Any:
        if self.redis is None:
            raise LookupError(kind)
        return self.redis


async def test_worker_warns_when_redis_may_evict_hints(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="taskforge.runtime"):
        await warn_about_eviction(FakeContainer(FakeRedis("allkeys-lru")))  # type: ignore[arg-type]

    assert any("allkeys-lru" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("redis", [FakeRedis("noeviction"), None])
async def test_no_warning_with_noeviction_or_without_redis(
    caplog: pytest.LogCaptureFixture, redis: Any
) -> None:
    with caplog.at_level(logging.WARNING, logger="taskforge.runtime"):
        await warn_about_eviction(FakeContainer(redis))  # type: ignore[arg-type]

    assert not caplog.records
