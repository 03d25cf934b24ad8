"""TaskForge's HTTP clients: `SyncClient` (blocking) and `Client` (asyncio).

    with taskforge.SyncClient("http://localhost:8080", token=TOKEN) as tf:
        job = tf.enqueue("email", {"to": "a@b.com"})

Both are built on `core`, which holds the requests, the answers' decoding, the error
mapping and the retry rules once; they differ only in how they wait.
"""

from typing import TYPE_CHECKING, Any

from taskforge.client.core import EnqueueOptions, JobSpec, Response, RetryPolicy, ScheduleOptions
from taskforge.client.errors import (
    ClientClosed,
    ClientError,
    ConnectionFailed,
    InvalidResponse,
    InvalidTransition,
    JobFailed,
    JobNotFound,
    ScheduleNotFound,
    Unauthorized,
    Unavailable,
    ValidationError,
    WaitTimeout,
)
from taskforge.client.sync_client import SyncClient

if TYPE_CHECKING:
    from taskforge.client.async_client import Client
    from taskforge.client.values import (
        AttemptError,
        BatchItem,
        DeadLetter,
        DeadLetterPage,
        Job,
        JobPage,
        QueueInfo,
        QueueStats,
        Schedule,
        Stats,
        WorkerInfo,
    )

__all__ = [
    "AttemptError",
    "BatchItem",
    "Client",
    "ClientClosed",
    "ClientError",
    "ConnectionFailed",
    "DeadLetter",
    "DeadLetterPage",
    "EnqueueOptions",
    "InvalidResponse",
    "InvalidTransition",
    "Job",
    "JobFailed",
    "JobNotFound",
    "JobPage",
    "JobSpec",
    "QueueInfo",
    "QueueStats",
    "Response",
    "RetryPolicy",
    "Schedule",
    "ScheduleNotFound",
    "ScheduleOptions",
    "Stats",
    "SyncClient",
    "Unauthorized",
    "Unavailable",
    "ValidationError",
    "WaitTimeout",
    "WorkerInfo",
]


def __getattr__(name: str) -> Any:
    """`Client` and the answers' values load on first use: `taskforge-cli`, on the blocking
    client and printing answers as they came, starts without asyncio or the values."""
    if name == "Client":
        from taskforge.client.async_client import Client

        return Client
    if name in __all__:  # a public name not bound above: one of the values
        from taskforge.client import values

        return getattr(values, name)
    raise AttributeError(f"module 'taskforge.client' has no attribute {name!r}")
