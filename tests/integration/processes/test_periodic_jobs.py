"""Periodic jobs with whole processes: three `taskforge scheduler` processes on one Postgres
fire every tick of every schedule exactly once and never a paused one's, and each upserts
the schedules its handler module declares; a bad declaration stops a process at start."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from .conftest import DEADLINE, TASKFORGE, Stack

pytestmark = pytest.mark.slow

MISSED_MINUTES = 15
HIDDEN = {"PYTHONPATH", "TASKFORGE_HANDLERS", "WORKER_QUEUES", "API_TOKEN", "HTTP_ADDR"}

INSERT_SCHEDULE = """
INSERT INTO schedules (
    name, cron, timezone, catch_up, source, job_type, queue, max_attempts, initial_delay,
    backoff, max_delay, jitter, visibility_timeout, timeout, paused, next_fire_at
) VALUES ($1, '* * * * *', 'UTC', true, 'api', 'noop', $2, 3, 1, 2, 300, false, 30, 0, $3, $4)
"""


def declaring_module(queue: str) -> str:
    return f"""\
import taskforge

taskforge.schedule("{queue}-declared", "0 3 * * *", "noop", queue="{queue}")
"""


async def test_three_schedulers_fire_every_tick_once_and_never_a_paused_schedule(
    stack: Stack, tmp_path: Path, queue_name: str
) -> None:
    since = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=MISSED_MINUTES)
    names = [f"{queue_name}-{index}" for index in range(8)]
    conn = await asyncpg.connect(stack.dsn)
    try:
        for name in names:
            await conn.execute(INSERT_SCHEDULE, name, queue_name, False, since)
        await conn.execute(INSERT_SCHEDULE, f"{queue_name}-paused", queue_name, True, since)
        (tmp_path / "declaring.py").write_text(declaring_module(queue_name))
        for _ in range(3):
            stack.start_in(tmp_path, "scheduler", "--handlers", "declaring")

        await _caught_up(conn, names)
        # The schedules and their jobs read in one snapshot: a minute may turn meanwhile, and
        # a tick fires its job and moves its schedule on in one transaction.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            caught_up = {
                row["name"]: row["last_fire_at"]
                for row in await conn.fetch(
                    "SELECT name, last_fire_at FROM schedules WHERE name = ANY($1::text[])",
                    names,
                )
            }
            keys = [
                row["idempotency_key"]
                for row in await conn.fetch(
                    "SELECT idempotency_key FROM jobs WHERE queue = $1", queue_name
                )
            ]
        declared = await conn.fetchrow(
            "SELECT source, paused FROM schedules WHERE name = $1", f"{queue_name}-declared"
        )
    finally:
        await conn.close()

    assert len(keys) == len(set(keys))
    expected = {
        f"schedule:{name}:{since + timedelta(minutes=n):%Y-%m-%dT%H:%M:%SZ}"
        for name, last in caught_up.items()
        for n in range(int((last - since) / timedelta(minutes=1)) + 1)
    }
    assert set(keys) == expected
    assert len(keys) >= len(names) * (MISSED_MINUTES + 1)
    assert not any(key.startswith(f"schedule:{queue_name}-paused:") for key in keys)
    assert declared is not None and (declared["source"], declared["paused"]) == ("code", False)


async def _caught_up(conn: asyncpg.Connection, names: list[str]) -> None:
    """Returns once every schedule has a next fire in the future."""
    deadline = time.monotonic() + DEADLINE
    while True:
        rows = await conn.fetch(
            "SELECT name, next_fire_at > now() AS done FROM schedules WHERE name = ANY($1::text[])",
            names,
        )
        if len(rows) == len(names) and all(row["done"] for row in rows):
            return
        assert time.monotonic() < deadline, f"schedules not caught up: {rows}"
        await asyncio.sleep(0.1)


def test_a_bad_schedule_declaration_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "broken_schedules.py").write_text(
        'import taskforge\n\ntaskforge.schedule("nightly", "61 * * * *", "noop")\n'
    )
    completed = subprocess.run(
        [TASKFORGE, "scheduler", "--handlers", "broken_schedules"],
        cwd=tmp_path,
        # The scheduler's Postgres is never reached: it stops at the declaration.
        env={
            **{key: value for key, value in os.environ.items() if key not in HIDDEN},
            "POSTGRES_DSN": "postgresql://nobody@127.0.0.1:9/none",
        },
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )

    assert (completed.returncode, completed.stdout) == (2, "")
    assert completed.stderr == (
        "taskforge: schedule 'nightly' declared in code: cron: invalid cron expression:"
        " Bad minute\n"
    )
