"""Ports: what the application needs from the world, as Protocols.

Adapters (memory, postgres, redis, telemetry) implement them; a contract suite runs the
same tests against every implementation. Only domain types cross a port.

Longer than most modules: every port in one place, each a small Protocol named by its role
(most of the length is their contracts, written as docstrings), so a newcomer finds what
the application asks of the world without opening the adapters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import NamedTuple, Protocol
from uuid import UUID

from taskforge.application.metrics import ClusterMetrics, JobMetrics, WorkerLoad
from taskforge.domain.dashboard import DeadLetterGroup, QueueJobCounts
from taskforge.domain.job import DeadLetter, Job, Lease, QueueStats, ReadyHint, ReapedDeadLetter
from taskforge.domain.new_job import NewJob
from taskforge.domain.outcome import Settlement
from taskforge.domain.policy import RandomSource as RandomSource  # the port is the domain's
from taskforge.domain.schedule import Schedule, ScheduleDefinition
from taskforge.domain.states import JobState
from taskforge.domain.validation import Page
from taskforge.domain.workers import WorkerStatus


class Clock(Protocol):
    def now(self) -> datetime:
        """Timezone-aware UTC."""
        ...


class IdSource(Protocol):
    def new_id(self) -> UUID: ...


@dataclass(frozen=True, slots=True)
class ListFilter:
    queue: str | None = None
    state: JobState | None = None
    job_type: str | None = None
    idempotency_key: str | None = None


class Added(NamedTuple):
    """The store's answer for one job given to `add` or `add_many`."""

    job: Job
    """The job stored, or the existing one the new job yielded to."""
    created: bool
    """True when this call created the job; False when an existing job was returned (its
    idempotency key, or its unique key in its queue, was taken)."""
    needs_hint: bool
    """True when the caller is to send the job's hint now: the call created it due at once
    (a run time in the past counts) and stored it as published. False for an existing job
    (never a second hint), and for a delayed one: the scheduler publishes it when it comes
    due."""


class JobStore(Protocol):
    """The source of truth for jobs: storing them and reading them back.

    Every store role (this one, LeaseStore, Sweeps, OperatorMoves) is a view of the same
    jobs. Every transition is atomic and conditional on the state it expects (and, for a
    worker's writes, on the lease token): a write whose condition no longer holds changes
    nothing. Timestamps come from the store's own clock.

    A job's `errors` are heavy (up to 20 tracebacks): `get` and the operator moves return
    them; `add`, `add_many`, `find` and the claims leave them empty."""

    async def add(self, job: NewJob) -> Added:
        """Insert, or return the existing job with the same idempotency key (or unique key
        in its queue). The answer says which, and whether the caller sends a hint now."""
        ...

    async def add_many(self, jobs: Sequence[NewJob]) -> list[Added]:
        """`add` for each, in order, atomically: all are stored or none."""
        ...

    async def get(self, job_id: UUID) -> Job | None: ...

    async def find(self, where: ListFilter, page: Page) -> tuple[list[Job], int]:
        """Newest first (created_at, then id, descending); the int is the total match count."""
        ...

    async def stats(self) -> list[QueueStats]:
        """Per queue, how many jobs are in each state."""
        ...

    async def ping(self) -> None:
        """Raise if the store cannot answer."""
        ...


class LeaseStore(Protocol):
    """A worker's side of the store: claiming jobs and settling the attempts it runs."""

    async def claim(self, job_ids: Sequence[UUID], owner: str) -> list[Job]:
        """PENDING and due -> RUNNING with a fresh lease; attempt_count + 1. Ids that are not
        claimable (already running, not due, unknown) are skipped silently. Each id is
        claimed by at most one concurrent caller."""
        ...

    async def claim_due(self, queues: Sequence[str], limit: int, owner: str) -> list[Job]:
        """Claim up to `limit` due PENDING jobs of `queues` without hints, in dispatch order
        (domain.job.dispatch_order: highest priority, then oldest due first; across the
        queues too). Skips rows other claimers hold."""
        ...

    async def heartbeat(self, leases: Sequence[Lease]) -> set[UUID]:
        """Extend each lease by its job's visibility timeout. Returns the ids whose lease
        is still held; the others were lost (expired and reaped, cancelled, dead-lettered)."""
        ...

    async def settle(self, settlements: Sequence[Settlement]) -> set[UUID]:
        """Apply each settlement whose lease still owns a RUNNING job. Returns the ids that
        were applied; the rest were fenced off. Dead-lettering writes its dead_letters row
        in the same transaction. A failure (FAILED or DLQ) adds its error and traceback to
        the job's `errors`, which keeps the last MAX_ATTEMPT_ERRORS."""
        ...

    async def release(self, leases: Sequence[Lease]) -> set[UUID]:
        """Hand running jobs back (graceful shutdown): RUNNING -> PENDING, due now, and the
        attempt is not counted. Returns the ids released."""
        ...


