"""The dashboard's pages and actions, served at /ui: parse, call the application's use
cases (the same ones the REST API calls), render a template.

Pages answer HTML, their errors too. Actions are POSTed forms that carry the CSRF token;
each answers with a redirect to the page it came from, whose notice says what moved.

Longer than most modules: every page and action of the dashboard, each a short handler,
sharing the parsing of filters, forms and ids, so the dashboard's surface reads in one
place as routes.py does for the API.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlencode
from uuid import UUID

from dishka import FromDishka
from litestar import Request, Response, Router, get, post
from litestar.datastructures import Cookie
from litestar.exceptions import HTTPException
from litestar.params import Parameter
from litestar.response import Redirect, Template

from taskforge.application.dashboard import (
    GROUP_LIMIT,
    GetOverview,
    ListDeadLetterGroupMembers,
    ListDeadLetterGroups,
    MinuteOfWork,
    Overview,
    PurgeDeadLetterGroup,
    ReplayDeadLetterGroup,
)
from taskforge.application.jobs import (
    CancelJob,
    DeadLetterJob,
    GetJob,
    ListJobs,
    ReplayDeadLetter,
    RetryJobNow,
)
from taskforge.application.ports import Clock, ListFilter
from taskforge.application.queues import PauseQueue, ResumeQueue
from taskforge.application.schedules import ListSchedules, PauseSchedule, ResumeSchedule
from taskforge.domain.dashboard import COUNT_COLUMNS
from taskforge.domain.errors import DomainError, JobNotFound, ValidationError
from taskforge.domain.job import Job
from taskforge.domain.schedule import validate_schedule_name
from taskforge.domain.states import (
    OPERATOR_RETRY_SOURCES,
    JobState,
    can_transition,
)
from taskforge.domain.validation import Page, validate_queue_name
from taskforge.entrypoints.config import Settings
from taskforge.entrypoints.http.errors import DOMAIN_ERRORS
from taskforge.entrypoints.http.injection import inject
from taskforge.entrypoints.http.middleware import caller_is_authorized
from taskforge.entrypoints.http.schemas import REASON_MAX
from taskforge.entrypoints.http.static import static_files
from taskforge.entrypoints.http.throttle import TokenThrottle, client_address
from taskforge.entrypoints.http.ui.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SESSION_COOKIE,
    SESSION_SECONDS,
    UI_PATH,
    Sessions,
    csrf_matches,
    csrf_token_of,
    expired_cookie,
    new_csrf_token,
    notice_is_signed,
    notice_signature,
    ui_cookie,
)

log = logging.getLogger("taskforge.http.ui")

PathText = Annotated[str, Parameter()]
STATIC_PATH = f"{UI_PATH}/static"
LOGIN_PATH = f"{UI_PATH}/login"
PAGE_SIZE = 50
GROUP_PAGE_SIZE = 100
REFRESH_MILLISECONDS = 3000
SHOWN_JSON_CHARACTERS = 100_000
"""The most of a payload or result a job page shows: indented, a deeply nested payload grows
a thousandfold (2 KB of brackets take 1.6 MB of spaces), so the text is cut, not built whole."""
COLUMN_TITLES = {
    "ready": "Ready",
    "delayed": "Delayed",
    "running": "Running",
    "failed": "Failed (waiting to retry)",
    "dlq": "DLQ",
    "succeeded": "Succeeded",
    "cancelled": "Cancelled",
}


def counted(count: int, noun: str) -> str:
    """ "1 job", "1,200 jobs" (`{{ total|counted("job") }}` in the templates)."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


@dataclass(frozen=True, slots=True)
class UiSettings:
    sessions: Sessions
    read_only: bool
    throttle: TokenThrottle


def ui_settings(request: Request[Any, Any, Any]) -> UiSettings:
    settings: UiSettings = request.app.state.taskforge_ui
    return settings


def _signed_in(request: Request[Any, Any, Any]) -> bool:
    sessions = ui_settings(request).sessions
    return sessions.is_valid(request.cookies.get(SESSION_COOKIE)) or (
        sessions.required and caller_is_authorized(request.scope)
    )


