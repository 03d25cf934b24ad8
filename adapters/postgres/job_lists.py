"""The statements that list jobs on Postgres, newest first, with their total: one walk of
a state-led index when the filter names a state, one bounded walk per state merged
otherwise (migrations 0015 and 0017)."""

from __future__ import annotations

from collections.abc import Sequence

from taskforge.adapters.postgres._rows import JOB_COLUMNS
from taskforge.application.ports import ListFilter
from taskforge.domain.states import JobState


def _find_jobs(where: str, total_from: str, page: str) -> str:
    # One statement, so the page and its total come from one snapshot; the LEFT JOIN keeps
    # a row carrying the total even when the page is empty. The total is the sum of the
    # maintained counts (migration 0013) when `where` names only columns job_counts has too:
    # exact and cheap however many jobs match.
    total = "coalesce(sum(jobs), 0)::bigint" if total_from == "job_counts" else "count(*)"
    return f"""
SELECT matching.total, page.*
FROM (SELECT {total} AS total FROM {total_from} {where}) AS matching
LEFT JOIN LATERAL ({page}) AS page ON true
"""


def _one_walk(where: str, leading: str) -> str:
    """The page read from one index walk: `leading` names the filter columns that lead the
    index and the sort (jobs_state_created, jobs_queue_state_created), each descending as
    the rest of the key is, so the walk is one backward scan of the ascending index."""
    return f"""
    SELECT {JOB_COLUMNS} FROM jobs {where}
    ORDER BY {leading}created_at DESC, id DESC
    LIMIT $1 OFFSET $2"""


def _walk_per_state(conditions: Sequence[str], leading: str) -> str:
    """The page for a filter without a state: the newest ids of each state, each from its
    own walk of a state-led index (the first `$2 + $1` of each suffice), merged and cut to
    the page, then only the page's rows read from the table. Postgres does not merge the
    walks itself (its ordered-append plans do not see the state of each branch as fixed),
    so the merge sorts at most six times offset plus limit ids."""
    branches = "\n        UNION ALL\n".join(
        f"""        (SELECT id, created_at FROM jobs
         WHERE {" AND ".join([_one_value("state", f"'{state}'"), *conditions])}
         ORDER BY {leading}state DESC, created_at DESC, id DESC
         LIMIT $1::bigint + $2::bigint)"""
        for state in JobState
    )
    return f"""
    SELECT {JOB_COLUMNS} FROM (
        SELECT id AS page_id, created_at AS page_created_at FROM (
{branches}
        ) AS newest
        ORDER BY created_at DESC, id DESC
        LIMIT $1 OFFSET $2
    ) AS page_ids
    JOIN jobs ON jobs.id = page_ids.page_id
    ORDER BY page_ids.page_created_at DESC, page_ids.page_id DESC"""


def _one_value(column: str, value: str) -> str:
    """`column` equal to `value`, written as a closed range (see find_statement)."""
    return f"{column} >= {value} AND {column} <= {value}"


FIND_JOBS = _find_jobs("", "job_counts", _walk_per_state([], ""))


_FILTER_COLUMNS = ("queue", "state", "job_type", "idempotency_key")
"""ListFilter's fields, each compared for equality with a column of the same name."""

_COUNTED_COLUMNS = ("queue", "state")
"""The filters job_counts answers totals for, and that lead an index walked newest first
(jobs_state_created, jobs_queue_state_created; migration 0017)."""


def find_statement(where: ListFilter) -> tuple[str, list[str]]:
    """The statement for the filter's set fields; parameters from $3 (after limit, offset).
    Only column names from _FILTER_COLUMNS go into the text, never a value.

    Jobs are listed through two indexes, by creation within a state and within a queue and
    state (migrations 0015 and 0017), each walked backward: newest first. A filter with a
    state (or an idempotency key, at most one job) is one walk; any other filter merges a
    walk per state (_walk_per_state).

    Queue and state are written as a closed range of one value (`state >= $3 AND state <=
    $3`, the same rows as `state = $3`) and lead the ORDER BY, which ties the plan to the
    index made for them. With `state = $3` Postgres drops `state` from the sort key as
    constant and may pick another index whose order it can use, skipping rows of other
    states: cheap by its statistics, but it reads the whole newer part of the table when
    the newest jobs are in other states (900,000 finished jobs behind 100,000 just delayed:
    300 ms, not 0.1)."""
    conditions: list[str] = []
    arguments: list[str] = []
    leading = ""
    for column in _FILTER_COLUMNS:
        value = getattr(where, column)
        if value is not None:
            arguments.append(str(value))
            number = len(arguments) + 2
            if column in _COUNTED_COLUMNS:
                conditions.append(_one_value(column, f"${number}"))
                leading += f"{column} DESC, "
            else:
                conditions.append(f"{column} = ${number}")
    if not conditions:
        return FIND_JOBS, []
    counted = where.job_type is None and where.idempotency_key is None
    total_from = "job_counts" if counted else "jobs"
    matching = "WHERE " + " AND ".join(conditions)
    if where.state is None and where.idempotency_key is None:
        page = _walk_per_state(conditions, leading)
    else:
        page = _one_walk(matching, leading)
    return _find_jobs(matching, total_from, page), arguments
