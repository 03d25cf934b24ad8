"""DeadLetterStore on Postgres: reads the rows the other store roles write."""

from __future__ import annotations

from uuid import UUID

from taskforge.adapters.postgres._rows import DEAD_LETTER_COLUMNS, dead_letter_from_row
from taskforge.adapters.postgres.connection import PooledAdapter
from taskforge.domain.job import DeadLetter
from taskforge.domain.validation import Page

# A job has a dead letter exactly while it is in state DLQ (both change in one transaction),
# so the count is the maintained count of DLQ jobs (migration 0013): cheap at any size.
_DLQ_JOBS = "SELECT coalesce(sum(jobs), 0)::bigint AS total FROM job_counts WHERE state = 'DLQ'"

FIND_DEAD_LETTERS = f"""
SELECT matching.total, page.*
FROM ({_DLQ_JOBS}) AS matching
LEFT JOIN LATERAL (
    SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters
    ORDER BY failed_at DESC, job_id DESC
    LIMIT $1 OFFSET $2
) AS page ON true
"""

SELECT_DEAD_LETTER = f"SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE job_id = $1"

COUNT_DEAD_LETTERS = _DLQ_JOBS


class PostgresDeadLetterStore(PooledAdapter):
    """DeadLetterStore on Postgres: reads the rows the other roles write."""

    async def find(self, page: Page) -> tuple[list[DeadLetter], int]:
        async with self._connection() as conn:
            rows = await conn.fetch(FIND_DEAD_LETTERS, page.limit, page.offset)
        entries = [dead_letter_from_row(row) for row in rows if row["job_id"] is not None]
        return entries, rows[0]["total"]

    async def get(self, job_id: UUID) -> DeadLetter | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(SELECT_DEAD_LETTER, job_id)
        return None if row is None else dead_letter_from_row(row)

    async def count(self) -> int:
        async with self._connection() as conn:
            total: int = await conn.fetchval(COUNT_DEAD_LETTERS)
        return total
