"""TaskForge's HTTP clients: `SyncClient` (blocking) and `Client` (asyncio).

    with taskforge.SyncClient("http://localhost:8080", token=TOKEN) as tf:
        job = tf.enqueue("email", {"to": "a@b.com"})

Both are built on `core`, which holds the requests, the answers' decoding, the error
mapping and the retry rules once; they differ only in how they wait.
"""

from taskforge.client.async_client import Client
from taskforge.client.core import EnqueueOptions, JobSpec, Response, RetryPolicy
from taskforge.client.errors import (
    ClientError,
    ConnectionFailed,
    InvalidResponse,
    InvalidTransition,
    JobNotFound,
    Unauthorized,
    Unavailable,
    ValidationError,
    WaitTimeout,
)
from taskforge.client.sync_client import SyncClient
from taskforge.client.values import (
    AttemptError,
    BatchItem,
    DeadLetter,
    DeadLetterPage,
    Job,
    JobPage,
    QueueInfo,
    QueueStats,
    Stats,
    WorkerInfo,
)

__all__ = [
    "AttemptError",
    "BatchItem",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "DeadLetter",
    "DeadLetterPage",
    "EnqueueOptions",
    "InvalidResponse",
    "InvalidTransition",
    "Job",
    "JobNotFound",
    "JobPage",
    "JobSpec",
    "QueueInfo",
    "QueueStats",
    "Response",
    "RetryPolicy",
    "Stats",
    "SyncClient",
    "Unauthorized",
    "Unavailable",
    "ValidationError",
    "WaitTimeout",
    "WorkerInfo",
]
