"""Every role through PgBouncer in transaction pooling mode: `taskforge migrate` uses the
direct DSN (its advisory lock needs a session), the API, worker and scheduler use the pooled
one with POSTGRES_POOLER=pgbouncer."""

from __future__ import annotations

import pytest

from tests.servers import PrivatePgBouncer

from .conftest import Stack, run_migrate

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_jobs_reach_succeeded_and_dlq_with_every_role_behind_pgbouncer(
    stack: Stack, scratch_dsn: str, pgbouncer: PrivatePgBouncer
) -> None:
    stack.dsn = scratch_dsn
    stack.env.update(
        POSTGRES_DSN=pgbouncer.route(scratch_dsn),
        POSTGRES_DIRECT_DSN=scratch_dsn,
        POSTGRES_POOLER="pgbouncer",
        WORKER_CONCURRENCY="8",
    )
    migrate = await run_migrate(stack.env)
    assert migrate.returncode == 0, migrate.stderr
    assert "applied" in migrate.stdout

    await stack.start_api()
    stack.start_worker()
    stack.start_worker()
    stack.start_scheduler()
    succeeding = [await stack.enqueue("noop") for _ in range(40)]
    failing = [await stack.enqueue("fail", maxAttempts=2, initialDelay=0.1) for _ in range(3)]

    for job_id in succeeding:
        await stack.wait_for(job_id, "SUCCEEDED")
    for job_id in failing:
        job = await stack.wait_for(job_id, "DLQ")
        assert job["attempt_count"] == 2
    for process in stack.processes:
        assert process.popen.poll() is None, process.tail()
        assert "prepared statement" not in process.log.read_text(), process.tail()