def render(
    request: Request[Any, Any, Any],
    name: str,
    status_code: int = 200,
    **context: Any,
) -> Template:
    """A page with what every page needs: the navigation, the CSRF token (its cookie is set
    on the first page a browser sees) and whether actions are shown."""
    settings = ui_settings(request)
    csrf = csrf_token_of(request.cookies)
    cookies: list[Cookie] = []
    if csrf is None:
        csrf = new_csrf_token()
        cookies.append(ui_cookie(CSRF_COOKIE, csrf, secure=request.url.scheme == "https"))
    return Template(
        name,
        context={
            "nav": "",
            "read_only": settings.read_only,
            "csrf_field": CSRF_FIELD,
            "csrf": csrf,
            "logout": settings.sessions.required and _signed_in(request),
            "notice": _notice(request),
            **context,
        },
        status_code=status_code,
        cookies=cookies,
        media_type="text/html",
    )


def _notice(request: Request[Any, Any, Any]) -> str | None:
    """The notice of an action this browser took (see _back), or none."""
    notice: str | None = request.query_params.get("notice")
    if notice and notice_is_signed(request.cookies, notice, request.query_params.get("signed")):
        return notice
    return None


class UiRefused(HTTPException):
    """An action the dashboard does not take: read-only mode, a missing CSRF token."""


