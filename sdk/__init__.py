"""Enqueueing from an application's own code: typed tasks, and jobs stored on the
application's own database connection.

    async with conn.transaction():
        await conn.execute("INSERT INTO orders ...")
        await taskforge.enqueue(conn, "email", {"order": order_id})

`taskforge.task`, `taskforge.enqueue` and `taskforge.enqueue_many` load this package on
first use; the transactional enqueue (and with it the client's values) only when used, so
a worker importing its typed tasks does not load the HTTP client.
"""

from typing import TYPE_CHECKING, Any

from taskforge.sdk.tasks import Task, TaskDefaults, task

if TYPE_CHECKING:
    from taskforge.sdk.transactional import enqueue, enqueue_many

__all__ = ["Task", "TaskDefaults", "enqueue", "enqueue_many", "task"]


def __getattr__(name: str) -> Any:
    if name in ("enqueue", "enqueue_many"):
        from taskforge.sdk import transactional

        return getattr(transactional, name)
    raise AttributeError(f"module 'taskforge.sdk' has no attribute {name!r}")
