"""Storing a batch of jobs by COPY: the same rows insert_jobs_as's INSERT stores, for less.

A batch of jobs with no idempotency key, no unique key and no delay can meet a stored job by
its id alone (a taken id fails the COPY whole), so it needs none of the INSERT's ON
CONFLICT, key order or lateral due time, and COPY writes it faster: 1,000 jobs in 11-12 ms
against the INSERT's 16 here, the indexes and triggers being the same. The rows go in
Postgres's binary COPY format, written here rather than by the driver, which would encode
each payload with the connection's jsonb codec: on an application's own connection,
whatever the application registered. The timestamps are a `now()` read first (inside a
transaction, the transaction's own), so the rows and the answers hold what the INSERT
would have stored. The rows are sent in pieces as they are made, and the answers made once
the last is sent: Postgres writes the rows meanwhile, so little of the Python work adds to
the call's time (docs/performance.md).

`jsonb_form` (adapters/jsonb.py) gives the answers each payload as jsonb reads it back
(keys in jsonb's order, a number written with an exponent as its digits), as the INSERT's
RETURNING did.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from taskforge.adapters.jsonb import jsonb_form
from taskforge.domain.new_job import NewJob

Outcome = TypeVar("Outcome")

COPY_FROM = 100
"""Jobs in a batch from which COPY is the cheaper way. Inside a transaction, its three more
round trips (now(), the savepoint and its release) cost what it saves at about 50 jobs
(docs/performance.md); outside one it needs one more (now()) and saves BEGIN and COMMIT."""

PIECE = 200
"""Jobs per piece of COPY data (about 30 kB for small payloads)."""

COLUMNS = (
    "id", "payload", "next_run_at", "published_at",
    "queue", "job_type", "max_attempts", "initial_delay", "backoff", "max_delay", "jitter",
    "visibility_timeout", "traceparent", "timeout", "priority",
    "created_at", "updated_at",
)  # fmt: skip
"""Each job's own fields first, then those a batch's jobs mostly share, then the two that
every job of a batch shares: so a row is a few joined pieces, most of them written once."""

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)
_ROW_START = struct.pack(">hi", len(COLUMNS), 16)  # the field count, then the uuid's length
_NULL = struct.pack(">i", -1)
_POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_int16 = struct.Struct(">ih").pack
_int32 = struct.Struct(">ii").pack
_float8 = struct.Struct(">id").pack
_length = struct.Struct(">i").pack


def copyable(jobs: Sequence[NewJob]) -> bool:
    """Whether `jobs` can be stored by COPY: enough of them, none with a key or a delay."""
    return len(jobs) >= COPY_FROM and all(
        job.idempotency_key is None and job.unique_key is None and not job.delay for job in jobs
    )


def takes_copy(conn: asyncpg.Connection | PoolConnectionProxy) -> bool:
    """Whether the connection reads COPY data as written here: its client encoding is UTF-8
    (Postgres reads COPY's text in the client encoding; on another one the INSERT, whose
    parameters asyncpg encodes, stores the payloads as sent)."""
    return bool(conn.get_settings().get_text_codec().name == "utf-8")


def stored_by_copy(conn: asyncpg.Connection | PoolConnectionProxy, jobs: Sequence[NewJob]) -> bool:
    """Whether the job store writes `jobs` (sharing no key) on `conn` by one COPY."""
    return copyable(jobs) and takes_copy(conn)


COPY_STATEMENT = f"COPY jobs ({', '.join(COLUMNS)}) FROM STDIN (FORMAT binary)"
SELECT_NOW = "SELECT now()"
SELECT_NOW_IN_MICROSECONDS = "SELECT (extract(epoch FROM now()) * 1000000)::int8"
"""now() as a number, which no timestamptz codec of the application's can change."""
SAVEPOINT = "SAVEPOINT taskforge_copy"
RELEASE_SAVEPOINT = "RELEASE SAVEPOINT taskforge_copy"
UNDO_SAVEPOINT = "ROLLBACK TO SAVEPOINT taskforge_copy"
ROLLBACK_TO_SAVEPOINT = f"{UNDO_SAVEPOINT}; {RELEASE_SAVEPOINT}"
"""Plain SQL: the transaction may have been begun by a BEGIN of the application's own,
inside which asyncpg makes no savepoint. (psycopg sends UNDO_SAVEPOINT and
RELEASE_SAVEPOINT one by one: its parameterised statements are one command each.)"""


