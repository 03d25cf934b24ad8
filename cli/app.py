"""`taskforge-cli`: the operator's client for the REST API.

Every command is one or a few API calls. Output is for people (rich tables and panels,
plain aligned text when stdout is not a terminal) unless `--json` asks for the API's JSON,
printed unchanged. Failures print one line on stderr and end with a documented exit code;
`run` is the whole contract and never raises.
Longer than most modules: every command with its help text, each a few lines of API calls.
No `from __future__ import annotations` here: cyclopts reads the commands' annotations on
every run, and as strings each would be compiled and evaluated then (about 3 ms of a run).
"""

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Protocol
from uuid import UUID

from cyclopts import App, Group, Parameter, Token, validators
from cyclopts.exceptions import CycloptsError
from rich.console import Console, RenderableType
from rich.text import Text

from taskforge.cli.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVER_ERROR,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    CliError,
    UsageError,
    exit_code_of,
)
from taskforge.cli.render import (
    dead_letter_detail,
    dead_letters_table,
    health_table,
    job_detail,
    jobs_table,
    more_rows,
    page_summary,
    printable,
    queues_table,
    schedules_table,
    state_text,
    stats_table,
    timestamp,
    watch_line,
    watch_view,
    workers_table,
)
from taskforge.client import (
    ClientError,
    ConnectionFailed,
    JobNotFound,
    Response,
    SyncClient,
    Unavailable,
)
from taskforge.client.core import NOT_A_HEADER_VALUE, Request, check_base_url, sendable_token
from taskforge.client.sync_client import RawResponses
from taskforge.domain.errors import ValidationError
from taskforge.domain.states import TERMINAL_STATES, JobState
from taskforge.domain.validation import validate_queue_name, whole_number
from taskforge.domain.version import taskforge_version

DEFAULT_API_URL = "http://localhost:8080"
DLQ_PAGE = 200
"""The API's largest page: `dlq-replay --all` lists the dead letters in as few calls as it can."""

HELP = """\
Talk to a TaskForge API: enqueue jobs, follow them, operate queues, schedules
and the dead-letter queue.

Global options work before or after the command. --json prints the API's JSON
unchanged for scripts, one document per line when there are several.

Exit codes:
  0    success
  1    unexpected error
  2    usage error (bad flags, an invalid --payload); nothing was sent
  3    not found (404)
  4    conflict: the job's state does not allow it (409)
  5    other API error (4xx: validation, unauthorized, ...)
  6    server error (5xx, not ready), no connection (refused, timed out), or an
       answer that is not the API's (not JSON, JSON of another shape, or a 400,
       401, 404, 409 or 413 without the API's error body)
  130  interrupted (Ctrl-C)
  141  standard output closed by its reader (| head -1); nothing on stderr
"""

PLAIN_WIDTH = 100_000
STATES = tuple(state.value for state in JobState)

GLOBAL = Group("Global options", sort_key=100)


def _http_url(type_: Any, value: str) -> None:
    """`--api-url` refused as the client would refuse it, before anything is sent."""
    check_base_url(value)


def _finite(type_: Any, value: Any) -> None:
    """nan and inf parse as floats, but no API field and no wait takes them. First before a
    range check: nan fails every comparison, so that check would call it out of range."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("Must be a finite number.")


Positive = (_finite, validators.Number(gt=0))


def _whole_number(type_: Any, tokens: Sequence[Token]) -> int:
    """A whole-number option as typed: cyclopts would round "1.5" to 2 and send that."""
    return whole_number(tokens[0].value)


@Parameter(name="*", group=GLOBAL)
@dataclass(frozen=True, kw_only=True)
class GlobalOptions:
    api_url: Annotated[
        str,
        Parameter(env_var="TASKFORGE_API_URL", validator=_http_url, help="The API's base URL."),
    ] = DEFAULT_API_URL
    token: Annotated[
        str | None,
        Parameter(
            env_var="TASKFORGE_API_TOKEN",
            help="Bearer token, sent as `Authorization: Bearer <token>`.",
        ),
    ] = None
    json_output: Annotated[
        bool,
        Parameter(name="--json", negative="", help="Print the API's JSON unchanged, for scripts."),
    ] = False
    timeout: Annotated[
        float,
        Parameter(validator=Positive, help="Seconds to wait for each answer."),
    ] = 10.0


class ShownResponses(RawResponses):
    """The API's answers as `taskforge-cli` shows them: `text` as it came (`--json` prints
    it; JSON writes control characters escaped), `data` through `printable`."""

    def __init__(self, client: SyncClient) -> None:
        super().__init__(client)
        send = self._send

        def shown(request: Request, timeout: float | None = None) -> Response:
            return _shown(request, send(request, timeout))

        self._send = shown


_ANSWERS: ContextVar[tuple[str, ...]] = ContextVar("answers", default=())
"""The accepted answers of this run, each once, as `GET /stats answered 200`: the commands
read the API's JSON as it came, so one of another shape fails while it is shown, and `run`
names the answers it may have been."""


def _shown(request: Request, response: Response) -> Response:
    answer = f"{request.method} {request.path} answered {response.status}"
    if answer not in (answers := _ANSWERS.get()):
        _ANSWERS.set((*answers, answer))
    return dataclasses.replace(response, data=printable(response.data))


def _sent(response: Response) -> Any:
    """The job or dead letter `response` answers, as the API sent it: its `data` went
    through `printable`, and JSON of that would be another payload's or result's."""
    return json.loads(response.text)


def _shape_error(exc: BaseException) -> bool:
    """Whether `exc` is this package's code meeting JSON it cannot show: raised in `cli`'s
    own modules (not in the terminal library, not writing the output), and not a text that
    the output's encoding cannot hold."""
    if isinstance(exc, UnicodeError) or not _ANSWERS.get():
        return False
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    if frame is None:
        return False
    code = frame.tb_frame.f_code
    return os.path.dirname(code.co_filename) == _CLI_FOLDER and code.co_name != "run"


