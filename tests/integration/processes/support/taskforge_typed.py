"""Typed tasks for worker processes (`--handlers taskforge_typed`): their queue is
TYPED_TASK_QUEUE, which the worker serves without being told to."""

from __future__ import annotations

import os

import msgspec

import taskforge


class Greeting(msgspec.Struct):
    name: str
    times: int = 1


@taskforge.task("typed_greet", queue=os.environ["TYPED_TASK_QUEUE"], max_attempts=2)
async def greet(greeting: Greeting, ctx: taskforge.JobContext) -> str:
    return " ".join([f"hello {greeting.name}"] * greeting.times) + f" (attempt {ctx.attempt})"


@taskforge.task("typed_cleanup", queue=os.environ["TYPED_TASK_QUEUE"])
async def cleanup() -> str:
    return "cleaned"
