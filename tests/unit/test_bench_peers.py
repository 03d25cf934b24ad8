"""`just bench-peers`: the order the systems run in, and the report's medians and ratios."""

from __future__ import annotations

import pytest

from taskforge.bench.peers import Figures, Row, _summary, main, render, rotated


async def _never() -> Figures:
    raise AssertionError("not run by these tests")


def _row(system: str, scenario: str, jobs: int = 100) -> Row:
    return Row(system, scenario, "default", jobs, _never)


PLAN = [
    _row("TaskForge", "drain"),
    _row("pgqueuer", "drain"),
    _row("dramatiq", "drain"),
    _row("TaskForge", "enqueue"),
    _row("pgqueuer", "enqueue"),
]


def _order(rows: list[Row]) -> list[tuple[str, str]]:
    return [(row.scenario, row.system) for row in rows]


def test_each_round_shifts_the_systems_of_every_scenario_by_one() -> None:
    assert _order(rotated(PLAN, 0)) == _order(PLAN)
    assert _order(rotated(PLAN, 1)) == [
        ("drain", "pgqueuer"),
        ("drain", "dramatiq"),
        ("drain", "TaskForge"),
        ("enqueue", "pgqueuer"),
        ("enqueue", "TaskForge"),
    ]
    # Three systems: every one of them runs first in one of three rounds.
    firsts = {rotated(PLAN, number)[0].system for number in range(3)}
    assert firsts == {"TaskForge", "pgqueuer", "dramatiq"}


def test_a_summary_is_the_median_of_the_rounds_with_each_rounds_rate() -> None:
    rounds: list[Figures] = [
        {"seconds": 2.0, "first_job_seconds": 0.3, "busy_seconds": 1.5},
        {"seconds": 1.0, "first_job_seconds": 0.2, "busy_seconds": 0.8},
        {"seconds": 4.0, "first_job_seconds": 0.9, "busy_seconds": 3.0},
    ]

    summary = _summary(_row("TaskForge", "drain", jobs=100), rounds)

    assert summary["seconds"] == 2.0
    assert summary["jobs_per_second"] == 50.0
    assert summary["jobs_per_second_each_run"] == [50.0, 100.0, 25.0]
    assert summary["first_job_seconds"] == 0.3
    assert summary["busy_jobs_per_second"] == 100 / 1.5


def test_taskforge_rows_show_their_ratio_to_the_fastest_peer_of_the_same_scenario() -> None:
    def result(system: str, scenario: str, rate: float) -> dict[str, object]:
        return {
            "system": system,
            "scenario": scenario,
            "setting": "default",
            "jobs_per_second": rate,
            "jobs_per_second_each_run": [rate],
        }

    report = {
        "runs": 1,
        "results": [
            result("TaskForge", "drain", 300.0),
            result("pgqueuer", "drain", 100.0),
            result("dramatiq", "drain", 200.0),
            result("TaskForge", "enqueue", 50.0),
            result("pgqueuer", "enqueue", 100.0),
        ],
    }

    lines = render(report).splitlines()

    assert lines[4].endswith("| 1.50x |")  # 300 against dramatiq's 200, not pgqueuer's 100
    assert lines[5].endswith("|  |")  # a peer's row has no ratio
    assert lines[7].endswith("| 0.50x |")


def test_without_a_database_it_says_which_setting_is_missing_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("POSTGRES_DSN", raising=False)
    monkeypatch.delenv("POSTGRES_DSN_FILE", raising=False)

    assert main(["--out", "unused.json"]) == 2

    error = capsys.readouterr().err
    assert error.startswith("bench-peers: invalid configuration: POSTGRES_DSN: not set")
    assert "Traceback" not in error
