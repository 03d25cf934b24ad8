"""Several bench runs become one report of medians, each run kept beside it."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from taskforge.entrypoints.bench import median_report, render


def _run(rate: float, p99: float, rss: float, api_rss: float) -> dict[str, Any]:
    return {
        "sizes": {"drain": 10},
        "api_peak_rss_mib": api_rss,
        "results": [
            {"name": "enqueue", "jobs": 100, "seconds": 100 / rate, "jobs_per_second": rate},
            {
                "name": "drain",
                "jobs": 10,
                "seconds": 1.0,
                "jobs_per_second": 10.0,
                "start_p99_ms": p99,
                "worker_peak_rss_mib": rss,
            },
        ],
    }


def test_every_figure_is_the_median_of_the_runs_and_peak_memory_the_highest() -> None:
    runs = [
        _run(300.0, 9.0, 50.0, 70.0),
        _run(100.0, 30.0, 52.0, 69.0),
        _run(200.0, 12.0, 51.0, 71.0),
    ]

    report = median_report(runs)

    enqueue, drain = report["results"]
    assert (enqueue["name"], enqueue["jobs"], enqueue["jobs_per_second"]) == ("enqueue", 100, 200.0)
    assert enqueue["seconds"] == 0.5
    assert drain["start_p99_ms"] == 12.0
    assert drain["worker_peak_rss_mib"] == 52.0
    assert report["api_peak_rss_mib"] == 71.0
    assert report["runs"] == runs
    assert report["sizes"] == {"drain": 10}


def test_the_table_of_several_runs_shows_each_run_beside_the_median() -> None:
    report = median_report([_run(1000.0, 9.0, 50.0, 70.0), _run(3000.0, 9.0, 50.0, 70.0)])
    output = io.StringIO()

    render(report, Console(file=output, width=200))

    text = output.getvalue()
    assert "medians of 2 runs" in text
    assert "2,000" in text
    assert "1,000, 3,000" in text
