"""Handlers for the dashboard's browser tests, loaded with TASKFORGE_HANDLERS.

`switched` fails terminally ("order <n> not found") until the file `payload.switch` exists,
then succeeds: a test dead-letters jobs, flips the switch, and replays them."""

from __future__ import annotations

from pathlib import Path

import taskforge


@taskforge.handler("switched")
def switched(ctx: taskforge.JobContext) -> None:
    if not Path(str(ctx.payload["switch"])).exists():
        raise taskforge.TerminalError(f"order {ctx.payload.get('order', 0)} not found")
