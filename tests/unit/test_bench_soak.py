"""The soak's durations and verdicts, percentiles, and pictures when matplotlib is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from taskforge.bench.big_tables import percentile
from taskforge.bench.charts import MISSING, draw_soak, save_picture
from taskforge.bench.soak import Sample, SoakSettings, parse_duration, soak_verdicts
from taskforge.entrypoints.cli import service
from taskforge.entrypoints.config import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("300", 300.0),  # plain seconds
        ("90s", 90.0),
        ("15m", 900.0),
        ("1h30m", 5400.0),
        ("2m30s", 150.0),
        ("0.5m", 30.0),
    ],
)
def test_a_soak_duration_is_read_in_hours_minutes_and_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "15 minutes", "0", "-5m"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_p99_of_a_hundred_samples_is_the_ninety_ninth() -> None:
    values = [float(n) for n in range(100, 0, -1)]

    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 99) == 0.0


def _sample(at: float, *, rss: float, jobs_bytes: int, p99: float, errors: int = 0) -> Sample:
    return Sample(
        at=at,
        enqueued_per_second=100.0,
        finished_per_second=100.0,
        start_p50_ms=p99 / 2,
        start_p99_ms=p99,
        rss_mib={"api": 100.0, "worker": rss},
        table_bytes={"jobs": jobs_bytes},
        index_bytes={"jobs": 0},
        dead_tuples={"jobs": 0},
        redis_used_bytes=1 << 20,
        errors=errors,
    )


def test_a_steady_soak_meets_every_target() -> None:
    soak = SoakSettings(duration=600, sample_every=10, retention=60)
    samples = [
        _sample(float(at), rss=50.0 + (at > 30), jobs_bytes=8 << 20, p99=20.0)
        for at in range(10, 601, 10)
    ]

    verdicts = soak_verdicts(samples, soak)

    assert verdicts["rss_under_10_percent"] is True
    assert verdicts["p99_within_1_5x"] is True
    assert verdicts["sizes_level_off"] is True
    assert verdicts["zero_errors"] is True


def test_growing_memory_tables_and_latency_and_errors_are_each_reported() -> None:
    soak = SoakSettings(duration=600, sample_every=10, retention=60)
    samples = [
        _sample(float(at), rss=50.0 + at / 10, jobs_bytes=at << 20, p99=10.0 + at / 10)
        for at in range(10, 601, 10)
    ]
    samples[-1] = _sample(600.0, rss=110.0, jobs_bytes=600 << 20, p99=70.0, errors=3)

    verdicts = soak_verdicts(samples, soak)

    assert verdicts["rss_growth_after_first_minute"]["worker"] == pytest.approx(110 / 56 - 1)
    assert verdicts["rss_under_10_percent"] is False
    assert verdicts["p99_within_1_5x"] is False
    assert verdicts["sizes_level_off"] is False
    assert verdicts["errors"] == 3


def test_without_matplotlib_the_picture_is_skipped_with_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    path = tmp_path / "soak.png"

    line = save_picture(draw_soak, {"samples": [], "settings": {}}, path)

    assert line == MISSING
    assert "taskforge[bench]" in line
    assert not path.exists()


def test_the_bench_command_refuses_a_soak_duration_that_is_not_one_by_name() -> None:
    with pytest.raises(ConfigError, match=r"--soak='5x'.*not a duration"):
        service.bench(soak="5x")


@pytest.mark.parametrize(
    ("out", "problem"),
    [
        (
            "{tmp}/no-such-folder/bench.json",
            "no folder {tmp}/no-such-folder to write the report in",
        ),
        ("{tmp}", "a folder; expected a file to write the report to"),
        (  # the report's picture, at its name with .png, would be written over it
            "{tmp}/bench.png",
            "its picture would be written over it (the report's name with .png); use another"
            " suffix, as .json",
        ),
    ],
)
def test_the_bench_command_refuses_a_report_path_it_cannot_write_before_it_starts(
    tmp_path: Path, out: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not after the benchmark's minutes of running, with a traceback and the report lost.
    monkeypatch.setenv("POSTGRES_DSN", "postgresql://nobody@127.0.0.1:1/none")
    path = out.format(tmp=tmp_path)
    with pytest.raises(ConfigError) as refused:
        service.bench(out=path, quick=True)
    assert str(refused.value) == (
        f"invalid configuration: --out={path!r}: {problem.format(tmp=tmp_path)}"
    )
