"""Steady HTTP load: jobs whose behaviour is drawn from a seeded random source.

Every job is POSTed with an idempotency key. A 5xx or a transport error is retried with the
same key (as a careful client would), so a job committed by a request whose answer was lost
is found again instead of duplicated; a job counts as accepted once a POST for it got a 2xx.
Every status code seen is counted: a 500 anywhere is a failed invariant.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.faults.cluster import QUEUE

JOB_TYPE = "faults.work"
"""Registered by support/faults_ledger.py, which the workers load."""

SUBMIT_DEADLINE = 30.0
"""Seconds a client keeps retrying one job's POST before giving up on it."""

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Mix:
    """Relative weights of the job kinds the load draws from."""

    ok: float = 62
    flaky: float = 16
    """Fails retryably on its first attempt(s), then succeeds within maxAttempts."""
    exhaust: float = 6
    """Always fails retryably; maxAttempts 2: ends in the DLQ, attempts exhausted."""
    terminal: float = 5
    """Raises TerminalError: straight to the DLQ."""
    slow: float = 8
    """Runs longer than its visibility timeout; heartbeats must keep its lease."""
    cancel: float = 3
    """Runs long; the client cancels it shortly after enqueueing it."""


DEFAULT_MIX = Mix()


def plan_job(rng: random.Random, kind: str, visibility_timeout: float = 4.0) -> dict[str, Any]:
    """The POST body (minus key and queue) for one job of `kind`, drawn from `rng`."""
    body: dict[str, Any] = {
        "jobType": JOB_TYPE,
        "initialDelay": 0.2,
        "backoff": 2.0,
        "maxDelay": 1.0,
        "visibilityTimeout": visibility_timeout,
    }
    payload: dict[str, Any] = {"kind": kind, "sleep": round(rng.uniform(0.0, 0.25), 3)}
    match kind:
        case "ok" | "probe":
            body["maxAttempts"] = 5
            if kind == "probe":
                payload["sleep"] = 0
        case "flaky":
            failures = rng.randint(1, 2)
            payload["fail"] = list(range(1, failures + 1))
            body["maxAttempts"] = failures + 3
        case "exhaust":
            payload["fail"] = list(range(1, 11))
            body["maxAttempts"] = 2
        case "terminal":
            payload["terminal"] = 1
            body["maxAttempts"] = 3
        case "slow":
            payload["sleep"] = round(rng.uniform(1.2, 1.8) * visibility_timeout, 3)
            body["maxAttempts"] = 5
        case "cancel":
            payload["sleep"] = 20.0
            body["maxAttempts"] = 5
        case _:
            raise ValueError(f"unknown job kind {kind!r}")
    body["payload"] = payload
    return body


@dataclass
class Submitted:
    key: str
    kind: str
    body: dict[str, Any]
    job_id: str | None = None
    accepted_at: float | None = None
    attempts: int = 0
    cancel_status: int | None = None
    """The answer to the client's cancel request, for `cancel` jobs."""


@dataclass
class Load:
    """Enqueues `total` jobs at `rate` per second; `run` returns when all were submitted
    (accepted, or given up after SUBMIT_DEADLINE)."""

    api_url: str
    seed: str
    """Each job's kind and plan come from a random source seeded with `seed` and its key,
    so a run's jobs are the same whatever the timing."""
    key_prefix: str
    total: int
    rate: float
    mix: Mix = DEFAULT_MIX
    queue: str = QUEUE
    concurrency: int = 16
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    submitted: list[Submitted] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _count: int = 0
    _extra: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def accepted(self) -> dict[str, Submitted]:
        return {s.job_id: s for s in self.submitted if s.job_id is not None}

    def _kinds(self) -> tuple[list[str], list[float]]:
        kinds = ["ok", "flaky", "exhaust", "terminal", "slow", "cancel"]
        return kinds, [getattr(self.mix, kind) for kind in kinds]

    def next_job(self, kind: str | None = None) -> Submitted:
        """The next job of the stream, or (with `kind`) an extra one outside it."""
        if kind is None:
            self._count += 1
            key = f"{self.key_prefix}-{self._count}"
        else:
            self._extra += 1
            key = f"{self.key_prefix}-{kind}-{self._extra}"
        rng = random.Random(f"{self.seed}:{key}")
        kinds, weights = self._kinds()
        chosen = kind or rng.choices(kinds, weights)[0]
        body = plan_job(rng, chosen)
        submitted = Submitted(key=key, kind=chosen, body={**body, "queue": self.queue})
        self.submitted.append(submitted)
        return submitted

    async def run(self) -> None:
        gate = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(base_url=self.api_url, timeout=10) as client:
            began = time.monotonic()
            for index in range(self.total):
                due = began + index / self.rate
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                job = self.next_job()
                await gate.acquire()
                task = asyncio.create_task(self._submit_and_release(client, job, gate))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            while self._tasks:
                await asyncio.gather(*list(self._tasks))

    async def _submit_and_release(
        self, client: httpx.AsyncClient, job: Submitted, gate: asyncio.Semaphore
    ) -> None:
        try:
            await self.submit(client, job)
            if job.kind == "cancel" and job.job_id is not None:
                await asyncio.sleep(0.5)
                await self.cancel(client, job)
        finally:
            gate.release()

    async def submit(self, client: httpx.AsyncClient, job: Submitted) -> None:
        deadline = time.monotonic() + SUBMIT_DEADLINE
        body = {**job.body, "idempotencyKey": job.key}
        pause = 0.1
        while time.monotonic() < deadline:
            job.attempts += 1
            try:
                response = await client.post("/jobs", json=body)
            except httpx.TransportError:
                self.transport_errors += 1
            else:
                self.statuses[response.status_code] += 1
                if response.status_code in (200, 201):
                    job.job_id = str(response.json()["id"])
                    job.accepted_at = time.time()
                    return
                if response.status_code not in RETRYABLE_STATUSES:
                    self.errors.append(f"POST /jobs {response.status_code}: {response.text[:200]}")
                    return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
        self.errors.append(f"gave up on job {job.key} after {job.attempts} POSTs")

    async def cancel(self, client: httpx.AsyncClient, job: Submitted) -> None:
        deadline = time.monotonic() + SUBMIT_DEADLINE
        while time.monotonic() < deadline:
            try:
                response = await client.post(
                    f"/jobs/{job.job_id}/cancel", json={"reason": "fault suite"}
                )
            except httpx.TransportError:
                self.transport_errors += 1
            else:
                self.statuses[response.status_code] += 1
                if response.status_code not in RETRYABLE_STATUSES:
                    job.cancel_status = response.status_code
                    return
            await asyncio.sleep(0.2)

    async def enqueue_one(self, kind: str) -> Submitted:
        """Submit one job of `kind` now (outside the steady rate), e.g. a probe."""
        job = self.next_job(kind)
        async with httpx.AsyncClient(base_url=self.api_url, timeout=10) as client:
            await self.submit(client, job)
        return job
