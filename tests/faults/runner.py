"""Run scenarios on one set of private services and report them."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tests.faults.harness import Run, Scenario, ScenarioResult, Services
from tests.faults.report import scenario_report, summary

DEFAULT_SEED = 20240611


async def run_scenario(
    services: Services, scenario: Scenario, *, seed: int, logs: Path, echo: TextIO | None
) -> ScenarioResult:
    """One scenario within its time budget; its processes are stopped whatever happens."""
    async with asyncio.timeout(scenario.budget):
        async with Run(services, scenario, seed=seed, logs=logs, echo=echo) as run:
            await scenario.inject(run)
            return await run.finish()


def run_scenarios(
    scenarios: Sequence[Scenario],
    *,
    seed: int = DEFAULT_SEED,
    logs: Path | None = None,
    echo: TextIO | None = sys.stdout,
) -> list[ScenarioResult]:
    """Start private services, run each scenario on them, remove them; print the reports."""
    logs = logs or Path(tempfile.mkdtemp(prefix="taskforge-faults-logs-"))
    results: list[ScenarioResult] = []
    began = time.monotonic()
    services = Services.start()
    try:
        if echo is not None:
            print(
                f"private Postgres on 127.0.0.1:{services.postgres.port}, Redis on"
                f" 127.0.0.1:{services.redis.port}; seed {seed}; logs in {logs}",
                file=echo,
            )
        for scenario in scenarios:
            result = asyncio.run(run_scenario(services, scenario, seed=seed, logs=logs, echo=echo))
            results.append(result)
            if echo is not None:
                print("\n" + scenario_report(result) + "\n", file=echo, flush=True)
    finally:
        services.remove()
    if echo is not None:
        print(summary(results), file=echo)
        print(f"\n{len(results)} scenario(s) in {time.monotonic() - began:.0f}s", file=echo)
    return results


def assert_scenario_holds(services: Services, scenario: Scenario, logs: Path) -> None:
    """Run `scenario` with the default seed under pytest; its report is kept in `logs` and
    shown when an invariant fails."""
    result = asyncio.run(run_scenario(services, scenario, seed=DEFAULT_SEED, logs=logs, echo=None))
    report = scenario_report(result)
    (logs / "report.txt").write_text(report + "\n")
    assert result.ok, "\n" + report
