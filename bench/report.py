"""From runs to a report: medians of several runs, and the table printed at the end."""

from __future__ import annotations

import statistics
from typing import Any

from rich.console import Console
from rich.table import Table


def median_report(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One report for several runs of the same scenarios: every figure is the median of the
    runs' (peak RSS the highest of them; a rate is the jobs over the median time, so a row
    adds up with an even number of runs too), and each run's report is kept under "runs"."""
    results = []
    for index, row in enumerate(runs[0]["results"]):
        merged = {
            key: _combined(key, [run["results"][index][key] for run in runs])
            for key in row
            if key != "jobs_per_second"
        }
        merged["jobs_per_second"] = merged["jobs"] / merged["seconds"] if merged["seconds"] else 0.0
        results.append(merged)
    return {
        "sizes": runs[0]["sizes"],
        **({"cores": runs[0]["cores"]} if "cores" in runs[0] else {}),
        "api_peak_rss_mib": max(run["api_peak_rss_mib"] for run in runs),
        "results": results,
        "runs": runs,
    }


def _combined(key: str, values: list[Any]) -> Any:
    if key in ("name", "jobs"):  # the same in every run
        return values[0]
    return max(values) if "peak_rss" in key else statistics.median(values)


def render(report: dict[str, Any], console: Console) -> None:
    runs = report.get("runs", [])
    title = f"TaskForge bench: medians of {len(runs)} runs" if runs else "TaskForge bench"
    table = Table(title=title)
    table.add_column("scenario")
    table.add_column("jobs", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("jobs/s", justify="right")
    if runs:
        table.add_column("jobs/s of each run", justify="right")
    table.add_column("notes")
    for index, row in enumerate(report["results"]):
        notes = ", ".join(
            f"{key}={_note(value)}"
            for key, value in row.items()
            if key not in {"name", "jobs", "seconds", "jobs_per_second"}
        )
        timed = "target_seconds" in row  # one start-up timed, not a rate of jobs
        each = (
            [
                "-"
                if timed
                else ", ".join(f"{run['results'][index]['jobs_per_second']:,.0f}" for run in runs)
            ]
            if runs
            else []
        )
        table.add_row(
            row["name"],
            f"{row['jobs']:,}",
            f"{row['seconds']:.2f}",
            "-" if timed else f"{row['jobs_per_second']:,.0f}",
            *each,
            notes,
        )
    console.print(table)
    scaling = scaling_table(report)
    if scaling is not None:
        console.print(scaling)
    console.print(f"API peak RSS: {report['api_peak_rss_mib']:.1f} MiB")


def _note(value: float) -> str:
    """A note's figure to two decimals at most, without trailing zeros: a target of 0.35 s
    reads 0.35 (not 0.3), a count of 3 reads 3."""
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def scaling_table(report: dict[str, Any]) -> Table | None:
    """The drains side by side by number of workers: the rate, its gain over the fewest
    workers, and the share of the machine's CPU Postgres, the workers and everything
    together used. Where the rate stops growing while Postgres takes a growing share,
    Postgres is the bottleneck; where the machine is busy near 100 %, the machine is (on a
    shared machine, the gap between it and the other two is someone else's work)."""
    drains = [
        row
        for row in report["results"]
        if "workers" in row and row["name"].startswith("drain") and "finished" not in row["name"]
    ]
    if not drains:
        return None
    cores = report.get("cores")
    table = Table(
        title=f"Drain rate by workers ({cores} cores)" if cores else "Drain rate by workers"
    )
    for column in ("workers", "jobs/s", "x fewest", "jobs/s per worker"):
        table.add_column(column, justify="right")
    table.add_column("Postgres CPU %", justify="right")
    table.add_column("workers CPU %", justify="right")
    table.add_column("machine CPU %", justify="right")
    base_rate = drains[0]["jobs_per_second"]
    for row in drains:
        workers = int(row["workers"])
        postgres = row.get("postgres_cpu_pct")
        table.add_row(
            str(workers),
            f"{row['jobs_per_second']:,.0f}",
            f"{row['jobs_per_second'] / base_rate:.2f}" if base_rate else "-",
            f"{row['jobs_per_second'] / workers:,.0f}",
            "not local" if postgres is None else f"{postgres:.0f}",
            f"{row.get('workers_cpu_pct', 0.0):.0f}",
            f"{row.get('machine_cpu_pct', 0.0):.0f}",
        )
    return table
