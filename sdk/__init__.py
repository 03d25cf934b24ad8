"""Enqueueing from an application's own code, on its own database connection.

    async with conn.transaction():
        await conn.execute("INSERT INTO orders ...")
        await taskforge.enqueue(conn, "email", {"order": order_id})

`taskforge.enqueue` and `taskforge.enqueue_many` load this package on first use.
"""

from taskforge.sdk.transactional import enqueue, enqueue_many

__all__ = ["enqueue", "enqueue_many"]
