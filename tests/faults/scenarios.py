"""The scenarios and the two profiles.

Each scenario starts the steady load and injects its faults at fixed fractions of the load's
duration (the storm draws its schedule from the seed), then waits for the load to finish;
`Run.finish` heals, drains and checks. The full profile runs every scenario; the CI profile
runs two short ones.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tests.faults import faults
from tests.faults.badinput import bad_input_flood
from tests.faults.cluster import QUEUE, WorkerSpec
from tests.faults.harness import DEFAULT_WORKERS, FaultRecord, Run, Scenario
from tests.faults.load import Mix

Fault = Callable[..., Awaitable[FaultRecord]]


@dataclass(frozen=True)
class Planned:
    at: float
    """Fraction of the load's duration (0-1) at which the fault starts."""
    name: str
    fault: Fault
    args: tuple[object, ...] = ()


async def _at(run: Run, began: float, delay: float, planned: Planned) -> None:
    if (wait := began + delay - asyncio.get_running_loop().time()) > 0:
        await asyncio.sleep(wait)
    await planned.fault(run, *planned.args)


async def play(run: Run, plan: list[Planned]) -> None:
    """Start the load, run each planned fault at its point of the load, wait for both."""
    duration = run.scenario.jobs / run.scenario.rate
    for planned in plan:
        run.say(f"planned +{planned.at * duration:5.1f}s into the load: {planned.name}")
    load = run.start_load()
    began = asyncio.get_running_loop().time()
    await asyncio.gather(*(_at(run, began, planned.at * duration, planned) for planned in plan))
    await load


# --- the scenarios ---------------------------------------------------------------------


async def crash(run: Run) -> None:
    mid_handler, after_pop = faults.kill_worker_mid_handler, faults.kill_worker_after_pop
    await play(
        run,
        [
            Planned(0.15, "kill -9 w1 mid-handler", mid_handler, ("w1",)),
            Planned(0.35, "kill -9 w2 after pop", after_pop, ("w2",)),
            Planned(0.55, "kill -9 w3 mid-handler", mid_handler, ("w3",)),
            Planned(0.75, "kill -9 w1 after pop", after_pop, ("w1",)),
        ],
    )


async def zombie(run: Run) -> None:
    await play(
        run,
        [
            Planned(0.15, "SIGSTOP w2 past its leases", faults.stop_worker, ("w2",)),
            Planned(0.55, "SIGSTOP w3 past its leases", faults.stop_worker, ("w3",)),
        ],
    )


async def redis_loss(run: Run) -> None:
    await play(
        run,
        [
            Planned(0.1, "Redis SHUTDOWN NOSAVE + restart", faults.redis_restart),
            Planned(0.45, "Redis FLUSHALL", faults.redis_flush),
            Planned(0.65, "Redis CLIENT PAUSE 6s", faults.redis_pause, (6.0,)),
        ],
    )


async def postgres(run: Run) -> None:
    await play(
        run,
        [
            Planned(0.15, "Postgres restart -m immediate", faults.postgres_restart),
            Planned(0.5, "Postgres down 4s", faults.postgres_outage, (4.0,)),
        ],
    )


async def network(run: Run) -> None:
    drop, stall = faults.drop_connections, faults.stall
    await play(
        run,
        [
            Planned(0.05, "+80ms on every Postgres connection", faults.latency, ("pg:", 0.08, 6)),
            Planned(0.25, "+150ms on every Redis connection", faults.latency, ("redis:", 0.15, 6)),
            Planned(0.45, "reset every Postgres connection", drop, ("pg:",)),
            Planned(0.55, "reset every Redis connection", drop, ("redis:",)),
            Planned(0.65, "stall Postgres traffic 3s", stall, ("pg:", 3.0)),
            Planned(0.85, "stall Redis traffic 3s", stall, ("redis:", 3.0)),
        ],
    )


async def hung_redis(run: Run) -> None:
    await play(run, [Planned(0.2, "Redis SIGSTOP 15s", faults.redis_freeze, (15.0,))])


async def hung_postgres(run: Run) -> None:
    plan = [Planned(0.2, "Postgres black-holed 12s", faults.postgres_blackhole, (12.0,))]
    await play(run, plan)


async def hung_short(run: Run) -> None:
    await play(
        run,
        [
            Planned(0.1, "Redis SIGSTOP 6s", faults.redis_freeze, (6.0,)),
            Planned(0.55, "Postgres black-holed 6s", faults.postgres_blackhole, (6.0,)),
        ],
    )


async def slow_handler(run: Run) -> None:
    plan = [Planned(0.05, "handlers outlive their lease", faults.slow_handlers, ("hb", "nohb"))]
    await play(run, plan)


async def bad_input(run: Run) -> None:
    load = run.start_load()
    await bad_input_flood(run, duration=run.scenario.jobs / run.scenario.rate)
    await load


async def services_short(run: Run) -> None:
    await play(
        run,
        [
            Planned(0.2, "Redis FLUSHALL", faults.redis_flush),
            Planned(0.5, "Postgres restart -m immediate", faults.postgres_restart),
        ],
    )


STORM_FAULTS: list[tuple[str, float, bool]] = [
    # (fault, weight, hits one worker)
    ("kill-mid-handler", 3, True),
    ("kill-after-pop", 2, True),
    ("sigstop", 2, True),
    ("redis-restart", 1, False),
    ("redis-flush", 1, False),
    ("redis-pause", 1, False),
    ("postgres-restart", 1, False),
    ("postgres-outage", 1, False),
    ("latency", 1, False),
    ("drop", 1, False),
    ("stall", 1, False),
]