_CLI_FOLDER = os.path.dirname(__file__)


class ItemsTable(Protocol):
    """A renderer of a list's items (cli.render's `*_table`)."""

    def __call__(
        self, items: Sequence[Mapping[str, Any]], *, plain: bool, width: int
    ) -> RenderableType: ...


class Output(Console):
    """Standard output. A reader that goes away (`| head -1`) ends the run as any other
    write to it then does (`run`: exit 141, nothing on stderr), not with rich's own
    SystemExit(1), which would read as an unexpected error."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


@dataclass(frozen=True, slots=True)
class Session:
    """What a command works with: the API client (its answers undecoded, as `--json` prints
    them) and where its output goes."""

    api: RawResponses
    json_output: bool
    console: Console
    errors: Console

    @property
    def plain(self) -> bool:
        """No terminal on stdout: no colours, no borders, no live display."""
        return not self.console.is_terminal

    def show(self, renderable: RenderableType) -> None:
        """Print for people; plain output loses the padding rich adds after the last column."""
        if not self.plain:
            self.console.print(renderable)
            return
        with self.console.capture() as captured:
            self.console.print(renderable)
        lines = captured.get().splitlines()
        self.console.file.write("".join(line.rstrip() + "\n" for line in lines))

    def print_json(self, response: Response) -> None:
        self.console.file.write(response.text.rstrip("\n") + "\n")

    def answer(self, response: Response, view: Callable[[Any], RenderableType]) -> None:
        """The answer as the API sent it (`--json`), or its data as `view` shows it."""
        if self.json_output:
            self.print_json(response)
        else:
            self.show(view(response.data))

    def answer_items(self, response: Response, table: ItemsTable) -> None:
        """A list's answer as the API sent it (`--json`), or its items in `table`."""
        self.answer(
            response,
            lambda data: table(data.get("items", []), plain=self.plain, width=self.console.width),
        )


SessionParam = Annotated[Session, Parameter(parse=False)]
MaxAttempts = Annotated[
    int | None, Parameter(converter=_whole_number, help="Attempts before DLQ (3).")
]
InitialDelay = Annotated[
    float | None, Parameter(validator=_finite, help="Seconds before the first retry (1).")
]
Backoff = Annotated[
    float | None, Parameter(validator=_finite, help="Delay multiplier per retry (2.0).")
]
MaxDelay = Annotated[
    float | None, Parameter(validator=_finite, help="Longest delay between retries (300).")
]
Jitter = Annotated[
    bool | None, Parameter(help="Randomise each delay to between half and all of it.")
]
VisibilityTimeout = Annotated[
    float | None,
    Parameter(validator=_finite, help="Seconds a worker's lease lasts between heartbeats (30)."),
]
# Not `--timeout`: that is the global option, the seconds to wait for each answer.
AttemptTimeout = Annotated[
    float | None,
    Parameter(
        name="--job-timeout",
        validator=_finite,
        help="Seconds an attempt may run before it fails (API's JOB_TIMEOUT; 0: none).",
    ),
]
Priority = Annotated[
    int | None,
    Parameter(converter=_whole_number, help="0 (claimed first) to 9 (claimed last); default 5."),
]


