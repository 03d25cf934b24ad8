"""How `taskforge-cli` shows API resources to people: rich tables and panels.

`plain` is true when stdout is not a terminal. Plain output has no
borders and no colour, one row per line with aligned columns, so `grep`, `awk` and `cut`
work on it; `--json` remains the stable interface for programs. Values coming from the API
are wrapped in `Text`, so a payload or an error message is never read as rich markup, and
their control characters are written out (see `printable`); a payload is shown as the exact
JSON the job holds instead (see `exact_json`).
Longer than most modules: one short renderer per resource the API returns.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from taskforge.domain.states import JobState

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LEFT_BY_JSON = re.compile(r"[\x7f-\x9f]")


def printable(value: Any) -> Any:
    """`value` (decoded JSON) with every control character in its strings and keys but
    newline and tab written out (`\\x1b`): a reason or an error message stored by anyone
    cannot move the cursor, retitle the window or recolour the operator's terminal."""
    if isinstance(value, str):
        return _CONTROL.sub(_escaped, value)
    if isinstance(value, dict):
        return {printable(key): printable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [printable(item) for item in value]
    return value


def _escaped(control: re.Match[str]) -> str:
    return f"\\x{ord(control.group()):02x}"


def exact_json(value: Any, indent: int | None = None) -> str:
    """`value`, decoded JSON as the API sent it (not through `printable`, whose `\\x1b`
    reads as a backslash), as compact JSON that decodes to exactly it and is safe on a
    terminal: every control character is a JSON escape (`\\u001b`, `\\u009b`); other
    non-ASCII characters stay as they are."""
    # json escapes C0 controls itself; it leaves DEL and C1 ones, only ever inside a string.
    text = (
        _compact_json(value)
        if indent is None
        else json.dumps(value, ensure_ascii=False, indent=indent)
    )
    return _LEFT_BY_JSON.sub(_json_escaped, text)


def _json_escaped(control: re.Match[str]) -> str:
    return f"\\u{ord(control.group()):04x}"


STATE_STYLES: Mapping[str, str] = {
    JobState.PENDING: "yellow",
    JobState.RUNNING: "bold blue",
    JobState.SUCCEEDED: "bold green",
    JobState.FAILED: "bold red",
    JobState.DLQ: "bold magenta",
    JobState.CANCELLED: "dim",
}
STATE_WIDTH = max(len(state) for state in JobState)
MISSING = "-"
FREE_TEXT_COLUMNS = frozenset({"REASON", "LAST ERROR"})
ID_COLUMNS = frozenset({"ID", "JOB ID"})
MIN_FREE_TEXT = 12
MEASURE_WIDTH = 100_000
PAYLOAD_CHARS = 500
RESULT_LINES = 20
RESULT_LINE_CHARS = 200


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def timestamp(value: str | None) -> str:
    """ISO-8601 UTC to the second (`2026-01-02T03:04:05Z`); the API keeps the full value."""
    moment = _parse_time(value)
    if moment is None:
        return value or MISSING
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(seconds: float) -> str:
    if seconds < 0.001:
        return "<1ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def job_detail(job: Mapping[str, Any], *, sent: Mapping[str, Any], plain: bool) -> RenderableType:
    """One job: identity, policy, attempts, timings, the last error and its traceback.
    `job` went through `printable`; `sent` is the job as the API sent it, for its payload
    and result (`exact_json`)."""
    grid = _grid()
    for label, value in _job_rows(job, sent=sent, plain=plain):
        grid.add_row(label, value)
    if plain:
        return grid
    title = Text(f"job {job.get('id', '?')}", style="bold")
    return Panel(grid, title=title, title_align="left", box=box.ROUNDED, expand=False)


def _job_rows(
    job: Mapping[str, Any], *, sent: Mapping[str, Any], plain: bool
) -> Iterable[tuple[str, Text]]:
    state = str(job.get("state", "?"))
    yield "id", Text(str(job.get("id")))
    yield "state", state_text(state)
    yield "queue", Text(str(job.get("queue")))
    yield "type", Text(str(job.get("jobType")))
    if job.get("priority") is not None:
        yield "priority", Text(str(job["priority"]))
    if job.get("idempotencyKey") is not None:
        yield "idempotency key", Text(str(job["idempotencyKey"]))
    if job.get("uniqueKey") is not None:
        yield "unique key", Text(str(job["uniqueKey"]))
    yield "payload", Text(_shorten(exact_json(sent.get("payload", {})), PAYLOAD_CHARS))
    yield "attempts", Text(_attempts(job))
    if job.get("snoozes") or job.get("handBacks"):
        yield (
            "not counted",
            Text(f"{job.get('snoozes', 0)} snoozed, {job.get('handBacks', 0)} handed back"),
        )
    if job.get("unknownTypeSince"):
        since = timestamp(job["unknownTypeSince"])
        yield "no handler", Text(f"no live worker of its queue has one since {since}", "yellow")
    yield "policy", Text(_policy(job))
    yield "created", Text(timestamp(job.get("createdAt")))
    # startedAt is when the latest attempt started: after retries it is not the time the
    # job spent queued, and finishedAt - startedAt is a run time only for a success (a job
    # cancelled or dead-lettered while waiting for a retry finished without running).
    if job.get("startedAt"):
        since_created = _between(job.get("createdAt"), job.get("startedAt"))
        suffix = f"  ({since_created} after the job was created)" if since_created else ""
        yield "started", Text(timestamp(job["startedAt"]) + suffix)
    if job.get("finishedAt"):
        since_started = _between(job.get("startedAt"), job.get("finishedAt"))
        if since_started is None:
            suffix = ""
        elif state == JobState.SUCCEEDED:
            suffix = f"  (ran {since_started})"
        else:
            suffix = f"  ({since_started} after it last started)"
        yield "finished", Text(timestamp(job["finishedAt"]) + suffix)
    if sent.get("result") is not None:
        yield "result", Text(_result(sent["result"], plain=plain))
    if state in (JobState.PENDING, JobState.FAILED):
        yield "next run", Text(timestamp(job.get("nextRunAt")))
    if state == JobState.RUNNING and job.get("leaseOwner"):
        expires = timestamp(job.get("leaseExpiresAt"))
        yield "lease", Text(f"{job['leaseOwner']} until {expires}")
    if job.get("reason"):
        yield "reason", Text(str(job["reason"]))
    if job.get("lastError"):
        # A job that succeeded keeps the error of an attempt that failed before.
        label = "earlier error" if state == JobState.SUCCEEDED else "last error"
        yield label, Text(str(job["lastError"]), style="red")
    traceback = last_traceback(job)
    if traceback:
        yield "traceback", Text(traceback.rstrip(), style="dim")


def last_traceback(job: Mapping[str, Any]) -> str | None:
    """The traceback kept with the job's last failed attempt, if any."""
    errors = job.get("errors") or [{}]
    last = errors[-1] if isinstance(errors, list) and isinstance(errors[-1], Mapping) else {}
    traceback = last.get("traceback")
    return traceback if isinstance(traceback, str) and traceback else None


def _result(value: Any, *, plain: bool) -> str:
    """Plain output: the whole result on one line. A terminal: indented, its first
    RESULT_LINES lines, each cut at RESULT_LINE_CHARS (`--json` shows all of it)."""
    if plain:
        return exact_json(value)
    lines = exact_json(value, indent=2).splitlines()
    shown = [_shorten(line, RESULT_LINE_CHARS) for line in lines[:RESULT_LINES]]
    if len(lines) > RESULT_LINES:
        shown.append(f"… {len(lines) - RESULT_LINES} more lines (--json shows the whole result)")
    return "\n".join(shown)


def _attempts(job: Mapping[str, Any]) -> str:
    """`3 of 5 (2 automatic retries after failures)`: retryCount counts FAILED -> PENDING."""
    text = f"{job.get('attemptCount', 0)} of {job.get('maxAttempts', '?')}"
    retries = job.get("retryCount", 0)
    if not retries:
        return text
    if retries == 1:
        return text + " (1 automatic retry after a failure)"
    return text + f" ({retries} automatic retries after failures)"


def _policy(job: Mapping[str, Any]) -> str:
    initial = _seconds(job.get("initialDelay"))
    maximum = _seconds(job.get("maxDelay"))
    jitter = "with jitter" if job.get("jitter") else "no jitter"
    timeout = job.get("timeout")
    limit = (
        f"; time limit {_seconds(timeout)}" if isinstance(timeout, int | float) and timeout else ""
    )
    return (
        f"backoff {initial} x{_number(job.get('backoff'))} up to {maximum}, {jitter}; "
        f"visibility timeout {_seconds(job.get('visibilityTimeout'))}{limit}"
    )


def _number(value: Any) -> str:
    return f"{value:.15g}" if isinstance(value, int | float) else MISSING


def _seconds(value: Any) -> str:
    return duration(float(value)) if isinstance(value, int | float) else MISSING


def watch_line(job: Mapping[str, Any]) -> Text:
    """One line per observed change while following a job in plain output: a multi-line
    last error is joined into it, as in the tables (`status` shows it whole)."""
    state = str(job.get("state", "?"))
    line = Text(timestamp(job.get("updatedAt")) + "  ")
    # Padded to the longest state name, so the lines of one watch stay aligned.
    line.append_text(state_text(state)).append(" " * (STATE_WIDTH - len(state)))
    line.append(f"  attempt {job.get('attemptCount', 0)}/{job.get('maxAttempts', '?')}")
    if job.get("lastError") and state != JobState.SUCCEEDED:
        line.append(f"  last error: {_one_line(job['lastError'])}")
    return line


def watch_view(
    job: Mapping[str, Any], *, sent: Mapping[str, Any], finished: bool
) -> RenderableType:
    """The live display: the job's panel (`job_detail`) and what the watcher is doing."""
    state = str(job.get("state", "?"))
    if finished:
        status = Text.assemble("reached ", state_text(state))
    else:
        status = Text.assemble("watching, currently ", state_text(state), "  (Ctrl-C stops)")
    return Group(job_detail(job, sent=sent, plain=False), status)


def jobs_table(items: Sequence[Mapping[str, Any]], *, plain: bool, width: int) -> RenderableType:
    headers = ("ID", "QUEUE", "TYPE", "STATE", "ATTEMPTS", "CREATED", "LAST ERROR")
    rows = [
        [
            Text(str(job.get("id"))),
            Text(str(job.get("queue"))),
            Text(str(job.get("jobType"))),
            state_text(str(job.get("state"))),
            Text(f"{job.get('attemptCount', 0)}/{job.get('maxAttempts', '?')}"),
            Text(timestamp(job.get("createdAt"))),
            Text(_one_line(_failing_error(job))),
        ]
        for job in items
    ]
    return _table(headers, rows, plain=plain, width=width)


def _failing_error(job: Mapping[str, Any]) -> Any:
    """A listed job's last error, unless it succeeded since (then it is history: `status`
    shows it as the earlier error)."""
    return None if job.get("state") == JobState.SUCCEEDED else job.get("lastError")


def dead_letters_table(
    items: Sequence[Mapping[str, Any]], *, plain: bool, width: int
) -> RenderableType:
    headers = ("JOB ID", "QUEUE", "TYPE", "ATTEMPTS", "FAILED AT", "REASON", "LAST ERROR")
    rows = [
        [
            Text(str(entry.get("jobId"))),
            Text(str(entry.get("queue"))),
            Text(str(entry.get("jobType"))),
            Text(str(entry.get("attempts"))),
            Text(timestamp(entry.get("failedAt"))),
            Text(_one_line(entry.get("reason"))),
            Text(_one_line(entry.get("lastError"))),
        ]
        for entry in items
    ]
    return _table(headers, rows, plain=plain, width=width)


def dead_letter_detail(
    entry: Mapping[str, Any],
    *,
    payload: Any,
    plain: bool,
    job: Mapping[str, Any] | None = None,
) -> RenderableType:
    """The dead letter, with what its `job` (when it could be read) adds: when the job was
    created and the traceback of its last failed attempt. The entry's own createdAt and
    updatedAt are when it was written, as failedAt says: --json shows them. `payload` is the
    entry's as the API sent it (`exact_json`), `entry` and `job` through `printable`."""
    grid = _grid()
    grid.add_row("job id", Text(str(entry.get("jobId"))))
    grid.add_row("queue", Text(str(entry.get("queue"))))
    grid.add_row("type", Text(str(entry.get("jobType"))))
    grid.add_row("payload", Text(_shorten(exact_json(payload), PAYLOAD_CHARS)))
    grid.add_row("attempts", Text(str(entry.get("attempts"))))
    grid.add_row("reason", Text(str(entry.get("reason") or MISSING)))
    grid.add_row("last error", Text(str(entry.get("lastError") or MISSING), style="red"))
    grid.add_row("failed at", Text(timestamp(entry.get("failedAt"))))
    if job is not None:
        grid.add_row("job created", Text(timestamp(job.get("createdAt"))))
    traceback = None if job is None else last_traceback(job)
    if traceback:
        grid.add_row("traceback", Text(traceback.rstrip(), style="dim"))
    if plain:
        return grid
    title = Text(f"dead letter {entry.get('jobId', '?')}", style="bold")
    return Panel(grid, title=title, title_align="left", box=box.ROUNDED, expand=False)


def stats_table(stats: Mapping[str, Any], *, plain: bool, width: int) -> RenderableType:
    """A row per queue (depth = ids waiting in the ready queue) and a row of totals."""
    states = list(JobState)
    table = _empty_table(plain)
    table.add_column("QUEUE", no_wrap=True)
    for header in ("DEPTH", *states, "TOTAL"):
        table.add_column(header, justify="right", no_wrap=True)
    for queue in stats.get("queues", []):
        counts = queue.get("states", {})
        table.add_row(
            Text(str(queue.get("queue"))),
            Text(str(queue.get("depth", 0))),
            *(_count(counts.get(state, 0), state) for state in states),
            Text(str(queue.get("total", 0))),
        )
    totals = stats.get("totals", {})
    table.add_section()
    table.add_row(
        Text("all", style="bold"),
        Text(str(sum(q.get("depth", 0) for q in stats.get("queues", [])))),
        *(_count(totals.get(state, 0), state) for state in states),
        Text(str(stats.get("total", 0)), style="bold"),
    )
    return _fitted(table, plain=plain, width=width)


def queues_table(items: Sequence[Mapping[str, Any]], *, plain: bool, width: int) -> RenderableType:
    """A row per queue: whether it is paused, then its jobs per state."""
    states = list(JobState)
    table = _empty_table(plain)
    table.add_column("QUEUE", no_wrap=True)
    table.add_column("PAUSED", no_wrap=True)
    for header in (*states, "TOTAL"):
        table.add_column(header, justify="right", no_wrap=True)
    for queue in items:
        counts = queue.get("states", {})
        paused = (
            Text(f"since {timestamp(queue.get('pausedAt'))}", style="yellow")
            if queue.get("paused")
            else Text("no", style="dim")
        )
        table.add_row(
            Text(str(queue.get("queue"))),
            paused,
            *(_count(counts.get(state, 0), state) for state in states),
            Text(str(queue.get("total", 0))),
        )
    return _fitted(table, plain=plain, width=width)


def schedules_table(
    items: Sequence[Mapping[str, Any]], *, plain: bool, width: int
) -> RenderableType:
    """A row per schedule: when it fires (cron, zone, next and previous tick), what it
    enqueues and at which priority, where it was declared and whether it is paused."""
    table = _empty_table(plain)
    headers = ("NAME", "CRON", "TIMEZONE", "JOB TYPE", "QUEUE", "PRIORITY", "SOURCE", "PAUSED")
    for header in headers:
        table.add_column(header, no_wrap=True)
    table.add_column("NEXT FIRE", no_wrap=True)
    table.add_column("PREVIOUS FIRE", no_wrap=True)
    for schedule in items:
        paused = Text("yes", style="yellow") if schedule.get("paused") else Text("no", style="dim")
        table.add_row(
            Text(str(schedule.get("name"))),
            Text(str(schedule.get("cron"))),
            Text(str(schedule.get("timezone"))),
            Text(str(schedule.get("jobType"))),
            Text(str(schedule.get("queue"))),
            Text(str(schedule.get("priority", MISSING))),
            Text(str(schedule.get("source"))),
            paused,
            Text(timestamp(schedule.get("nextFireAt"))),
            Text(timestamp(schedule.get("previousFireAt"))),
        )
    return _fitted(table, plain=plain, width=width)


def workers_table(items: Sequence[Mapping[str, Any]], *, plain: bool, width: int) -> RenderableType:
    """A row per live worker: where it runs, what it serves, how busy it is."""
    table = _empty_table(plain)
    for header in ("WORKER", "QUEUES", "JOB TYPES", "BUSY", "STARTED", "LAST REPORT"):
        table.add_column(header, no_wrap=header != "JOB TYPES")
    for worker in items:
        table.add_row(
            Text(str(worker.get("workerId"))),
            Text(",".join(worker.get("queues", []))),
            Text(",".join(worker.get("jobTypes", [])) or "-"),
            Text(f"{worker.get('busySlots', 0)}/{worker.get('concurrency', 0)}"),
            Text(timestamp(worker.get("startedAt"))),
            Text(timestamp(worker.get("heartbeatAt"))),
        )
    return _fitted(table, plain=plain, width=width)


def _count(value: Any, state: str) -> Text:
    return Text(str(value), style=STATE_STYLES.get(state, "") if value else "dim")


def health_table(live: Mapping[str, Any], ready: Mapping[str, Any]) -> Table:
    """`live` is the /healthz body, `ready` the /readyz one (200 or 503)."""
    table = Table("CHECK", "STATUS", box=None, pad_edge=False, padding=(0, 2))
    table.add_row("live", _health_cell(str(live.get("status", "ok"))))
    for name, result in ready.get("checks", {}).items():
        table.add_row(Text(str(name)), _health_cell(str(result)))
    table.add_row("ready", _health_cell("ok" if ready.get("status") == "ready" else "not ready"))
    return table


def _health_cell(value: str) -> Text:
    return Text(value, style="green" if value == "ok" else "bold red")


def page_summary(page: Mapping[str, Any], shown: int, noun: str) -> str:
    """`showing 1-20 of 35 jobs; next page: --offset 20` (for people, on terminals)."""
    offset = int(page.get("offset", 0))
    total = int(page.get("total", shown))
    if shown == 0:
        return f"no {noun} (total {total})" if total else f"no {noun}"
    text = f"showing {offset + 1}-{offset + shown} of {total} {noun}"
    if more_rows(page, shown):
        text += f"; next page: --offset {offset + shown}"
    return text


def more_rows(page: Mapping[str, Any], shown: int) -> bool:
    """Whether rows past this page of `shown` rows match too."""
    return int(page.get("offset", 0)) + shown < int(page.get("total", shown))


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[Text]], *, plain: bool, width: int
) -> RenderableType:
    """Plain: a row per line, every column in full. Terminal: a row per line while the
    free-text columns still get MIN_FREE_TEXT characters each (truncated to fit); on a
    narrower terminal, a block of `COLUMN  value` lines per row (as psql's expanded display)
    with long values wrapped. No column is ever left out and ids are never cut."""
    every = range(len(headers))
    if plain:
        return _build(headers, rows, every, {}, plain=True)
    free = [index for index in every if headers[index] in FREE_TEXT_COLUMNS]
    fixed = [index for index in every if index not in free]
    base = _natural_width(_build(headers, rows, fixed, {}, plain=False))
    # Each extra column costs a separator and a space of padding.
    share = (width - base - 2 * len(free)) // max(len(free), 1)
    if base <= width and (not free or share >= MIN_FREE_TEXT):
        return _build(headers, rows, every, dict.fromkeys(free, share), plain=False)
    return _records(headers, rows)


