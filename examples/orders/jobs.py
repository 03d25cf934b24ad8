"""The order service's jobs, declared once: the web app enqueues them, the worker runs them.

    taskforge worker --handlers jobs      # serves the queue the task declares

The worker's handler marks the order's email as sent; a real one would call the mail
provider first (and may run more than once: jobs are delivered at least once).
"""

from __future__ import annotations

import asyncio
import logging
import os

import asyncpg
import msgspec

import taskforge

log = logging.getLogger("orders.jobs")

QUEUE = os.environ.get("ORDERS_QUEUE", "orders-mail")


class OrderEmail(msgspec.Struct):
    """The confirmation email of one order: checked when it is enqueued, decoded here."""

    order_id: int
    to: str


@taskforge.task("order_email", queue=QUEUE, max_attempts=5, initial_delay=2)
async def send_order_email(email: OrderEmail, ctx: taskforge.JobContext) -> dict[str, str]:
    log.info("sending the confirmation of order %d to %s", email.order_id, email.to)
    pool = await _database()
    await pool.execute(
        "UPDATE orders SET email_sent_at = now() WHERE id = $1 AND email_sent_at IS NULL",
        email.order_id,
    )
    return {"sent_to": email.to, "attempt": str(ctx.attempt)}


_pool: asyncpg.Pool | None = None
_pool_lock = asyncio.Lock()


async def _database() -> asyncpg.Pool:
    """The worker's own pool for the order tables, opened on the first job."""
    global _pool
    async with _pool_lock:
        if _pool is None:
            _pool = await asyncpg.create_pool(os.environ["POSTGRES_DSN"], min_size=1, max_size=4)
        return _pool