@Parameter(name="*")
@dataclass(frozen=True, kw_only=True)
class JobPolicyOptions:
    """The retry policy, timeouts and priority a job is enqueued with, by `enqueue` and by a
    schedule's ticks; None: left out, the API's default applies."""

    max_attempts: MaxAttempts = None
    initial_delay: InitialDelay = None
    backoff: Backoff = None
    max_delay: MaxDelay = None
    jitter: Jitter = None
    visibility_timeout: VisibilityTimeout = None
    timeout: AttemptTimeout = None
    priority: Priority = None


JobPayload = Annotated[
    str, Parameter(help="A JSON object, or @file.json, or @- to read standard input.")
]
JobQueue = Annotated[str | None, Parameter(help="Queue name (the API's QUEUE_NAME).")]
JobId = Annotated[
    UUID, Parameter(name="--id", help="The job's id (a UUID), given as is or after --id.")
]
Reason = Annotated[str | None, Parameter(help="Why; stored on the job and shown by `status`.")]
Limit = Annotated[
    int | None,
    Parameter(
        converter=_whole_number, help="Page size (the API's default is 50, its maximum 200)."
    ),
]
Offset = Annotated[
    int | None, Parameter(converter=_whole_number, help="Items to skip, for the next page.")
]
NonNegative = (_finite, validators.Number(gte=0))

app = App(
    name="taskforge-cli",
    help=HELP,
    version=taskforge_version,
    help_format="plaintext",
    console=Output(),  # --help and --version, as every command's output
)


@app.meta.default
def _launcher(
    *tokens: Annotated[str, Parameter(show=False, allow_leading_hyphen=True)],
    options: GlobalOptions = GlobalOptions(),
) -> Any:
    command, bound, ignored = app.parse_args(tokens)
    if options.token and not sendable_token(options.token):
        # Not as a flag value is refused (that names the value): the token stays unshown.
        raise UsageError(f"--token (or TASKFORGE_API_TOKEN) {NOT_A_HEADER_VALUE}")
    errors = Console(stderr=True, highlight=False)
    console = Output(highlight=False)
    if not console.is_terminal:
        # Plain output is for grep and awk: a row is one line, however long.
        console.width = PLAIN_WIDTH
    with SyncClient(
        options.api_url,
        token=options.token,
        request_timeout=options.timeout,
        user_agent=f"taskforge-cli/{taskforge_version()}",
    ) as client:
        session = Session(ShownResponses(client), options.json_output, console, errors)
        injected = {name: session for name, kind in ignored.items() if kind is Session}
        return command(*bound.args, **bound.kwargs, **injected)


@app.command
def enqueue(
    *,
    job_type: Annotated[str, Parameter(help="The handler that runs the job, e.g. email.")],
    idempotency_key: Annotated[
        str | None,
        Parameter(help="Reusing a key returns the existing job instead of a new one."),
    ] = None,
    unique_key: Annotated[
        str | None,
        Parameter(help="While a job of the queue with this key is unfinished, return it."),
    ] = None,
    payload: JobPayload = "{}",
    queue: JobQueue = None,
    delay: Annotated[
        float | None, Parameter(validator=NonNegative, help="Run no sooner than in N seconds.")
    ] = None,
    run_at: Annotated[
        datetime | None, Parameter(help="Run no sooner than this ISO-8601 time (UTC if bare).")
    ] = None,
    policy: JobPolicyOptions = JobPolicyOptions(),
    session: SessionParam,
) -> None:
    r"""Enqueue a job; a reused --idempotency-key returns the existing job.

    For example:
        taskforge-cli enqueue --job-type email --idempotency-key abc123 \
            --payload '{"to":"a@b.com"}'
    """
    if delay is not None and run_at is not None:
        raise UsageError("give --delay or --run-at, not both")
    options: dict[str, Any] = {
        "idempotency_key": idempotency_key,
        "unique_key": unique_key,
        "queue": queue,
        "delay": delay,
        "run_at": run_at,
        **asdict(policy),
    }
    response = session.api.enqueue(
        job_type,
        parse_payload(payload),
        **{name: value for name, value in options.items() if value is not None},
    )
    if session.json_output:
        session.print_json(response)
        return
    job = response.data
    where = Text(f" ({job['jobType']} on {job['queue']}, ")
    where.append_text(state_text(job["state"])).append(")")
    if response.status == 201:
        line = Text(f"enqueued job {job['id']}")
    elif idempotency_key is not None and job.get("idempotencyKey") == idempotency_key:
        line = Text(f"job {job['id']} already exists for idempotency key {idempotency_key}")
    else:
        line = Text(f"job {job['id']} already holds unique key {unique_key}")
    session.console.print(line.append_text(where), soft_wrap=True)


