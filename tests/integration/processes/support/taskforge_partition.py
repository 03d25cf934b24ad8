"""Test handlers that sleep `payload["seconds"]` and record each execution in a local file.

Loaded by worker processes with `--handlers taskforge_partition`. The record goes to the
file LEDGER_FILE names, one JSON line when an attempt starts and one when it ends
(`returned` or `interrupted`), stamped with the wall clock: a file, not a table, so that a
worker cut off from the network still records what it runs (every "host" of the partition
test shares this machine's file system and clock).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

import taskforge

_lock = threading.Lock()


def _record(ctx: taskforge.JobContext, event: str, outcome: str = "") -> None:
    line = json.dumps(
        {
            "job": str(ctx.job_id),
            "attempt": ctx.attempt,
            "token": str(ctx.lease_token),
            "event": event,
            "outcome": outcome,
            "at": time.time(),
        }
    )
    with _lock, open(os.environ["LEDGER_FILE"], "a") as ledger:
        ledger.write(line + "\n")


@taskforge.handler("partition_sleep")
async def partition_sleep(ctx: taskforge.JobContext) -> None:
    _record(ctx, "start")
    try:
        await asyncio.sleep(float(ctx.payload["seconds"]))
    except asyncio.CancelledError:
        _record(ctx, "end", "interrupted")
        raise
    _record(ctx, "end", "returned")


@taskforge.handler("partition_sleep_sync")
def partition_sleep_sync(ctx: taskforge.JobContext) -> None:
    """A sync handler that stops as the shared design asks: it polls `ctx.cancelled`."""
    _record(ctx, "start")
    until = time.monotonic() + float(ctx.payload["seconds"])
    while time.monotonic() < until:
        if ctx.cancelled.is_set():
            _record(ctx, "end", "interrupted")
            return
        time.sleep(0.01)
    _record(ctx, "end", "returned")
