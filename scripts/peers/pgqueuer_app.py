"""The pgqueuer worker `pgqueuer_peer.py drain` starts: what `pgq run pgqueuer_app:create
--batch-size N` does, through `pgqueuer.run` (the `pgq` command of this pgqueuer fails to
parse its --log-level under the typer it resolves with), one no-op entrypoint at
PEER_CONCURRENCY (0: pgqueuer's unlimited default). On uvloop, as `pgq run` runs whenever
uvloop is installed (and as TaskForge's worker and benchmark run).

    python pgqueuer_app.py BATCH_SIZE
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pgqueuer
import uvloop
from pgqueuer import AsyncpgDriver, Job, PgQueuer


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    connection = await asyncpg.connect(os.environ["PEER_DSN"])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("noop", concurrency_limit=int(os.environ.get("PEER_CONCURRENCY", "10")))
    async def noop(job: Job) -> None:
        return None

    try:
        yield pgq
    finally:
        await connection.close()


if __name__ == "__main__":
    uvloop.run(pgqueuer.run(create, batch_size=int(sys.argv[1])))