STALE_LOOKOUT = 100
"""How many of a queue's oldest due jobs of each priority Sweeps.find_unpublished looks at
for one with no fresh hint before it counts anything. Hints are published about when their
jobs come due, so a stale one is among the oldest; one further back is reached once the
jobs ahead of it are claimed or their own hints grow stale."""


class Sweeps(Protocol):
    """The scheduler's side of the store: batched sweeps over due, expired and finished jobs.
    Concurrent schedulers share the work: no job is handled by two sweeps at once."""

    async def promote_due(self, limit: int) -> list[ReadyHint]:
        """FAILED jobs whose next_run_at has passed -> PENDING (retry_count + 1). Each hint
        carries its job's traceparent, as do those of the two sweeps below."""
        ...

    async def reap_expired(self, limit: int) -> tuple[list[ReadyHint], list[ReapedDeadLetter]]:
        """RUNNING jobs whose lease expired -> PENDING (attempts left) or DLQ, each expiry
        added to the job's `errors`. Returns the hints for the requeued ones and the
        dead-lettered ones, each in the order their leases expired."""
        ...

    async def find_unpublished(
        self, covered: Mapping[str, int], limit: int, older_than: float
    ) -> list[ReadyHint]:
        """For each unpaused queue in `covered`, as many of its due PENDING jobs with no hint
        published in the last `older_than` seconds (never published, or a hint lost to a
        crash or a push that failed) as its due PENDING jobs outnumber `covered[queue]`
        (the hints it holds or is about to get); at most `limit` in all, in dispatch order
        (highest priority, then oldest due first), each hint at its job's priority. Marks
        them published now, so concurrent schedulers do not return the same job; a queue
        whose hints cover its due jobs is left as it is, however long they wait, and so is
        one with no stale job among each priority's STALE_LOOKOUT oldest due jobs."""
        ...

    async def find_never_published(self, limit: int) -> list[ReadyHint]:
        """Due PENDING jobs of unpaused queues that no hint was ever published for (a delayed
        job that came due, a job committed in an application's own transaction, every job
        after mark_unpublished), in dispatch order (highest priority, then oldest due
        first). Marks them published, like find_unpublished, which also returns them when
        called first."""
        ...

    async def count_pending(self) -> dict[str, int]:
        """How many PENDING jobs, due or not, each unpaused queue has (queues with none are
        left out); from the counts the store maintains, so it is cheap at any size."""
        ...

    async def mark_unpublished(self, job_ids: Sequence[UUID] | None = None) -> int:
        """Forget every PENDING job's published time, so the next sweeps re-publish all of
        them (after the ready queue lost its contents). With `job_ids`, only those of them
        still PENDING, skipping rows others hold (their hints, which a sweep marked published,
        never reached the ready queue): find_never_published returns them again. Returns how
        many were marked."""
        ...

    async def prune_finished(self, older_than: float, limit: int) -> int:
        """Delete up to `limit` SUCCEEDED or CANCELLED jobs that finished more than
        `older_than` seconds ago (the longest finished first), skipping rows others hold. Their
        idempotency keys are free again afterwards. Returns how many were deleted."""
        ...

    async def fold_job_counts(self) -> int:
        """Compact what the store keeps to answer job counts (stats, list totals) cheaply,
        without changing any count; a store that needs no compacting does nothing. Returns
        how many entries were folded."""
        ...