def parse_payload(raw: str) -> dict[str, Any]:
    """`--payload`: JSON text, `@path` for a file, `@-` for stdin; it must be an object."""
    source = ""
    text = raw
    if raw.startswith("@"):
        location = raw[1:]
        source = " in standard input" if location == "-" else f" in {location}"
        if location == "-" and sys.stdin is None:  # started with it closed (`<&-`)
            raise UsageError("--payload: cannot read standard input: it is closed")
        try:
            text = sys.stdin.read() if location == "-" else Path(location).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--payload: cannot read {location}: {_os_reason(exc)}") from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
        # A lone surrogate (\\ud800) parses, but is no text the request could carry.
        json.dumps(value, ensure_ascii=False).encode()
    except RecursionError:
        raise UsageError(f"--payload: invalid JSON{source}: nested too deeply") from None
    except (ValueError, UnicodeEncodeError) as exc:  # JSONDecodeError is a ValueError
        raise UsageError(f"--payload: invalid JSON{source}: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"--payload must be a JSON object, got {type(value).__name__}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of range")
    return number


def _os_reason(exc: OSError | UnicodeDecodeError) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)


@app.command
def status(
    job_id: JobId,
    *,
    watch: Annotated[
        bool,
        Parameter(negative="", help="Follow the job until it is SUCCEEDED, DLQ or CANCELLED."),
    ] = False,
    interval: Annotated[
        float | None,
        Parameter(validator=Positive, help="With --watch: seconds between polls. [default: 0.5]"),
    ] = None,
    session: SessionParam,
) -> None:
    """Show one job: state, attempts, policy, timings, last error.

    For example:
        taskforge-cli status 7b5b4f8e-2a7d-4e6f-9d5b-3a6b7f9a0c12 --watch
    """
    if watch:
        _watch(session, job_id, 0.5 if interval is None else interval)
        return
    if interval is not None:
        raise UsageError("--interval only applies with --watch")
    response = session.api.get(job_id)
    session.answer(
        response,
        lambda data: job_detail(data, sent=_sent(response), plain=session.plain),
    )


def _watch(session: Session, job_id: UUID, interval: float) -> None:
    """Poll until a terminal state; each observed change is shown once (a line in plain
    output, a JSON document per line with --json, a live panel on a terminal)."""

    def fetch() -> Response:
        return session.api.get(job_id)

    def finished(response: Response) -> bool:
        return response.data.get("state") in TERMINAL_STATES

    if session.json_output or session.plain:
        previous: tuple[Any, ...] | None = None
        response = fetch()
        while True:
            observed = _observable(response.data)
            if observed != previous:
                if session.json_output:
                    session.print_json(response)
                else:
                    session.console.print(watch_line(response.data), soft_wrap=True)
                session.console.file.flush()
                previous = observed
            if finished(response):
                return
            time.sleep(interval)
            response = fetch()
    from rich.live import Live  # only a watch on a terminal draws a live panel

    def view(answer: Response) -> RenderableType:
        return watch_view(answer.data, sent=_sent(answer), finished=finished(answer))

    response = fetch()
    with Live(view(response), console=session.console, auto_refresh=False) as live:
        while not finished(response):
            time.sleep(interval)
            response = fetch()
            live.update(view(response), refresh=True)


def _observable(job: dict[str, Any]) -> tuple[Any, ...]:
    return (job.get("state"), job.get("attemptCount"), job.get("lastError"))


@app.command
def cancel(job_id: JobId, *, reason: Reason = None, session: SessionParam) -> None:
    r"""Cancel a PENDING, RUNNING or FAILED job (a running handler is interrupted).

    For example:
        taskforge-cli cancel --id 7b5b4f8e-2a7d-4e6f-9d5b-3a6b7f9a0c12 \
            --reason "user requested"
    """
    _report(session, session.api.cancel(job_id, reason), "cancelled job {id}")


@app.command
def retry(job_id: JobId, *, session: SessionParam) -> None:
    """Run a FAILED, DLQ or CANCELLED job again now.

    For example:
        taskforge-cli retry --id 7b5b4f8e-2a7d-4e6f-9d5b-3a6b7f9a0c12
    """
    _report(session, session.api.retry(job_id), "retried job {id}")


@app.command(name="move-to-dlq")
def dead_letter(job_id: JobId, *, reason: Reason = None, session: SessionParam) -> None:
    r"""Move a job to the dead-letter queue by hand.

    For example:
        taskforge-cli move-to-dlq --id 7b5b4f8e-2a7d-4e6f-9d5b-3a6b7f9a0c12 \
            --reason "poison message"
    """
    _report(session, session.api.dlq(job_id, reason), "moved job {id} to the DLQ")


