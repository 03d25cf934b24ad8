"""`taskforge bench --quick` runs end to end and reports every scenario.

Only that it ran and produced sane numbers is checked, never a speed: speeds belong to
the benchmark's own report, compared side by side on one machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import redis_env

pytestmark = pytest.mark.slow

SCENARIOS = (
    "enqueue, 1 client sequential",
    "enqueue, 100 in flight",
    "batch enqueue",
    "drain 1,000 jobs, 1 worker",
    "drain 1,000 jobs, 3 workers",
    "latency at",
    "worker start-up",
    "taskforge-cli status",
    "txn-enqueue",
    "txn-enqueue-many",
    "txn-latency",
)


def test_quick_bench_reports_every_scenario_and_cleans_up(
    postgres_admin_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    env = {
        **os.environ,
        "POSTGRES_DSN": postgres_admin_dsn,
        **redis_env(redis_url),
    }

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskforge.entrypoints.cli.service",
            "bench",
            "--quick",
            "--out",
            str(out),
            "--workers",
            "1,3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    names = [row["name"] for row in report["results"]]
    for scenario in SCENARIOS:
        assert any(name.startswith(scenario) for name in names), (scenario, names)
    for row in report["results"]:
        assert row["jobs"] > 0
        assert 0 < row["seconds"] < 180
        assert row["jobs_per_second"] > 0
    latency = next(row for row in report["results"] if row["name"].startswith("latency"))
    assert 0 < latency["start_p50_ms"] <= latency["start_p99_ms"] <= latency["finish_p99_ms"]
    txn = next(row for row in report["results"] if row["name"] == "txn-latency")
    assert 0 < txn["start_p50_ms"] <= txn["start_p99_ms"] <= txn["finish_p99_ms"]
    assert report["api_peak_rss_mib"] > 0
    assert "TaskForge bench" in result.stdout
    # --workers 1,3: one drain per count, with the CPU the workers and the (local) Postgres
    # used while the jobs ran, as shares of the machine.
    drains = [row for row in report["results"] if row["name"].startswith("drain")]
    assert [row["workers"] for row in drains] == [1, 3]
    for row in drains:
        assert 0 < row["workers_cpu_pct"] <= 100
        assert 0 < row["postgres_cpu_pct"] <= 100
        assert row["workers_cpu_pct"] < row["machine_cpu_pct"] <= 101  # ticks are coarse
    assert report["cores"] >= 1
    assert "Drain rate by workers" in result.stdout