async def copy_jobs(
    conn: asyncpg.Connection | PoolConnectionProxy,
    jobs: Sequence[NewJob],
    created_as: Callable[[NewJob, dict[str, Any]], Outcome],
    *,
    published: bool,
) -> list[Outcome]:
    """Store `jobs` (see copyable) as created at the transaction's `now()`; for each,
    `created_as(job, row)` with the row the INSERT would return: id, payload (as jsonb reads
    it back), next_run_at, created_at and published (due at once, with `published`). An id
    already stored raises asyncpg's UniqueViolationError with none of `jobs` stored: inside
    a transaction, undone by a savepoint, so the transaction stays usable; outside one, the
    COPY is a transaction of its own, all or none, and `now()` is read just before it."""
    now = _UNIX_EPOCH + timedelta(microseconds=await conn.fetchval(SELECT_NOW_IN_MICROSECONDS))
    outcomes: list[Outcome] = []

    async def source() -> AsyncIterator[bytes]:
        for piece in copy_data(jobs, now, published=published):
            yield piece
        # Made before the COPY ends, while Postgres writes the rows sent; unused if it fails.
        outcomes.extend(map(created_as, jobs, created_rows(jobs, now, published=published)))

    if not conn.is_in_transaction():
        await conn.copy_to_table("jobs", source=source(), columns=COLUMNS, format="binary")
        return outcomes
    await conn.execute(SAVEPOINT)
    try:
        await conn.copy_to_table("jobs", source=source(), columns=COLUMNS, format="binary")
    except Exception:
        # A taken id, or a row or an answer that could not be made: undone, the transaction
        # usable, as when the rows were all made before the COPY.
        await conn.execute(ROLLBACK_TO_SAVEPOINT)
        raise
    await conn.execute(RELEASE_SAVEPOINT)
    return outcomes


def copy_data(jobs: Sequence[NewJob], now: datetime, *, published: bool) -> Iterator[bytes]:
    """The jobs' rows in COPY's binary format (the data of COPY_STATEMENT), as created at
    `now`, in pieces of PIECE jobs: Postgres writes each piece while the next is made."""
    stamp = _timestamptz(now)
    due_now = stamp + (stamp if published else _NULL)
    shared: dict[tuple[object, ...], bytes] = {}
    rows = [_HEADER]
    for number, job in enumerate(jobs, 1):
        if job.run_at is None:
            timing = due_now
        else:
            due, is_published = _due(job, now, published)
            timing = _timestamptz(due) + (stamp if is_published else _NULL)
        policy = job.policy
        key = (
            job.queue, job.job_type, policy, job.visibility_timeout, job.traceparent,
            job.timeout, job.priority,
        )  # fmt: skip
        if (settings := shared.get(key)) is None:
            settings = shared[key] = _settings(job)
        payload = msgspec.json.encode(job.payload)
        size = _length(len(payload) + 1)
        parts = (_ROW_START, job.id.bytes, size, b"\x01", payload, timing, settings, stamp, stamp)
        rows.append(b"".join(parts))
        if number % PIECE == 0:
            yield b"".join(rows)
            rows = []
    rows.append(_TRAILER)
    yield b"".join(rows)


def created_rows(
    jobs: Sequence[NewJob], now: datetime, *, published: bool
) -> Iterator[dict[str, Any]]:
    """For each of `jobs`, the row the INSERT would return if it stored them at `now`: id,
    payload as jsonb reads it back, next_run_at, created_at, published. Made one at a time,
    each for its answer: a thousand rows held at once would only feed the garbage collector."""
    for job in jobs:
        due, is_published = _due(job, now, published)
        yield {
            "id": job.id,
            "payload": jsonb_form(job.payload),
            "next_run_at": due,
            "created_at": now,
            "published": is_published,
        }


def _due(job: NewJob, now: datetime, published: bool) -> tuple[datetime, bool]:
    """When `job`, stored at `now`, is due (in `now`'s zone, as a read of it gives it), and
    whether it is stored as published: due at once, with `published` (PUBLISHED_WHEN_DUE)."""
    if job.run_at is None:
        return now, published
    due = job.run_at.astimezone(now.tzinfo)
    return due, published and due <= now


def _settings(job: NewJob) -> bytes:
    """The fields from `queue` to `priority`, in COPY's binary format."""
    policy = job.policy
    return b"".join(
        (
            _text(job.queue),
            _text(job.job_type),
            _int32(4, policy.max_attempts),
            _float8(8, policy.initial_delay),
            _float8(8, policy.backoff),
            _float8(8, policy.max_delay),
            _length(1) + (b"\x01" if policy.jitter else b"\x00"),
            _float8(8, job.visibility_timeout),
            _NULL if job.traceparent is None else _text(job.traceparent),
            _float8(8, job.timeout),
            _int16(2, job.priority),
        )
    )


def _text(value: str) -> bytes:
    encoded = value.encode()
    return _length(len(encoded)) + encoded


def _timestamptz(moment: datetime) -> bytes:
    return struct.pack(">iq", 8, (moment - _POSTGRES_EPOCH) // _MICROSECOND)