def _storm_fault(
    fault: str, slot: str, rng: random.Random
) -> tuple[str, Fault, tuple[object, ...]]:
    prefix = rng.choice(["pg:", "redis:"])
    match fault:
        case "kill-mid-handler":
            return f"kill -9 {slot} mid-handler", faults.kill_worker_mid_handler, (slot,)
        case "kill-after-pop":
            return f"kill -9 {slot} after pop", faults.kill_worker_after_pop, (slot,)
        case "sigstop":
            return f"SIGSTOP {slot}", faults.stop_worker, (slot,)
        case "redis-restart":
            return "Redis SHUTDOWN NOSAVE", faults.redis_restart, (2.0,)
        case "redis-flush":
            return "Redis FLUSHALL", faults.redis_flush, ()
        case "redis-pause":
            return "Redis CLIENT PAUSE 3s", faults.redis_pause, (3.0,)
        case "postgres-restart":
            return "Postgres restart -m immediate", faults.postgres_restart, ()
        case "postgres-outage":
            return "Postgres down 3s", faults.postgres_outage, (3.0,)
        case "latency":
            return f"+100ms {prefix}*", faults.latency, (prefix, 0.1, 5)
        case "drop":
            return f"reset {prefix}*", faults.drop_connections, (prefix,)
        case "stall":
            return f"stall {prefix}* 2s", faults.stall, (prefix, 2.0)
    raise ValueError(fault)


def storm_plan(run: Run) -> list[Planned]:
    """Faults every 5-9 s of the load, drawn from the seed; a worker is hit again only
    after 20 s, so one fault has healed before the next lands on it."""
    rng = random.Random(f"{run.seed}:storm")
    duration = run.scenario.jobs / run.scenario.rate
    slots = [spec.slot for spec in run.scenario.workers]
    free_at = dict.fromkeys(slots, 0.0)
    names = [name for name, _, _ in STORM_FAULTS]
    weights = [weight for _, weight, _ in STORM_FAULTS]
    per_worker = {name for name, _, worker in STORM_FAULTS if worker}
    plan: list[Planned] = []
    offset = 4.0
    while offset < duration - 8:
        fault = rng.choices(names, weights)[0]
        slot = rng.choice(slots)
        if fault in per_worker:
            if free_at[slot] > offset:
                offset += 1.0
                continue
            free_at[slot] = offset + 20
        name, call, args = _storm_fault(fault, slot, rng)
        plan.append(Planned(offset / duration, name, call, args))
        offset += rng.uniform(5, 9)
    return plan


async def storm(run: Run) -> None:
    await play(run, storm_plan(run))


# --- the profiles ----------------------------------------------------------------------

SLOW_WORKERS = (
    WorkerSpec("w1"),
    WorkerSpec("hb", queues=f"{QUEUE}-hb", concurrency=2),
    WorkerSpec("nohb", queues=f"{QUEUE}-nohb", concurrency=2, env=(("WORKER_HEARTBEAT", "false"),)),
)
QUIET_MIX = Mix(ok=80, flaky=10, exhaust=5, terminal=5, slow=0, cancel=0)

FULL = [
    Scenario("crash", "kill -9 workers mid-handler and between pop and claim", 420, 12, crash),
    Scenario("zombie", "SIGSTOP workers past their leases, then SIGCONT", 300, 12, zombie),
    Scenario(
        "redis", "Redis SHUTDOWN NOSAVE + restart, FLUSHALL, CLIENT PAUSE", 480, 12, redis_loss
    ),
    Scenario("postgres", "Postgres restart -m immediate, and 4 s down", 360, 12, postgres),
    Scenario("network", "proxy latency, connection resets and stalls", 480, 12, network),
    Scenario(
        "hung-redis", "Redis SIGSTOP 15 s: every answer within its deadline", 360, 12, hung_redis
    ),
    Scenario(
        "hung-postgres",
        "Postgres black-holed 12 s: every answer within its deadline",
        360,
        12,
        hung_postgres,
    ),
    Scenario(
        "slow-handler",
        "handlers outliving their lease, with and without heartbeats",
        120,
        8,
        slow_handler,
        workers=SLOW_WORKERS,
        mix=QUIET_MIX,
    ),
    Scenario("bad-input", "malformed requests at scale beside valid traffic", 300, 10, bad_input),
    Scenario("storm", "every fault kind on a seeded random schedule", 2000, 14, storm, budget=420),
]

CI = [
    Scenario("ci-crash", "kill -9 workers mid-handler and between pop and claim", 180, 10, crash),
    Scenario(
        "ci-services", "Redis FLUSHALL, Postgres restart -m immediate", 180, 10, services_short
    ),
    Scenario(
        "ci-hung",
        "Redis SIGSTOP 6 s, Postgres black-holed 6 s: answers within their deadlines",
        150,
        10,
        hung_short,
    ),
]

PROFILES = {"full": FULL, "ci": CI}


def by_name(names: list[str]) -> list[Scenario]:
    known = {scenario.name: scenario for scenario in FULL + CI}
    missing = [name for name in names if name not in known]
    if missing:
        raise KeyError(f"unknown scenario(s) {missing}; known: {sorted(known)}")
    return [known[name] for name in names]


__all__ = ["CI", "DEFAULT_WORKERS", "FULL", "PROFILES", "by_name"]