def _fitted(table: Table, *, plain: bool, width: int) -> RenderableType:
    """`table` where it fits whole (plain output always: a row per line, however long); on a
    narrower terminal, its rows as `_records` blocks, so no count, name or time is cut."""
    if plain or not table.rows or _natural_width(table) <= width:
        return table
    headers = [str(column.header) for column in table.columns]
    rows = list(zip(*(column.cells for column in table.columns), strict=True))
    return _records(headers, rows)


def _records(headers: Sequence[str], rows: Sequence[Sequence[RenderableType]]) -> RenderableType:
    blocks: list[RenderableType] = []
    for row in rows:
        if blocks:
            blocks.append(Text())
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        # A value too long for a line (an id on a very narrow terminal) folds, never cut.
        grid.add_column(overflow="fold")
        for header, cell in zip(headers, row, strict=True):
            grid.add_row(header, cell)
        blocks.append(grid)
    return Group(*blocks)


def _build(
    headers: Sequence[str],
    rows: Sequence[Sequence[Text]],
    keep: Iterable[int],
    max_widths: Mapping[int, int],
    *,
    plain: bool,
) -> Table:
    table = _empty_table(plain)
    columns = list(keep)
    for index in columns:
        whole = headers[index] in ID_COLUMNS and bool(rows)
        table.add_column(
            headers[index],
            no_wrap=not plain,
            overflow="ellipsis",
            max_width=max_widths.get(index),
            # An id is copied into the next command, so other columns give way first.
            min_width=max(row[index].cell_len for row in rows) if whole else None,
        )
    for row in rows:
        table.add_row(*(row[index] for index in columns))
    return table


def _empty_table(plain: bool) -> Table:
    if plain:
        return Table(box=None, pad_edge=False, padding=(0, 2), header_style="")
    return Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        header_style="bold",
    )


def _natural_width(table: Table) -> int:
    """The table's width with nothing truncated (measured against a very wide console)."""
    console = Console(width=MEASURE_WIDTH, file=io.StringIO())
    return Measurement.get(console, console.options, table).maximum


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    # A word too long for the line (an id, a time on a narrow terminal) folds, never cut.
    grid.add_column(overflow="fold")
    return grid


def _one_line(value: Any) -> str:
    return " ".join(str(value).split()) if value else MISSING


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _between(start: str | None, end: str | None) -> str | None:
    began, ended = _parse_time(start), _parse_time(end)
    if began is None or ended is None:
        return None
    return duration(max(0.0, (ended - began).total_seconds()))