class JobNotices(Protocol):
    """Notices that jobs were committed outside TaskForge (an application's transactional
    enqueue): a cue to publish their hints now instead of at the next sweep. A notice may be
    lost with its connection; the sweeps publish those jobs anyway."""

    async def listen(self) -> None:
        """Start listening (again: after a loss). The first `wait` after it returns at once,
        for jobs committed while nobody listened. Unavailable when the store is out of reach."""
        ...

    async def wait(self) -> None:
        """Return once notices arrived since the last return (several count as one).
        Unavailable when the listening connection is lost: `listen` again."""
        ...

    async def close(self) -> None: ...


class OperatorMoves(Protocol):
    """An operator's moves on one job. Each returns the job as it is after the move, with its
    `errors`."""

    async def cancel(self, job_id: UUID, reason: str | None) -> Job:
        """PENDING, RUNNING or FAILED -> CANCELLED. Raises JobNotFound / InvalidTransition."""
        ...

    async def dead_letter(self, job_id: UUID, reason: str | None) -> Job:
        """Operator's move to DLQ from PENDING, RUNNING or FAILED, with the dead_letters row."""
        ...

    async def retry_now(self, job_id: UUID) -> Job:
        """Retry now: -> PENDING, due now. From FAILED the counts are kept; from DLQ
        and CANCELLED the execution state is reset as for a replay."""
        ...

    async def replay(self, job_id: UUID) -> Job:
        """DLQ -> PENDING: deletes the dead_letters row and resets retry_count, attempt_count,
        next_run_at. Raises DeadLetterNotFound when the job is not dead-lettered."""
        ...


class QueuePauses(Protocol):
    """Which queues an operator paused; kept with the jobs, so every process sees it and it
    outlives restarts. While a queue is paused, LeaseStore's claims (by hint and without)
    skip its jobs, so a hint popped for one is dropped and the job stays PENDING, and
    Sweeps.find_unpublished leaves them alone. Running jobs finish; enqueueing still works.
    Any valid queue name may be paused, with or without jobs."""

    async def pause(self, queue: str) -> datetime:
        """Pause `queue`; idempotent (a paused queue keeps its paused time, returned)."""
        ...

    async def resume(self, queue: str, limit: int) -> list[Job]:
        """Unpause `queue`; idempotent. When it was paused, returns up to `limit` of its due
        PENDING jobs in dispatch order (highest priority, then oldest due first), marked
        published now: the caller sends their hints
        (the republish sweep finds any others). Otherwise returns []."""
        ...

    async def paused(self) -> dict[str, datetime]:
        """Every paused queue, with when it was paused."""
        ...


class CronCalendar(Protocol):
    """Reads cron expressions (minute hour day-of-month month day-of-week) in named time
    zones. Every datetime given and returned is timezone-aware;
    returned ones are UTC. Daylight-saving changes, for expressions whose minute and hour
    fields are fixed (`30 2 * * *`): a local time that does not exist fires at the first
    instant after the gap; a local time that happens twice fires once (the first time).
    One whose minute or hour field starts with `*` fires on real instants: none in the
    gap, twice in the repeated hour."""

    def check(self, cron: str) -> None:
        """Raise ValidationError naming `cron` unless the expression is valid and fires."""
        ...

    def next_after(self, cron: str, timezone: str, moment: datetime) -> datetime:
        """The first tick strictly after `moment`."""
        ...

    def latest_at_or_before(self, cron: str, timezone: str, moment: datetime) -> datetime | None:
        """The last tick at or before `moment` (None: none in the library's range)."""
        ...


@dataclass(frozen=True, slots=True)
class Firing:
    """What one due schedule does in one pass of the scheduler: store `jobs` (one per tick
    fired) and move its fire times on."""

    jobs: Sequence[NewJob]
    next_fire_at: datetime
    last_fire_at: datetime | None


FiringPlan = Callable[[Schedule, datetime], Firing]
"""Given a due schedule and the store's `now`, what it fires (called inside the store's
transaction: no I/O)."""


