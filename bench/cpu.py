"""CPU time of the processes a drain keeps busy, read from /proc, so that the bench shows
where the bottleneck is as workers are added: in the workers, or in Postgres.

A `CpuSampler` reads the CPU seconds of each group of processes (the Postgres server, the
workers; and the whole machine, which shows how much of it other work took) every few tens
of milliseconds while a drain runs; `between(start, end)` is each group's CPU seconds
within that span (interpolated between the samples), so that worker start-up and shutdown
fall outside a drain's figures. Where /proc is missing, or Postgres runs on another
machine, a group reads nothing and is left out of the report.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

SAMPLE_INTERVAL = 0.05

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_busy_seconds() -> float:
    """CPU seconds all of this machine's cores spent on anything but idling and waiting for
    I/O (the `cpu` line of /proc/stat); 0 where /proc is not available."""
    try:
        line = Path("/proc/stat").read_text().splitlines()[0]
    except (OSError, IndexError):
        return 0.0
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    values = [int(value) for value in line.split()[1:9]]
    return (sum(values) - values[3] - values[4]) / _TICKS


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 on (after the command name, which may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def process_cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """User + system CPU seconds of `pid` (all its threads); with `with_children`, also of
    the children it has waited for. 0 for a process that is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # utime, stime, cutime, cstime are fields 14-17 of stat(5); fields[0] is field 3.
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in task.read_text().split()]
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


async def local_postgres_server(pool: asyncpg.Pool) -> int | None:
    """The pid of the Postgres server (postmaster) `pool` is served by, when it runs on this
    machine and /proc shows it; None otherwise. Found from a session's backend, whose
    parent the server is."""
    backend = int(await pool.fetchval("SELECT pg_backend_pid()"))
    fields = _stat_fields(backend)
    if fields is None or not _command(backend).startswith("postgres"):
        return None  # another machine's pid, or a container's
    server = int(fields[1])
    return server if _command(server).startswith("postgres") else None


def postgres_cpu_seconds(server: int) -> float:
    """CPU seconds of the Postgres server and every process it ever started: those it has
    waited for count in its own children's time, the live ones are read one by one."""
    total = process_cpu_seconds(server, with_children=True)
    return total + sum(process_cpu_seconds(child) for child in children(server))


@dataclass
class CpuSampler:
    """Samples the CPU seconds of each named group until stopped."""

    groups: dict[str, Callable[[], float]]
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)

    def sample(self) -> None:
        self.samples.append((time.time(), {name: read() for name, read in self.groups.items()}))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_INTERVAL)
        self.sample()

    def between(self, start: float, end: float) -> dict[str, float]:
        """Each group's CPU seconds from `start` to `end` (wall-clock seconds)."""
        return {name: self._at(name, end) - self._at(name, start) for name in self.groups}

    def _at(self, name: str, moment: float) -> float:
        times = [at for at, _ in self.samples]
        index = bisect.bisect_left(times, moment)
        if index == 0:
            return self.samples[0][1][name]
        if index == len(times):
            return self.samples[-1][1][name]
        (before, early), (after, late) = self.samples[index - 1], self.samples[index]
        share = (moment - before) / (after - before) if after > before else 1.0
        return early[name] + share * (late[name] - early[name])
