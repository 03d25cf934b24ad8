"""Handlers of "the next release": job types the workers of the previous one do not have.

Loaded by worker processes with `--handlers taskforge_rollout`.
"""

from __future__ import annotations

import taskforge


@taskforge.handler("report-v2")
async def report_v2(ctx: taskforge.JobContext) -> dict[str, int]:
    return {"version": 2}


@taskforge.handler("wait-for-export")
async def wait_for_export(ctx: taskforge.JobContext) -> int:
    """Not ready the first two times it is asked: snoozes, then succeeds."""
    if ctx.snoozes < 2:
        raise taskforge.Snooze(0.2)
    return ctx.snoozes