class ScheduleStore(Protocol):
    """Schedules of periodic jobs, by name, kept with the jobs. Firing is shared by every
    scheduler: a schedule is handled by one `fire_due` at a time, and its jobs and its new
    fire times are stored together, so a tick fires once however many schedulers run."""

    async def save(
        self, definition: ScheduleDefinition, next_fire_at: datetime
    ) -> tuple[Schedule, bool]:
        """Create the schedule, or replace the definition of the one with its name (True:
        created). A replaced one keeps its paused flag and last fire time, and its next fire
        time unless the cron expression or the time zone changed."""
        ...

    async def get(self, name: str) -> Schedule | None: ...

    async def find(self) -> list[Schedule]:
        """Every schedule, by name."""
        ...

    async def delete(self, name: str) -> bool:
        """False when there was none. Jobs it already made stay."""
        ...

    async def pause(self, name: str) -> Schedule:
        """Stop firing; idempotent. Raises ScheduleNotFound."""
        ...

    async def resume(self, name: str, next_fire_at: datetime) -> Schedule:
        """Fire again from `next_fire_at` (ticks of the pause never fire); resuming a
        schedule that is not paused changes nothing. Raises ScheduleNotFound."""
        ...

    async def fire_due(self, limit: int, plan: FiringPlan) -> tuple[int, int]:
        """Up to `limit` unpaused schedules whose next_fire_at has passed (skipping those
        another caller holds), each with plan(schedule, now): its jobs stored (left
        unpublished, so the never-published sweep sends their hints) and its fire times
        moved on, atomically per call. Returns (schedules handled, jobs created); a job
        whose idempotency key is taken is not created again."""
        ...


class WorkerRegistry(Protocol):
    """The running workers, each as it last reported itself (kept with the jobs, so every
    process sees every worker). The API and the dashboard list them; a worker holding a job
    it has no handler for asks it whether another live worker could run the job."""

    async def report(self, status: WorkerStatus) -> None:
        """Insert or replace the row of `status.worker_id`. Also deletes every row whose
        heartbeat is older than WORKER_STALE_AFTER before `status.heartbeat_at` (stale rows
        are pruned by the workers that are still alive)."""
        ...

    async def remove(self, worker_id: str) -> None:
        """Delete the worker's row (it is stopping); no error when there is none."""
        ...

    async def list_live(self, *, now: datetime) -> list[WorkerStatus]:
        """Workers that reported within WORKER_STALE_AFTER seconds of `now`, ordered by
        worker_id."""
        ...


class DeadLetterStore(Protocol):
    """Read side of the `dead_letters` table; its rows are written by the transitions of the
    other store roles (a settle, a reap or an operator move into DLQ)."""

    async def find(self, page: Page) -> tuple[list[DeadLetter], int]:
        """Newest first (failed_at, then job id, descending)."""
        ...

    async def get(self, job_id: UUID) -> DeadLetter | None: ...

    async def count(self) -> int: ...


class JobCounts(Protocol):
    """Jobs per queue and state for the dashboard's overview, read on every refresh: cheap
    however many jobs are stored, so a count past `exact_up_to` may be an estimate."""

    async def per_queue(self, exact_up_to: int) -> list[QueueJobCounts]:
        """Every queue that has jobs, by name. A count is exact up to `exact_up_to`; above
        it the store may estimate it, and names the column in `estimated`."""
        ...


class DeadLetterGroups(Protocol):
    """Dead letters grouped by job type and error shape (domain.dashboard.error_shape of the
    last error, or of the reason when there is none)."""

    async def groups(self, limit: int) -> list[DeadLetterGroup]:
        """The `limit` groups that failed most recently, newest first."""
        ...

    async def members(self, job_type: str, error_shape: str, limit: int) -> list[DeadLetter]:
        """Up to `limit` dead letters of the group, newest first."""
        ...

    async def purge(self, job_type: str, error_shape: str, limit: int) -> int:
        """Delete up to `limit` of the group's dead-lettered jobs (and their dead letters)
        for good. Returns how many were deleted."""
        ...


