"""The standard bench's picture: each kind of figure in the panel that can show it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from taskforge.bench import charts


def _report() -> dict[str, Any]:
    rows: list[dict[str, Any]] = [
        {"name": "enqueue, 100 in flight", "jobs": 500, "seconds": 0.2, "jobs_per_second": 2500},
        {"name": "drain 1,000 jobs, 1 worker", "jobs": 1000, "seconds": 0.5, "workers": 1.0},
        {
            "name": "latency at 100 jobs/s for 3s",
            "jobs": 300,
            "seconds": 3.0,
            "start_p50_ms": 2.0,
            "start_p95_ms": 5.0,
            "start_p99_ms": 9.0,
            "finish_p50_ms": 4.0,
            "finish_p99_ms": 12.0,
        },
        {
            "name": "worker start-up: spawn to first job started",
            "jobs": 1,
            "seconds": 0.31,
            "target_seconds": 0.35,
        },
    ]
    for row in rows:
        row.setdefault("jobs_per_second", row["jobs"] / row["seconds"])
    # A second run whose figures differ, its rows in another order.
    second = [{**row, "jobs_per_second": row["jobs_per_second"] * 2} for row in rows[::-1]]
    return {"results": rows, "runs": [{"results": rows}, {"results": second}]}


def test_rates_latencies_and_start_ups_each_go_to_their_own_panel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    drawn: dict[str, list[str]] = {}

    def record(panel: str) -> Any:
        def draw(axes: Any, rows: list[dict[str, Any]], *rest: Any) -> None:
            drawn[panel] = [row["name"] for row in rows]

        return draw

    monkeypatch.setattr(charts, "_rates", record("rates"))
    monkeypatch.setattr(charts, "_latencies", record("latency"))
    monkeypatch.setattr(charts, "_startups", record("startup"))

    charts.save_picture(charts.draw_runs, _report(), tmp_path / "bench.png")

    assert drawn == {
        "rates": ["enqueue, 100 in flight", "drain 1,000 jobs, 1 worker"],
        "latency": ["latency at 100 jobs/s for 3s"],
        "startup": ["worker start-up: spawn to first job started"],
    }


def test_the_picture_of_several_runs_is_written_as_a_png(tmp_path: Path) -> None:
    path = tmp_path / "bench.png"

    line = charts.save_picture(charts.draw_runs, _report(), path)

    assert line == f"picture written to {path}"
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_each_runs_dots_are_its_own_figures_for_each_scenario_by_name() -> None:
    from matplotlib.figure import Figure

    report = _report()
    rows = report["results"][:2]
    axes = Figure().subplots()

    charts._rates(axes, rows, report["runs"])

    first, second = (np.asarray(line.get_xdata()).tolist() for line in axes.lines)
    assert first == [2500, 2000]
    assert second == [5000, 4000]
