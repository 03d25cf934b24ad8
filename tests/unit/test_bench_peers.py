"""`just bench-peers`: the order the systems run in, and the report's medians and ratios."""

from __future__ import annotations

import pytest

from taskforge.bench.peers import (
    Figures,
    Row,
    _summary,
    by_pass,
    main,
    pgqueuer_of,
    render,
    rotated,
    scenarios,
)


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

    assert lines[4].endswith("| 1.50x |  |")  # 300 against dramatiq's 200, not pgqueuer's 100
    assert lines[5].endswith("|  |  |")  # a peer's row has no ratio
    assert lines[7].endswith("| 0.50x |  |")


def test_a_taskforge_row_is_held_against_pgqueuers_run_of_the_same_pass() -> None:
    # Pass by pass, the machine's drift falls on both: TaskForge's rate over pgqueuer's in
    # each pass, not the ratio of the two medians (here 1.0, every pass 0.8 or 1.25).
    ours: list[Figures] = [{"seconds": 1.0}, {"seconds": 2.0}, {"seconds": 4.0}]
    theirs: list[Figures] = [{"seconds": 1.25}, {"seconds": 1.6}, {"seconds": 5.0}]

    paired = by_pass(ours, theirs)

    assert paired["each_pass"] == [1.25, 0.8, 1.25]
    assert paired["ratio"] == 1.25
    assert (paired["ahead"], paired["passes"]) == (2, 3)

    report = {
        "runs": 1,
        "passes": 3,
        "results": [
            {
                "system": "TaskForge",
                "scenario": "enqueue",
                "setting": "default",
                "jobs_per_second": 50.0,
                "jobs_per_second_each_run": [50.0],
                "against_pgqueuer": paired,
            }
        ],
    }
    lines = render(report).splitlines()
    assert lines[0] == "medians of 1 interleaved rounds, the enqueue scenarios in 3 passes a round"
    assert lines[4].endswith("| 1.25x, ahead in 2 of 3 |")


def test_pgqueuer_at_its_documented_settings_is_the_pass_partner() -> None:
    plan = [
        _row("TaskForge", "drain"),
        Row("pgqueuer", "drain", "concurrency_limit 10", 100, _never),
        Row("pgqueuer", "drain", "no limit", 100, _never),
        _row("TaskForge", "enqueue"),
        _row("dramatiq", "enqueue"),
    ]

    assert pgqueuer_of(plan, plan[0]) is plan[1]
    assert pgqueuer_of(plan, plan[3]) is None
    assert list(scenarios(plan)) == ["drain", "enqueue"]
    assert scenarios(plan)["drain"] == plan[:3]


@pytest.mark.parametrize("option", ["--runs", "--passes", "--jobs", "--enqueues", "--bulk"])
@pytest.mark.parametrize("value", ["0", "-2", "1.5", "many"])
def test_a_count_that_is_not_a_whole_number_from_one_is_refused_by_name(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([option, value])

    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {option}: must be a whole number from 1, not '{value}'" in error
    assert "Traceback" not in error


def test_without_a_database_it_says_which_setting_is_missing_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("POSTGRES_DSN", raising=False)
    monkeypatch.delenv("POSTGRES_DSN_FILE", raising=False)

    assert main(["--out", "unused.json"]) == 2

    error = capsys.readouterr().err
    assert error.startswith("bench-peers: invalid configuration: POSTGRES_DSN: not set")
    assert "Traceback" not in error