def _report(session: Session, response: Response, done: str) -> None:
    """`done` names what happened, with `{id}` for the job's id; the new state follows."""
    if session.json_output:
        session.print_json(response)
        return
    job = response.data
    line = Text(done.format(id=job["id"]) + ": now ").append_text(state_text(job["state"]))
    session.console.print(line, soft_wrap=True)


@app.command(name="list")
def list_jobs(
    *,
    queue: Annotated[str | None, Parameter(help="Only this queue.")] = None,
    status: Annotated[
        str | None,
        Parameter(help=f"Only this state, in any case: {', '.join(STATES)}."),
    ] = None,
    limit: Limit = None,
    offset: Offset = None,
    session: SessionParam,
) -> None:
    """List jobs, newest first.

    For example:
        taskforge-cli list --queue jobs:ready --status failed --limit 20
    """
    state = status.upper() if status is not None else None
    if state is not None and state not in STATES:
        raise UsageError(f"--status: unknown state {status!r}; allowed: {', '.join(STATES)}")
    response = session.api.list(queue=queue, status=state, limit=limit, offset=offset)
    _show_page(session, response, "jobs", jobs_table)


@app.command
def dlq_list(*, limit: Limit = None, offset: Offset = None, session: SessionParam) -> None:
    """List dead letters, newest first.

    For example:
        taskforge-cli dlq-list --limit 20
    """
    response = session.api.dead_letters(limit=limit, offset=offset)
    _show_page(session, response, "dead letters", dead_letters_table)


def _show_page(
    session: Session,
    response: Response,
    noun: str,
    table: Callable[..., Any],
) -> None:
    if session.json_output:
        session.print_json(response)
        return
    items = response.data.get("items", [])
    summary = page_summary(response.data, len(items), noun)
    if session.plain:
        session.show(table(items, plain=True, width=session.console.width))
        # Standard output keeps the rows alone; that more exist is said on standard error.
        if more_rows(response.data, len(items)):
            session.errors.print(Text(summary), soft_wrap=True)
        return
    if items:
        session.show(table(items, plain=False, width=session.console.width))
    session.console.print(Text(summary, style="dim"))


@app.command
def dlq_show(job_id: JobId, *, session: SessionParam) -> None:
    """Show one dead letter: payload, reason, last error and its traceback, attempts.

    For example:
        taskforge-cli dlq-show --id 7b5b4f8e-2a7d-4e6f-9d5b-3a6b7f9a0c12
    """
    response = session.api.dead_letter(job_id)
    if session.json_output:
        session.print_json(response)
        return
    panel = dead_letter_detail(
        response.data,
        payload=_sent(response).get("payload", {}),
        plain=session.plain,
        job=_job(session, job_id),
    )
    session.show(panel)


def _job(session: Session, job_id: UUID) -> Mapping[str, Any] | None:
    """The dead letter's job, for what its resource lacks (when the job was created, the
    traceback of its last failed attempt), or None: it could not be read (gone, or the API
    failed this second call: the dead letter is shown all the same)."""
    try:
        data: Mapping[str, Any] = session.api.get(job_id).data
    except ClientError:
        return None
    return data


