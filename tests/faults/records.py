"""What the suite records in each scenario's database, and how it reads it back.

Two tables sit beside TaskForge's own (they are the suite's, not TaskForge's):

- `fault_ledger`: one row per handler execution, written by support/faults_ledger.py.
- `fault_history`: one row per job state change, written by an AFTER trigger on `jobs` in
  the same transaction as the change (so a rolled-back change leaves no row). Each row
  keeps the lease token before and after, the old lease expiry, the attempt count and the
  last error, which is what the fencing and duplicate checks need.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from taskforge.adapters.postgres.migrations import apply_migrations

SUITE_DDL = """
CREATE TABLE fault_ledger (
    id bigserial PRIMARY KEY,
    job_id uuid NOT NULL,
    attempt integer NOT NULL,
    pid integer NOT NULL,
    lease_token uuid,
    lease_owner text,
    started_at timestamptz NOT NULL,
    ended_at timestamptz,
    outcome text
);
CREATE INDEX fault_ledger_job ON fault_ledger (job_id);
CREATE INDEX fault_ledger_open ON fault_ledger (pid) WHERE ended_at IS NULL;

CREATE TABLE fault_history (
    id bigserial PRIMARY KEY,
    job_id uuid NOT NULL,
    from_state text,
    to_state text NOT NULL,
    old_token uuid,
    new_token uuid,
    old_lease_expires_at timestamptz,
    attempt_count integer NOT NULL,
    max_attempts integer NOT NULL,
    last_error text,
    reason text,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX fault_history_job ON fault_history (job_id, id);

CREATE FUNCTION fault_record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO fault_history (job_id, from_state, to_state, new_token, attempt_count,
                                   max_attempts, last_error, reason)
        VALUES (NEW.id, NULL, NEW.state, NEW.lease_token, NEW.attempt_count,
                NEW.max_attempts, NEW.last_error, NEW.reason);
    ELSE
        INSERT INTO fault_history (job_id, from_state, to_state, old_token, new_token,
                                   old_lease_expires_at, attempt_count, max_attempts,
                                   last_error, reason)
        VALUES (NEW.id, OLD.state, NEW.state, OLD.lease_token, NEW.lease_token,
                OLD.lease_expires_at, NEW.attempt_count, NEW.max_attempts, NEW.last_error,
                NEW.reason);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER fault_history_insert AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION fault_record_transition();
CREATE TRIGGER fault_history_update AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION fault_record_transition();
"""


async def prepare_database(admin_dsn: str, database: str, dsn: str) -> None:
    """Create `database`, apply TaskForge's migrations, then add the suite's tables."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    await apply_migrations(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SUITE_DDL)
    finally:
        await conn.close()


@dataclass(frozen=True, slots=True)
class JobRow:
    id: UUID
    state: str
    attempt_count: int
    max_attempts: int
    next_run_at: datetime
    payload: dict[str, Any]
    reason: str | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    job_id: UUID
    payload: dict[str, Any]
    reason: str | None
    last_error: str | None
    attempts: int


@dataclass(frozen=True, slots=True)
class Execution:
    id: int
    job_id: UUID
    attempt: int
    pid: int
    lease_token: UUID | None
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None


@dataclass(frozen=True, slots=True)
class Transition:
    id: int
    job_id: UUID
    from_state: str | None
    to_state: str
    old_token: UUID | None
    new_token: UUID | None
    old_lease_expires_at: datetime | None
    attempt_count: int
    max_attempts: int
    last_error: str | None
    reason: str | None
    at: datetime

    @property
    def lease_expired(self) -> bool:
        """The change took a lease away after its expiry: the scheduler reaped it."""
        return (
            self.from_state == "RUNNING"
            and self.old_lease_expires_at is not None
            and self.old_lease_expires_at < self.at
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the invariants look at, read after the drain, plus the database clock."""

    now: datetime
    jobs: dict[UUID, JobRow]
    dead_letters: dict[UUID, DeadLetterRow]
    executions: list[Execution]
    history: list[Transition]


async def read_snapshot(dsn: str) -> Snapshot:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.set_type_codec(
            "jsonb", schema="pg_catalog", encoder=_json_dumps, decoder=_json_loads
        )
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            now = await conn.fetchval("SELECT now()")
            jobs = await conn.fetch(
                "SELECT id, state, attempt_count, max_attempts, next_run_at, payload, reason,"
                " last_error FROM jobs"
            )
            dead = await conn.fetch(
                "SELECT job_id, payload, reason, last_error, attempts FROM dead_letters"
            )
            ledger = await conn.fetch(
                "SELECT id, job_id, attempt, pid, lease_token, started_at, ended_at, outcome"
                " FROM fault_ledger ORDER BY started_at, id"
            )
            history = await conn.fetch(
                "SELECT id, job_id, from_state, to_state, old_token, new_token,"
                " old_lease_expires_at, attempt_count, max_attempts, last_error, reason, at"
                " FROM fault_history ORDER BY id"
            )
    finally:
        await conn.close()
    return Snapshot(
        now=now,
        jobs={row["id"]: JobRow(**dict(row)) for row in jobs},
        dead_letters={row["job_id"]: DeadLetterRow(**dict(row)) for row in dead},
        executions=[Execution(**dict(row)) for row in ledger],
        history=[Transition(**dict(row)) for row in history],
    )


def _json_dumps(value: Any) -> str:
    import json

    return json.dumps(value)


def _json_loads(text: str) -> Any:
    import json

    return json.loads(text)