async def _action_form(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The submitted form, after the checks every action passes: not read-only, a valid
    CSRF token (before_request already checked the session)."""
    if ui_settings(request).read_only:
        raise UiRefused(status_code=403, detail="the dashboard is read-only (UI_READ_ONLY)")
    form = await request.form()
    if not csrf_matches(request.cookies, form.get(CSRF_FIELD)):
        raise UiRefused(
            status_code=403, detail="the form's CSRF token is missing or stale; reload the page"
        )
    _refuse_nul(form.multi_items())
    return {key: form.getall(key) if key == "ids" else form.get(key) for key in form}


def _refuse_nul(fields: Iterable[tuple[str, object]]) -> None:
    """A ValidationError for the first field holding a NUL character, as the API refuses
    one: Postgres cannot store it, so no reason may carry one and no filter with one matches
    anything."""
    for name, value in fields:
        if "\x00" in name or (isinstance(value, str) and "\x00" in value):
            field = name if "\x00" not in name else "field name"
            raise ValidationError(field, "must not contain NUL characters (\\u0000)")


def _back(
    request: Request[Any, Any, Any], path: str, notice: str, query: dict[str, str] | None = None
) -> Redirect:
    """Back to `path` (with `query`), whose page shows `notice` (signed for this browser:
    see _notice)."""
    signed = notice_signature(request.cookies, notice) or ""
    fields = {**(query or {}), "notice": notice, "signed": signed}
    return Redirect(f"{path}?{urlencode(fields)}", status_code=303)


async def _pause_or_resume(
    action: str,
    target: str,
    label: str,
    pause: Callable[[str], Awaitable[object]],
    resume: Callable[[str], Awaitable[object]],
) -> str:
    """Pause or resume `target` (a queue, a schedule) as `action` says, and the notice that
    tells so; any other action is 404."""
    if action == "pause":
        await pause(target)
        return f"Paused {label}."
    if action == "resume":
        await resume(target)
        return f"Resumed {label}."
    raise HTTPException(status_code=404)


def _reason(form: dict[str, Any]) -> str | None:
    """The form's reason, cut to what the API keeps (REASON_MAX characters)."""
    reason = str(form.get("reason") or "").strip()
    return reason[:REASON_MAX] or None


async def before_page(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """Before every page: the session (require_session), then the query string, which may
    hold no NUL character (see _refuse_nul)."""
    if (refused := require_session(request)) is not None:
        return refused
    _refuse_nul(request.query_params.multi_items())
    return None


def require_session(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """Every page but the login page and the static files: with API_TOKEN set, a caller
    without a session goes to the login form (a POST is refused)."""
    path = request.url.path
    if path.startswith(STATIC_PATH) or path == LOGIN_PATH or _signed_in(request):
        return None
    if request.method == "GET":
        # The query too: a link to a filtered list shows that list once signed in. The path
        # is decoded: quoted again, a `?` or a space in it stays part of it.
        asked = quote(path)
        asked = f"{asked}?{request.url.query}" if request.url.query else asked
        return Redirect(f"{LOGIN_PATH}?{urlencode({'next': asked})}", status_code=303)
    return error_page(request, 401, "Sign in first: this dashboard needs the API token.")


def error_page(request: Request[Any, Any, Any], status: int, message: str) -> Response[Any]:
    return render(request, "error.html", status_code=status, status=status, message=message)


def ui_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Every error under /ui as an HTML page."""
    if isinstance(exc, DomainError):
        status = next(
            (mapped[0] for kind, mapped in DOMAIN_ERRORS.items() if isinstance(exc, kind)), 500
        )
        message = f"{exc.field}: {exc.message}" if isinstance(exc, ValidationError) else str(exc)
        return error_page(request, status, message)
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        messages = {404: "No such page.", 405: "This page does not take that method."}
        detail = exc.detail if isinstance(exc, UiRefused) else None
        return error_page(request, exc.status_code, detail or messages.get(exc.status_code, ""))
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_page(request, 500, "Internal error (logged with the request id).")


# --- sign in -------------------------------------------------------------------------------


@get(LOGIN_PATH, include_in_schema=False)
async def login_page(request: Request[Any, Any, Any]) -> Response[Any]:
    if not ui_settings(request).sessions.required:
        return Redirect(UI_PATH, status_code=303)
    return render(request, "login.html", next=_local(request.query_params.get("next")))


@post(LOGIN_PATH, include_in_schema=False, status_code=303)
@inject
async def login(request: Request[Any, Any, Any], clock: FromDishka[Clock]) -> Response[Any]:
    """Trade the token for a session. Wrong tokens count towards the address's throttle
    (see TokenThrottle), which then refuses every try, the right token's too, until its
    window ends."""
    settings = ui_settings(request)
    sessions = settings.sessions
    form = await request.form()
    target = _local(form.get("next"))
    if not sessions.required:
        return Redirect(target, status_code=303)
    address, now = client_address(request.scope), clock.now()
    if (retry_after := settings.throttle.retry_after(address, now)) is not None:
        error = f"Too many wrong tokens from this address: retry in {retry_after} s."
        refused = render(request, "login.html", 429, next=target, error=error)
        refused.headers["Retry-After"] = str(retry_after)
        return refused
    if not csrf_matches(request.cookies, form.get(CSRF_FIELD)):
        return render(request, "login.html", 403, next=target, error="Reload the page and retry.")
    if not sessions.token_matches(str(form.get("token") or "")):
        settings.throttle.failed(address, now)
        return render(request, "login.html", 401, next=target, error="Wrong token.")
    redirect = Redirect(target, status_code=303)
    redirect.set_cookie(
        ui_cookie(
            SESSION_COOKIE,
            sessions.new_session(),
            secure=request.url.scheme == "https",
            max_age=SESSION_SECONDS,
        )
    )
    return redirect


@post(f"{UI_PATH}/logout", include_in_schema=False, status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
    form = await request.form()
    if not csrf_matches(request.cookies, form.get(CSRF_FIELD)):
        raise UiRefused(status_code=403, detail="the form's CSRF token is missing or stale")
    redirect = Redirect(LOGIN_PATH, status_code=303)
    redirect.set_cookie(expired_cookie(SESSION_COOKIE))
    return redirect


_PRINTABLE = re.compile(r"[!-~]+")
"""Printable ASCII without spaces: a browser drops tabs and line breaks from a URL, so a
target with one may not go where it reads."""


def _local(target: object) -> str:
    """`target` when it is a normalised path under the dashboard, its query kept; else the
    overview. A browser resolves a Location's dot segments (`..`, `%2e%2e`) before following
    it: `/ui/../..//x` leads to `//x`, no dashboard page, and a path that another redirect
    would send as `//x`, another host. So no dot segment, no empty one (`//`), no encoded
    slash and no backslash: what passes is the very path the browser asks for."""
    text = target if isinstance(target, str) else ""
    path = text.partition("?")[0].partition("#")[0]
    lowered = path.lower()
    if (
        _PRINTABLE.fullmatch(text)
        and "\\" not in text
        and (path == UI_PATH or path.startswith(UI_PATH + "/"))
        and "//" not in path
        and "%2f" not in lowered
        and "%5c" not in lowered
        and not any(unquote(segment) in (".", "..") for segment in path.split("/"))
    ):
        return text
    return UI_PATH


# --- overview ------------------------------------------------------------------------------


@get(UI_PATH, include_in_schema=False)
@inject
async def overview_page(
    request: Request[Any, Any, Any], get_overview: FromDishka[GetOverview]
) -> Template:
    overview = await get_overview()
    return render(
        request,
        "overview.html",
        nav="overview",
        refresh=REFRESH_MILLISECONDS,
        **_overview_context(overview),
    )


@get(f"{UI_PATH}/overview/live", include_in_schema=False)
@inject
async def overview_live(
    request: Request[Any, Any, Any], get_overview: FromDishka[GetOverview]
) -> Template:
    """The overview's live part alone, fetched by the page every few seconds."""
    return render(request, "_live.html", **_overview_context(await get_overview()))


@dataclass(frozen=True, slots=True)
class Bar:
    x: int
    ok_height: float
    failed_height: float
    minute: str
    succeeded: float
    failed: float


CHART_HEIGHT = 60
BAR_WIDTH = 6


def _chart(minutes: list[MinuteOfWork]) -> dict[str, Any]:
    peak = max((minute.succeeded + minute.failed for minute in minutes), default=0.0) or 1.0
    bars = [
        Bar(
            x=index * BAR_WIDTH,
            ok_height=round(minute.succeeded / peak * CHART_HEIGHT, 2),
            failed_height=round(minute.failed / peak * CHART_HEIGHT, 2),
            minute=minute.minute.strftime("%H:%M"),
            succeeded=round(minute.succeeded, 1),
            failed=round(minute.failed, 1),
        )
        for index, minute in enumerate(minutes)
    ]
    rate_points = " ".join(
        f"{index * BAR_WIDTH + BAR_WIDTH / 2:g},{(1 - minute.failure_rate) * CHART_HEIGHT:.2f}"
        for index, minute in enumerate(minutes)
    )
    finished = sum(minute.succeeded + minute.failed for minute in minutes)
    failed = sum(minute.failed for minute in minutes)
    return {
        "bars": bars,
        "rate_points": rate_points,
        "chart_width": len(minutes) * BAR_WIDTH,
        "chart_height": CHART_HEIGHT,
        "bar_width": BAR_WIDTH - 1,
        "hour_succeeded": round(finished - failed),
        "hour_failed": round(failed),
        "hour_failure_rate": f"{failed / finished:.1%}" if finished else "n/a",
    }


def _overview_context(overview: Overview) -> dict[str, Any]:
    return {
        "queues": overview.queues,
        "columns": [(column, COLUMN_TITLES[column]) for column in COUNT_COLUMNS],
        "paused": overview.paused,
        "workers": overview.workers,
        "at": overview.at,
        "charts_since": overview.charts_since,
        "any_estimate": any(queue.estimated for queue in overview.queues),
        **_chart(overview.minutes),
    }


# --- jobs ----------------------------------------------------------------------------------


@get(f"{UI_PATH}/jobs", include_in_schema=False)
@inject
async def jobs_page(
    request: Request[Any, Any, Any],
    list_jobs: FromDishka[ListJobs],
    get_job: FromDishka[GetJob],
) -> Response[Any]:
    query = request.query_params
    lookup = (query.get("lookup") or "").strip()
    job_id = _uuid_or_none(lookup)
    if job_id is not None:
        try:
            await get_job(job_id)
        except JobNotFound:
            pass  # no job's id: perhaps an idempotency key made a UUID, as many clients do
        else:
            return Redirect(f"{UI_PATH}/jobs/{job_id}", status_code=303)
    queue = (query.get("queue") or "").strip() or None
    if queue is not None:
        validate_queue_name(queue, "queue")
    state = _state_or_none(query.get("state"))
    job_type = (query.get("job_type") or "").strip() or None
    page_number = _page_number(query.get("page"))
    where = ListFilter(queue=queue, state=state, job_type=job_type, idempotency_key=lookup or None)
    jobs, total = await list_jobs(where, Page(PAGE_SIZE, (page_number - 1) * PAGE_SIZE))
    filters = {
        "queue": queue or "",
        "state": state.value if state else "",
        "job_type": job_type or "",
        "lookup": lookup,
    }
    pages = max(1, -(-total // PAGE_SIZE))
    return render(
        request,
        "jobs.html",
        nav="jobs",
        jobs=jobs,
        total=total,
        filters=filters,
        states=[*JobState],
        page=page_number,
        pages=pages,
        listed={
            key: value for key, value in {**filters, "page": str(page_number)}.items() if value
        },
        # Past the last page, back leads to the last one.
        previous_query=urlencode({**filters, "page": min(page_number - 1, pages)}),
        next_query=urlencode({**filters, "page": page_number + 1}),
    )


LIST_FIELDS = ("queue", "state", "job_type", "lookup", "page")
"""The jobs list's query: what a bulk action's form carries back to it."""


@post(f"{UI_PATH}/jobs/bulk", include_in_schema=False, status_code=303)
@inject
async def bulk_action(
    request: Request[Any, Any, Any],
    cancel: FromDishka[CancelJob],
    retry: FromDishka[RetryJobNow],
) -> Response[Any]:
    form = await _action_form(request)
    ids = [job_id for raw in form.get("ids") or [] if (job_id := _uuid_or_none(raw))]
    action = form.get("action")
    if action not in ("cancel", "retry"):
        raise ValidationError("action", "must be cancel or retry")
    moved = 0
    for job_id in ids[:PAGE_SIZE]:
        try:
            if action == "cancel":
                await cancel(job_id, _reason(form))
            else:
                await retry(job_id)
        except DomainError:
            continue  # moved or finished meanwhile: the notice counts what moved
        moved += 1
    verb = "Cancelled" if action == "cancel" else "Retried"
    notice = f"{verb} {moved} of {counted(len(ids), 'selected job')}."
    # Back to the list as it was: its filters and page come with the form.
    listed = {key: str(form.get(key) or "") for key in LIST_FIELDS if form.get(key)}
    return _back(request, f"{UI_PATH}/jobs", notice, listed)


@get(f"{UI_PATH}/jobs/{{job_id:str}}", include_in_schema=False)
@inject
async def job_page(
    request: Request[Any, Any, Any], job_id: PathText, get_job: FromDishka[GetJob]
) -> Template:
    job = await get_job(_job_id(job_id))
    return render(
        request,
        "job.html",
        nav="jobs",
        job=job,
        payload=_pretty(job.payload),
        result=None if job.result is None else _pretty(job.result),
        shown_characters=SHOWN_JSON_CHARACTERS,
        trace_id=_trace_id(job.traceparent),
        actions=job_actions(job),
    )


def _pretty(value: Any) -> tuple[str, bool]:
    """`value` as indented JSON, at most SHOWN_JSON_CHARACTERS of it, and whether it was cut.
    The encoder yields the text piece by piece, so what is not shown is never built (and the
    nesting it reaches before the cut stays far inside Python's recursion limit)."""
    encoder = json.JSONEncoder(indent=2, sort_keys=True, ensure_ascii=False)
    pieces: list[str] = []
    size = 0
    for piece in encoder.iterencode(value):
        pieces.append(piece)
        size += len(piece)
        if size > SHOWN_JSON_CHARACTERS:
            return "".join(pieces)[:SHOWN_JSON_CHARACTERS], True
    return "".join(pieces), False


REASON_KEPT = "why (kept with the job)"
REASON_LOGGED = "why (written to the log only)"
"""What a move's reason field says of where the reason goes: a cancel and a move to the DLQ
keep it as the job's `reason`; a retry and a replay have none, so it is only logged."""


def job_actions(job: Job) -> list[tuple[str, str, str]]:
    """(path segment, button name, what its reason field says) of each move the job's state
    allows."""
    actions = []
    if can_transition(job.state, JobState.CANCELLED):
        actions.append(("cancel", "Cancel", REASON_KEPT))
    if job.state in OPERATOR_RETRY_SOURCES:
        actions.append(("retry", "Retry", REASON_LOGGED))
    if can_transition(job.state, JobState.DLQ):
        actions.append(("dlq", "Move to DLQ", REASON_KEPT))
    if job.state is JobState.DLQ:
        actions.append(("replay", "Replay", REASON_LOGGED))
    return actions


@post(f"{UI_PATH}/jobs/{{job_id:str}}/{{action:str}}", include_in_schema=False, status_code=303)
@inject
async def job_action(
    request: Request[Any, Any, Any],
    job_id: PathText,
    action: PathText,
    cancel: FromDishka[CancelJob],
    retry: FromDishka[RetryJobNow],
    dead_letter: FromDishka[DeadLetterJob],
    replay: FromDishka[ReplayDeadLetter],
) -> Response[Any]:
    form = await _action_form(request)
    target = _job_id(job_id)
    reason = _reason(form)
    match action:
        case "cancel":
            await cancel(target, reason)
            notice = "Cancelled."
        case "retry":
            await retry(target)
            notice = "Queued for a retry now."
        case "dlq":
            await dead_letter(target, reason)
            notice = "Moved to the DLQ."
        case "replay":
            await replay(target)
            notice = "Replayed."
        case _:
            raise HTTPException(status_code=404)
    if reason:
        log.info("dashboard %s of job %s: %s", action, target, reason)
    return _back(request, f"{UI_PATH}/jobs/{target}", notice)


# --- dead letters --------------------------------------------------------------------------


@get(f"{UI_PATH}/dlq", include_in_schema=False)
@inject
async def dead_letters_page(
    request: Request[Any, Any, Any], list_groups: FromDishka[ListDeadLetterGroups]
) -> Template:
    groups = await list_groups()
    return render(request, "dlq.html", nav="dlq", groups=groups, shown=GROUP_LIMIT)


@get(f"{UI_PATH}/dlq/group", include_in_schema=False)
@inject
async def dead_letter_group_page(
    request: Request[Any, Any, Any], list_members: FromDishka[ListDeadLetterGroupMembers]
) -> Template:
    job_type, error_shape = _group(request.query_params)
    members = await list_members(job_type, error_shape, GROUP_PAGE_SIZE)
    return render(
        request,
        "dlq_group.html",
        nav="dlq",
        job_type=job_type,
        error_shape=error_shape,
        members=members,
        shown=GROUP_PAGE_SIZE,
    )


@post(f"{UI_PATH}/dlq/group/{{action:str}}", include_in_schema=False)
@inject
async def dead_letter_group_action(
    request: Request[Any, Any, Any],
    action: PathText,
    list_groups: FromDishka[ListDeadLetterGroups],
    replay_group: FromDishka[ReplayDeadLetterGroup],
    purge_group: FromDishka[PurgeDeadLetterGroup],
) -> Response[Any]:
    """Without `confirm`, a page that asks; with it, the move, and a notice of how many."""
    form = await _action_form(request)
    job_type, error_shape = _group(form)
    if action not in ("replay", "purge"):
        raise HTTPException(status_code=404)
    if form.get("confirm") != "yes":
        group = next(
            (
                group
                for group in await list_groups()
                if (group.job_type, group.error_shape) == (job_type, error_shape)
            ),
            None,
        )
        return render(
            request,
            "confirm.html",
            nav="dlq",
            action=action,
            job_type=job_type,
            error_shape=error_shape,
            count=group.count if group else 0,
        )
    if action == "replay":
        moved = await replay_group(job_type, error_shape)
        notice = f"Replayed {counted(moved, 'job')}."
    else:
        moved = await purge_group(job_type, error_shape)
        notice = f"Purged {counted(moved, 'job')}."
    log.info(
        "dashboard %s of dead-letter group %r %r: %d jobs", action, job_type, error_shape, moved
    )
    return _back(request, f"{UI_PATH}/dlq", notice)


def _group(source: Any) -> tuple[str, str]:
    job_type = source.get("job_type")
    error_shape = source.get("error_shape")
    if not job_type or error_shape is None:
        raise ValidationError("job_type", "a group needs job_type and error_shape")
    # A shape is one line, but may hold a CR (an error with CRLF line ends): a browser posts
    # each CR of a form's field as CRLF, and since no shape holds LF, CRLF is a CR posted.
    return str(job_type), str(error_shape).replace("\r\n", "\r")


# --- queues --------------------------------------------------------------------------------


@get(f"{UI_PATH}/queues", include_in_schema=False)
@inject
async def queues_page(
    request: Request[Any, Any, Any],
    get_overview: FromDishka[GetOverview],
    settings: FromDishka[Settings],
) -> Template:
    overview = await get_overview()
    names = sorted({*(queue.queue for queue in overview.queues), *overview.paused})
    names = sorted({*names, settings.queue_name, *settings.queue_rate_limits})
    return render(
        request,
        "queues.html",
        nav="queues",
        names=names,
        paused=overview.paused,
        rate_limits={name: settings.rate_limit_of(name) for name in names},
        own_rates=settings.queue_rate_limits,
    )


# The queue's and the schedule's name travel in the form, not in the path: `.` and `..` are
# names too, and a browser resolves them away as path segments, escaped or not.


@post(f"{UI_PATH}/queues/{{action:str}}", include_in_schema=False, status_code=303)
@inject
async def queue_action(
    request: Request[Any, Any, Any],
    action: PathText,
    pause: FromDishka[PauseQueue],
    resume: FromDishka[ResumeQueue],
) -> Response[Any]:
    form = await _action_form(request)
    queue = validate_queue_name(form.get("queue"), "queue")
    notice = await _pause_or_resume(action, queue, queue, pause, resume)
    return _back(request, f"{UI_PATH}/queues", notice)


# --- schedules -----------------------------------------------------------------------------


@get(f"{UI_PATH}/schedules", include_in_schema=False)
@inject
async def schedules_page(
    request: Request[Any, Any, Any], list_schedules: FromDishka[ListSchedules]
) -> Template:
    return render(request, "schedules.html", nav="schedules", schedules=await list_schedules())


@post(f"{UI_PATH}/schedules/{{action:str}}", include_in_schema=False, status_code=303)
@inject
async def schedule_action(
    request: Request[Any, Any, Any],
    action: PathText,
    pause: FromDishka[PauseSchedule],
    resume: FromDishka[ResumeSchedule],
) -> Response[Any]:
    """Pause or Resume, as POST /schedules/{name}/pause and /resume (an unknown schedule
    answers 404)."""
    form = await _action_form(request)
    name = validate_schedule_name(form.get("name"))
    notice = await _pause_or_resume(action, name, f"schedule {name}", pause, resume)
    log.info("dashboard %s of schedule %r", action, name)
    return _back(request, f"{UI_PATH}/schedules", notice)


# --- parsing -------------------------------------------------------------------------------


def _uuid_or_none(raw: object) -> UUID | None:
    try:
        return UUID(str(raw))
    except ValueError:
        return None


def _job_id(raw: str) -> UUID:
    job_id = _uuid_or_none(raw)
    if job_id is None:
        raise ValidationError("id", "not a job id (a UUID)")
    return job_id


def _state_or_none(raw: str | None) -> JobState | None:
    if not raw:
        return None
    try:
        return JobState(raw.upper())
    except ValueError:
        raise ValidationError("state", f"unknown state; allowed: {', '.join(JobState)}") from None


def _page_number(raw: str | None) -> int:
    if raw is None or raw == "":
        return 1
    # ASCII digits only: "²" is a digit to str.isdigit, not to int().
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 1_000_000:
        raise ValidationError("page", "must be a whole number from 1")
    return int(raw)


def _trace_id(traceparent: str | None) -> str | None:
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 else None


def ui_router(static_directory: Path) -> Router:
    return Router(
        path="/",
        route_handlers=[
            login_page,
            login,
            logout,
            overview_page,
            overview_live,
            jobs_page,
            bulk_action,
            job_page,
            job_action,
            dead_letters_page,
            dead_letter_group_page,
            dead_letter_group_action,
            queues_page,
            queue_action,
            schedules_page,
            schedule_action,
            static_files(STATIC_PATH, static_directory, "ui-static"),
        ],
        before_request=before_page,
        exception_handlers={Exception: ui_error},
        include_in_schema=False,
    )