@app.command
def dlq_replay(
    job_id: Annotated[
        UUID | None, Parameter(name="--id", help="The job to replay, given as is or after --id.")
    ] = None,
    *,
    all_: Annotated[
        bool, Parameter(name="--all", negative="", help="Replay every dead letter.")
    ] = False,
    queue: Annotated[str | None, Parameter(help="With --all: only this queue's.")] = None,
    dry_run: Annotated[
        bool,
        Parameter(negative="", help="With --all: list what would be replayed, change nothing."),
    ] = False,
    yes: Annotated[
        bool,
        Parameter(
            name=["--yes", "-y"],
            negative="",
            help="With --all: do not ask first (needed when standard input is not a terminal).",
        ),
    ] = False,
    session: SessionParam,
) -> None:
    """Replay dead letters: back to PENDING with attempts reset.

    --all asks for confirmation when standard input is a terminal; anywhere else it
    refuses to run without --yes. --dry-run lists what --all would replay.

    For example:
        taskforge-cli dlq-replay --id 7b5b4f8e-2a7d-4e6f-9d5b-3a6b7f9a0c12
        taskforge-cli dlq-replay --all --queue emails --dry-run
    """
    if (job_id is None) == (not all_):
        raise UsageError("give --id or --all (exactly one)")
    if queue is not None and not all_:
        raise UsageError("--queue only applies with --all")
    if dry_run and not all_:
        raise UsageError("--dry-run only applies with --all")
    if queue is not None:
        # The dead letters are filtered here, not by the API: a name no queue can have
        # would match none of them and read as an empty dead-letter queue.
        try:
            validate_queue_name(queue)
        except ValidationError as exc:
            raise UsageError(f"--queue {queue!r}: {exc.message}") from None
    if job_id is not None:
        _report(session, session.api.replay(job_id), "replayed job {id}")
        return
    if not (dry_run or yes or _stdin_is_terminal()):
        raise UsageError(
            "dlq-replay --all asks for confirmation and standard input is not a terminal:"
            " add --yes to replay, or --dry-run to list what it would replay"
        )
    entries = _dead_letters(session.api, queue)
    scope = f" on queue {queue}" if queue else ""
    if dry_run:
        _show_dry_run(session, entries, scope)
        return
    if entries and not yes:
        count = f"{len(entries)} dead letter{'' if len(entries) == 1 else 's'}"
        if not _confirm(session, f"replay {count}{scope}? [y/N] "):
            session.errors.print(f"nothing replayed{scope}", soft_wrap=True)
            return
    _replay_all(session, [UUID(entry["jobId"]) for entry in entries], scope)


def _stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _confirm(session: Session, question: str) -> bool:
    """Ask on stderr (stdout stays for results); only y or yes confirms, EOF declines."""
    session.errors.print(Text(question), end="", soft_wrap=True)
    session.errors.file.flush()
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):
        session.errors.print()
    return answer.strip().lower() in ("y", "yes")


def _show_dry_run(session: Session, entries: list[dict[str, Any]], scope: str) -> None:
    if session.json_output:
        for entry in entries:
            session.console.file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        return
    if not entries:
        session.console.print(Text(f"no dead letters to replay{scope}"), soft_wrap=True)
        return
    table = dead_letters_table(printable(entries), plain=session.plain, width=session.console.width)
    session.show(table)
    summary = f"would replay {len(entries)} dead letters{scope}; dry run, nothing changed"
    session.console.print(Text(summary), soft_wrap=True)