class ReadyQueue(Protocol):
    """Dispatch hints per queue and priority, FIFO within each. Losing or duplicating a hint
    is harmless: the scheduler re-publishes lost ones and a duplicate fails to claim. Only
    the HintDispatcher pushes; workers pop."""

    async def push(self, hints: Sequence[ReadyHint]) -> None: ...

    async def push_front(self, hints: Sequence[ReadyHint]) -> None:
        """Put hints back so they are popped next among the hints of their queue and
        priority (a worker that popped more than it may run)."""
        ...

    async def pop(self, queues: Sequence[str], max_count: int, timeout: float) -> list[ReadyHint]:
        """Wait up to `timeout` seconds for one hint, then take up to `max_count` in all
        without waiting: highest priority first (across `queues`), then in the order of
        `queues`, each hint carrying its priority. Returns [] on timeout."""
        ...

    async def depth(self, queues: Sequence[str]) -> dict[str, int]:
        """Hints waiting per queue, every priority summed."""
        ...

    async def check_intact(self) -> bool:
        """False once after the queue lost its contents (a restart or flush) since the last
        call; the scheduler then re-publishes every pending job."""
        ...

    async def forget_intact(self) -> None:
        """The re-publishing a False from check_intact asked for did not finish: the next
        check_intact says False again."""
        ...

    async def ping(self) -> None:
        """Raise if the queue cannot answer, or cannot take a write: a push, or a pop (a
        server out of memory may still serve pops while it refuses every push)."""
        ...


@dataclass(frozen=True, slots=True)
class RateGrant:
    granted: int
    retry_after: float
    """Seconds until the next permit, when fewer were granted than asked for."""


class RateLimiter(Protocol):
    """A per-queue rate shared by every worker that uses the same limiter backend."""

    async def acquire(self, queue: str, rate_per_sec: float, wanted: int) -> RateGrant: ...


class WorkerMetrics(Protocol):
    """What a worker reports, on its hot path: implementations only count in memory
    (JobMetricsRecorder); publishing happens elsewhere, in batches."""

    def job_started(self, queue: str, job_type: str, time_in_queue: float) -> None: ...

    def job_finished(self, queue: str, job_type: str, runtime: float, succeeded: bool) -> None: ...

    def job_snoozed(self, queue: str, job_type: str, runtime: float) -> None: ...

    def job_interrupted(self, queue: str) -> None: ...

    def concurrency_throttled(self, queue: str) -> None: ...

    def rate_throttled(self, queue: str, count: int) -> None: ...

    def lease_lost(self, queue: str) -> None: ...

    def utilization(self, queue: str, busy: int, slots: int) -> None:
        """`busy` of the worker's `slots` run jobs of `queue` from now on."""
        ...


class MetricsStore(Protocol):
    """Job metrics of the whole cluster: every worker adds its counts in batches, and the
    API reads the totals on each scrape. Totals only grow (until the store itself is lost,
    which a scraper sees as a counter reset). Each worker's load is kept only for the TTL of
    its last write, so a worker that stopped drops out of utilisation."""

    async def add(self, batch: JobMetrics, load: WorkerLoad, ttl: float, *, sequence: int) -> None:
        """Keep `load` as its worker's for `ttl` seconds and add `batch` to the totals, in
        one atomic write. A worker numbers its writes from 1 up; a write whose `sequence`
        is not above the last one added for that worker adds nothing. A call that raised
        may still have been applied (only its reply was lost): resend the same batch under
        the same number, and it is counted once."""
        ...

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker's load now (it is shutting down)."""
        ...

    async def read(self) -> ClusterMetrics:
        """The totals and the load of every live worker."""
        ...


AttributeValue = str | int | float | bool


class TraceSpan(Protocol):
    """One span of a trace. Used as a context manager it is the current span for the
    block (log lines written inside carry its trace id; spans started inside are its
    children) and ends when the block does; otherwise the caller ends it."""

    @property
    def traceparent(self) -> str:
        """This span as a W3C traceparent: what a job stores to continue the trace."""
        ...

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def fail(self, error: str) -> None:
        """Mark the span's work as failed, with a description."""
        ...

    def end(self) -> None: ...

    def __enter__(self) -> TraceSpan: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


class JobTracer(Protocol):
    """Spans for what happens to jobs, each in the trace its job's traceparent names.

    Only present when tracing is on: with tracing off the application holds None instead,
    and does no tracing work at all."""

    def start_span(
        self,
        name: str,
        *,
        job_id: UUID,
        queue: str,
        parent: str | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> TraceSpan:
        """A started span carrying `job_id` and `queue` attributes. Its parent is the
        traceparent `parent` when given and valid, else the current span (a new trace when
        there is none)."""
        ...
