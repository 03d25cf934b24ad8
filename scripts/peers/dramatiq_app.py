"""The dramatiq actor and broker both sides of `dramatiq_peer.py` load: a no-op actor on a
Redis broker under PEER_NAMESPACE (one namespace per run, removed by the caller)."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(
    url=os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0"),
    namespace=os.environ["PEER_NAMESPACE"],
)
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def noop() -> None:
    return None