def _replay_all(session: Session, ids: list[UUID], scope: str) -> None:
    """Replays the dead letters listed when it starts (entries that arrive meanwhile wait
    for the next run). One already replayed by someone else is counted, not an error."""
    from rich.progress import (  # only `dlq-replay --all` draws a progress bar
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    replayed, gone = 0, 0
    failures: list[tuple[UUID, ClientError]] = []
    progress = Progress(
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=session.errors,
        disable=not session.errors.is_terminal or not ids,
        transient=True,
    )

    def summary() -> str:
        if not ids:
            return f"no dead letters to replay{scope}"
        text = f"replayed {replayed} of {len(ids)} dead letters{scope}"
        if gone:
            text += f"; {gone} already gone"
        return text + (f"; {len(failures)} failed" if failures else "")

    try:
        with progress:
            task = progress.add_task("replay", total=len(ids))
            for job_id in ids:
                try:
                    response = session.api.replay(job_id)
                except JobNotFound:
                    gone += 1
                except ConnectionFailed:
                    raise
                except ClientError as exc:
                    failures.append((job_id, exc))
                else:
                    replayed += 1
                    if session.json_output:
                        session.print_json(response)
                progress.advance(task)
    except (ConnectionFailed, KeyboardInterrupt):  # say how far it got, then end as usual
        session.errors.print(Text(summary()), soft_wrap=True)
        raise
    if not session.json_output:
        session.console.print(Text(summary()), soft_wrap=True)
    for job_id, failure in failures:
        _print_error(session.errors, failure.code, f"{failure.message} (job {job_id})")
    if failures:
        first = failures[0][1]
        raise type(first)(
            first.code,
            f"{len(failures)} of {len(ids)} dead letters not replayed",
            status=first.status,
        )


def _dead_letters(api: RawResponses, queue: str | None) -> list[dict[str, Any]]:
    """Every dead letter (of `queue`, if given), each once even if pages shift meanwhile, as
    the API sent it: `--dry-run --json` prints them, so their control characters are still
    theirs (`printable` before showing them to people)."""
    found: dict[str, dict[str, Any]] = {}
    offset = 0
    while True:
        page = json.loads(api.dead_letters(limit=DLQ_PAGE, offset=offset).text)
        items = page.get("items", [])
        for entry in items:
            if queue is None or entry.get("queue") == queue:
                found.setdefault(str(entry["jobId"]), entry)
        offset += len(items)
        if not items or offset >= int(page.get("total", 0)):
            return list(found.values())


@app.command
def stats(*, session: SessionParam) -> None:
    """Per-queue depth and job counts by state, totals, and the DLQ size.

    For example:
        taskforge-cli stats
    """
    response = session.api.stats()
    if session.json_output:
        session.print_json(response)
        return
    session.show(stats_table(response.data, plain=session.plain, width=session.console.width))
    session.console.print(f"dead letters: {response.data.get('dlq', 0)}")


queues = App(
    name="queues",
    help="""List queues, pause and resume them.

For example:
    taskforge-cli queues list
    taskforge-cli queues pause emails""",
    help_format="plaintext",
)
app.command(queues)


@queues.command(name="list")
def queues_list(*, session: SessionParam) -> None:
    """Every queue with its job counts by state and whether it is paused.

    For example:
        taskforge-cli queues list
    """
    session.answer_items(session.api.queues(), queues_table)


QueueArg = Annotated[str, Parameter(help="The queue, e.g. jobs:ready.")]


@queues.command(name="pause")
def queues_pause(queue: QueueArg, *, session: SessionParam) -> None:
    """Pause a queue: no worker starts its jobs until it is resumed. Running jobs finish
    and enqueueing still works. Idempotent.

    For example:
        taskforge-cli queues pause emails
    """
    _report_queue(session, session.api.pause_queue(queue))


@queues.command(name="resume")
def queues_resume(queue: QueueArg, *, session: SessionParam) -> None:
    """Resume a paused queue: its due jobs start at once. Idempotent.

    For example:
        taskforge-cli queues resume emails
    """
    _report_queue(session, session.api.resume_queue(queue))


@app.command
def workers(*, session: SessionParam) -> None:
    """The live workers: the queues each serves, the job types it has handlers for, and how
    many of its slots run a job. A worker that has not reported for 30 s is left out.

    For example:
        taskforge-cli workers
    """
    session.answer_items(session.api.workers(), workers_table)


def _report_queue(session: Session, response: Response) -> None:
    if session.json_output:
        session.print_json(response)
        return
    answer = response.data
    state = f"paused since {timestamp(answer['pausedAt'])}" if answer["paused"] else "running"
    session.console.print(Text(f"queue {answer['queue']}: {state}"), soft_wrap=True)


schedules = App(
    name="schedules",
    help="""List, add, remove, pause and resume schedules of periodic jobs.

For example:
    taskforge-cli schedules list
    taskforge-cli schedules add nightly-report --cron '30 2 * * *' \\
        --timezone Europe/Berlin --job-type report
    taskforge-cli schedules pause nightly-report""",
    help_format="plaintext",
)
app.command(schedules)

ScheduleArg = Annotated[str, Parameter(help="The schedule's name.")]


@schedules.command(name="list")
def schedules_list(*, session: SessionParam) -> None:
    """Every schedule with its cron expression, next and previous fire times, its jobs'
    priority, where it was declared (code or api) and whether it is paused.

    For example:
        taskforge-cli schedules list
    """
    session.answer_items(session.api.schedules(), schedules_table)


@schedules.command(name="add")
def schedules_add(
    name: ScheduleArg,
    *,
    cron: Annotated[
        str, Parameter(help="When: minute hour day-of-month month day-of-week, or @daily...")
    ],
    job_type: Annotated[str, Parameter(help="The handler each tick's job runs.")],
    payload: JobPayload = "{}",
    queue: JobQueue = None,
    timezone: Annotated[
        str | None, Parameter(help="IANA time zone the cron expression is read in (UTC).")
    ] = None,
    catch_up: Annotated[
        bool,
        Parameter(
            negative="",
            help="After every scheduler was down, fire each missed tick (not only the last).",
        ),
    ] = False,
    policy: JobPolicyOptions = JobPolicyOptions(),
    session: SessionParam,
) -> None:
    r"""Add a schedule, or replace the one with this name (it keeps its pause).

    For example:
        taskforge-cli schedules add nightly-report --cron '30 2 * * *' \
            --timezone Europe/Berlin --job-type report --payload '{"kind":"daily"}'
    """
    options: dict[str, Any] = {
        "payload": parse_payload(payload),
        "queue": queue,
        "timezone": timezone,
        "catch_up": catch_up or None,
        **asdict(policy),
    }
    response = session.api.add_schedule(
        name, cron, job_type, **{key: value for key, value in options.items() if value is not None}
    )
    verb = "added" if response.status == 201 else "replaced"
    _report_schedule(session, response, verb)


@schedules.command(name="rm")
def schedules_rm(name: ScheduleArg, *, session: SessionParam) -> None:
    """Remove a schedule; the jobs it enqueued stay. One declared in code comes back when a
    worker or scheduler next starts with it (pause it instead to stop it for good).

    For example:
        taskforge-cli schedules rm nightly-report
    """
    session.api.delete_schedule(name)
    if session.json_output:
        session.console.file.write(json.dumps({"name": name, "deleted": True}) + "\n")
        return
    session.console.print(Text(f"schedule {name} removed"), soft_wrap=True)


@schedules.command(name="pause")
def schedules_pause(name: ScheduleArg, *, session: SessionParam) -> None:
    """Pause a schedule: its ticks enqueue nothing until it is resumed. Idempotent.

    For example:
        taskforge-cli schedules pause nightly-report
    """
    _report_schedule(session, session.api.pause_schedule(name), "paused")


@schedules.command(name="resume")
def schedules_resume(name: ScheduleArg, *, session: SessionParam) -> None:
    """Resume a schedule from its next tick; the ticks of the pause are skipped. Idempotent.

    For example:
        taskforge-cli schedules resume nightly-report
    """
    _report_schedule(session, session.api.resume_schedule(name), "resumed")


def _report_schedule(session: Session, response: Response, verb: str) -> None:
    if session.json_output:
        session.print_json(response)
        return
    answer = response.data
    line = f"schedule {answer['name']} {verb} ({answer['cron']} {answer['timezone']}): "
    if answer["paused"]:
        line += "paused"
    else:
        line += f"next fire {timestamp(answer['nextFireAt'])}"
    line += f", previous fire {timestamp(answer['previousFireAt'])}"
    session.console.print(Text(line), soft_wrap=True)


@app.command
def health(*, session: SessionParam) -> None:
    """Liveness (/healthz) and readiness (/readyz, which checks the store and the queue).

    For example:
        taskforge-cli health
    """
    live = session.api.health()
    ready = session.api.readiness()
    if session.json_output:
        session.console.file.write(f'{{"healthz":{live.text},"readyz":{ready.text}}}\n')
    else:
        session.show(health_table(live.data, ready.data))
    if ready.status != 200:
        failing = [
            f"{name}: {result}"
            for name, result in ready.data.get("checks", {}).items()
            if result != "ok"
        ]
        message = "; ".join(failing) or "service not ready"
        raise Unavailable("not_ready", message, status=ready.status)


def _print_error(errors: Console, code: str, message: str) -> None:
    line = Text("error:", style="bold red").append(f" {code}: {' '.join(message.split())}")
    errors.print(line, soft_wrap=True)


def _usage_message(exc: CycloptsError) -> str:
    message = " ".join(str(exc).split())
    return f"{message} (see --help)"


def run(tokens: Sequence[str] | None = None) -> int:
    """Run one command line and return its exit code. Errors are printed, never raised."""
    errors = Console(stderr=True, highlight=False)
    _ANSWERS.set(())
    try:
        app.meta(
            tokens if tokens is not None else sys.argv[1:],
            print_error=False,
            exit_on_error=False,
            result_action="return_value",
        )
        sys.stdout.flush()
    except CycloptsError as exc:
        _print_error(errors, "usage", _usage_message(exc))
        return EXIT_USAGE
    except CliError as exc:
        _print_error(errors, exc.code, exc.message)
        return exc.exit_code
    except ClientError as exc:
        _print_error(errors, exc.code, exc.message)
        return exit_code_of(exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`); point stdout at /dev/null so the interpreter's
        # final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or EXIT_OK
        return EXIT_UNEXPECTED
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        if not _shape_error(exc):
            _print_error(errors, "unexpected", f"{type(exc).__name__}: {exc}")
            return EXIT_UNEXPECTED
        # JSON of another shape than the API's (another server, a proxy on the address), as
        # the client reports one it decodes.
        problem = f"{type(exc).__name__}: {exc}"
        answers = _ANSWERS.get()
        where = (
            f"{answers[0]} with JSON"
            if len(answers) == 1
            else f"one of {', '.join(answers[-3:])}: JSON"
        )
        message = f"{where} that is not the API's answer to it ({problem})"
        _print_error(errors, "invalid_response", message)
        return EXIT_SERVER_ERROR
    except Exception as exc:  # noqa: BLE001 -- the contract is a line on stderr, not a traceback
        _print_error(errors, "unexpected", f"{type(exc).__name__}: {exc}")
        return EXIT_UNEXPECTED
    return EXIT_OK


def main() -> None:
    sys.exit(run())
