"""The order service: `POST /orders` stores an order, reserves its stock and enqueues its
confirmation email, all in one database transaction. Either all of it happens or none:
an order refused for want of stock leaves no order row and no email job behind.

    POSTGRES_DSN=postgresql://postgres@localhost/taskforge uvicorn app:app

The database is TaskForge's own (migrated with `taskforge migrate`): the job row is
written by the same transaction as the order.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
import msgspec
from jobs import OrderEmail, send_order_email
from litestar import Litestar, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    sku text PRIMARY KEY,
    stock int NOT NULL CHECK (stock >= 0)
);
CREATE TABLE IF NOT EXISTS orders (
    id bigserial PRIMARY KEY,
    sku text NOT NULL REFERENCES products,
    quantity int NOT NULL CHECK (quantity > 0),
    email text NOT NULL,
    email_sent_at timestamptz
);
"""


Text = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern="^[^\x00]*$")]
"""What a text column takes (Postgres stores no NUL character)."""


class NewOrder(msgspec.Struct):
    """An order as asked for: what the tables cannot hold is answered 400 before any write."""

    sku: Text
    quantity: Annotated[int, msgspec.Meta(gt=0, lt=2**31)]  # a positive `int` column
    email: Text


class CreatedOrder(msgspec.Struct):
    order_id: int
    email_job_id: str


@post("/orders")
async def create_order(data: NewOrder, state: State) -> CreatedOrder:
    async with state.pool.acquire() as conn, conn.transaction():
        try:
            order_id: int = await conn.fetchval(
                "INSERT INTO orders (sku, quantity, email) VALUES ($1, $2, $3) RETURNING id",
                data.sku,
                data.quantity,
                data.email,
            )
        except asyncpg.ForeignKeyViolationError:
            raise NotFoundException(f"no product {data.sku!r}") from None
        # Stored by this transaction: workers see the job exactly when the order commits.
        job = await send_order_email.enqueue(conn, OrderEmail(order_id=order_id, to=data.email))
        reserved = await conn.execute(
            "UPDATE products SET stock = stock - $2 WHERE sku = $1 AND stock >= $2",
            data.sku,
            data.quantity,
        )
        if reserved == "UPDATE 0":
            # Raising inside the transaction rolls back the order and its email job.
            raise HTTPException(status_code=409, detail=f"not enough {data.sku!r} in stock")
    return CreatedOrder(order_id=order_id, email_job_id=str(job.id))


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@asynccontextmanager
async def database(app: Litestar) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(os.environ["POSTGRES_DSN"], min_size=1, max_size=10)
    try:
        await pool.execute(SCHEMA)
        app.state.pool = pool
        yield
    finally:
        await pool.close()


app = Litestar([create_order, healthz], lifespan=[database])
