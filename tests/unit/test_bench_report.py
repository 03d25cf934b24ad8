"""The bench's report: medians of several runs, and the memory of the processes measured."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress

from taskforge.bench import run
from taskforge.bench.report import median_report, render, scaling_table
from taskforge.bench.run import parse_worker_counts
from taskforge.bench.scenarios import Result
from taskforge.bench.stack import peak_rss_mib


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
    assert "1,500" in text  # 100 jobs over the median time, (0.1 + 0.033) / 2 s
    assert "1,000, 3,000" in text


def test_the_notes_show_a_target_as_it_is_set_not_rounded_to_a_tenth() -> None:
    startup = {"name": "worker start-up", "jobs": 1, "seconds": 0.32, "jobs_per_second": 3.1}
    report = {
        "api_peak_rss_mib": 70.0,
        "results": [
            startup
            | {"target_seconds": 0.35, "tries": 3.0, "start_p50_ms": 9.125, "postgres_cpu_pct": 0.0}
        ],
    }
    output = io.StringIO()

    render(report, Console(file=output, width=300))

    text = output.getvalue()
    # One start-up over its seconds is no rate (it read "3 jobs/s").
    assert re.search(r"worker start-up\s+│\s+1\s+│\s+0\.32\s+│\s+-\s+│", text), text
    assert "target_seconds=0.35," in text
    assert "tries=3," in text
    assert "start_p50_ms=9.12," in text
    assert "postgres_cpu_pct=0 " in text


def test_peak_memory_of_a_supervisor_is_that_of_the_child_serving_for_it() -> None:
    # API_WORKERS > 1: the process the bench started only supervises; its children serve.
    child = "import time; block = b'x' * (100 << 20); print('ready', flush=True); time.sleep(60)"
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert supervisor.stdout is not None
        assert supervisor.stdout.readline().strip() == "ready"

        assert peak_rss_mib(supervisor.pid) >= 100
    finally:
        os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait()


@pytest.mark.parametrize(
    ("text", "counts"),
    [
        ("1,2,4", (1, 2, 4)),
        (" 4, 1 ", (4, 1)),  # in the order given
        ("2,2,1", (2, 1)),  # each once
        ("64", (64,)),
    ],
)
def test_worker_counts_are_read_from_a_comma_separated_list(
    text: str, counts: tuple[int, ...]
) -> None:
    assert parse_worker_counts(text) == counts


@pytest.mark.parametrize("text", ["", "0", "1,,2", "two", "1.5", "-1", "65"])
def test_a_worker_count_that_is_not_a_number_from_1_to_64_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--workers"):
        parse_worker_counts(text)


@pytest.mark.parametrize(("option", "value"), [("--workers", "1,x"), ("--api-workers", "2,0")])
def test_bench_refuses_a_bad_workers_option_before_it_starts_anything(
    option: str, value: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "taskforge.entrypoints.cli", "bench", option, value],
        env={**os.environ, "POSTGRES_DSN": "postgresql://nobody@127.0.0.1:1/none"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert f"{option} '{value}'" in done.stderr


def _drain(workers: int, rate: float, postgres: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": f"drain 10 jobs, {workers} workers",
        "jobs": 10,
        "seconds": 10 / rate,
        "jobs_per_second": rate,
        "workers": float(workers),
        "workers_cpu_pct": 20.0 * workers,
        "machine_cpu_pct": 90.0,
    }
    if postgres is not None:
        row["postgres_cpu_pct"] = postgres
    return row


def test_the_drains_are_set_side_by_side_by_number_of_workers() -> None:
    report = {
        "cores": 2,
        "api_peak_rss_mib": 70.0,
        "results": [_drain(1, 1000.0, 30.0), _drain(2, 1500.0, 45.0), _drain(4, 1600.0, 50.0)],
    }
    output = io.StringIO()

    render(report, Console(file=output, width=200))

    text = output.getvalue()
    assert "Drain rate by workers (2 cores)" in text
    lines = [line for line in text.splitlines() if "│" in line or "|" in line]
    four = next(line for line in lines if line.split("│")[1].strip() == "4")
    cells = [cell.strip() for cell in four.split("│")[1:8]]
    assert cells == ["4", "1,600", "1.60", "400", "50", "80", "90"]


def test_a_postgres_on_another_machine_has_no_cpu_share() -> None:
    table = scaling_table({"results": [_drain(1, 1000.0, None)]})

    assert table is not None
    output = io.StringIO()
    Console(file=output, width=200).print(table)
    assert "not local" in output.getvalue()


@pytest.mark.parametrize(
    ("api_workers", "suffix", "extra"),
    [
        (None, "", {}),
        (2, ", API_WORKERS=2", {"api_workers": 2, "api_processes": 2}),
    ],
)
async def test_http_scenarios_are_named_with_the_api_size_only_when_the_run_compares_sizes(
    monkeypatch: pytest.MonkeyPatch,
    api_workers: int | None,
    suffix: str,
    extra: dict[str, int],
) -> None:
    async def scenario(name: str) -> Result:
        return Result(name, 10, 1.0)

    monkeypatch.setattr(run, "bench_sequential", lambda *_: scenario("one client"))
    monkeypatch.setattr(run, "bench_concurrent", lambda *_: scenario("in flight"))
    monkeypatch.setattr(run, "bench_batch", lambda *_: scenario("batch"))
    monkeypatch.setattr(run, "serving_processes", lambda pid: 2)
    api: Any = SimpleNamespace(pid=1)
    stack: Any = None

    with Progress(console=Console(file=io.StringIO())) as progress:
        results = await run._http_scenarios(stack, run.BenchSizes(), progress, api, api_workers)

    assert [(r.name, r.extra) for r in results] == [
        (f"{name}{suffix}", extra) for name in ("one client", "in flight", "batch")
    ]
