"""`taskforge bench --quick` runs end to end and reports every scenario.

Only that it ran and produced sane numbers is checked, never a speed: speeds belong to
the benchmark's own report, compared side by side on one machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from tests.servers import PrivateRedis, TlsFiles
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
            "taskforge.entrypoints.cli",
            "bench",
            "--quick",
            "--out",
            str(out),
            "--workers",
            "1,3",
            "--api-workers",
            "1,2",
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
    # --api-workers 1,2: the HTTP scenarios once against an API of each size (served by
    # that many processes), named so.
    http = [row for row in report["results"] if "api_workers" in row]
    assert [(row["name"], row["api_workers"], row["api_processes"]) for row in http] == [
        (f"{scenario}, API_WORKERS={count}", count, count)
        for count in (1, 2)
        for scenario in (
            "enqueue, 1 client sequential",
            "enqueue, 100 in flight",
            "batch enqueue (1000/request)",
        )
    ]


async def _bench_databases(admin_dsn: str, kind: str = "bench") -> set[str]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", f"taskforge\\_{kind}\\_%"
        )
    finally:
        await conn.close()
    return {row["datname"] for row in rows}


def _children(pid: int) -> set[int]:
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children |= {int(child) for child in task.read_text().split()}
        except OSError:  # the thread ended meanwhile
            continue
    return children


def _is_taskforge_process(pid: int) -> bool:
    try:
        return b"taskforge" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone
        return False


@pytest.mark.parametrize(
    ("sig", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["TERM", "INT"]
)
def test_an_interrupted_bench_stops_its_processes_and_drops_its_database(
    postgres_admin_dsn: str, redis_url: str, tmp_path: Path, sig: signal.Signals, exit_code: int
) -> None:
    before = asyncio.run(_bench_databases(postgres_admin_dsn))
    env = {**os.environ, "POSTGRES_DSN": postgres_admin_dsn, **redis_env(redis_url)}
    command = [sys.executable, "-m", "taskforge.entrypoints.cli", "bench", "--quick"]
    bench = subprocess.Popen(
        [*command, "--out", str(tmp_path / "bench.json")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # Interrupted once it runs its API in its scratch database.
        deadline = time.monotonic() + 60
        scratch: set[str] = set()
        children: set[int] = set()
        while not (scratch and children) and bench.poll() is None:
            assert time.monotonic() < deadline, "the bench started no API in 60 s"
            time.sleep(0.1)
            scratch = asyncio.run(_bench_databases(postgres_admin_dsn)) - before
            children = {pid for pid in _children(bench.pid) if _is_taskforge_process(pid)}
        assert bench.poll() is None, "the bench ended before it was interrupted"

        bench.send_signal(sig)
        _, stderr = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()

    assert bench.returncode == exit_code, stderr.decode()[-3000:]
    assert [pid for pid in children if _is_taskforge_process(pid)] == []
    assert asyncio.run(_bench_databases(postgres_admin_dsn)) & scratch == set()


def _bench(
    postgres_admin_dsn: str, redis_url: str, *args: str, **env_overrides: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ, "POSTGRES_DSN": postgres_admin_dsn, **redis_env(redis_url), **env_overrides
    }  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "taskforge.entrypoints.cli", "bench", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.parametrize("server", ["Postgres", "Redis"])
def test_a_bench_that_cannot_use_a_server_says_which_in_one_line_and_leaves_nothing(
    postgres_admin_dsn: str, redis_url: str, server: str
) -> None:
    before = asyncio.run(_bench_databases(postgres_admin_dsn))
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]
        unreachable = (
            {"POSTGRES_DSN": f"postgresql://postgres:secret@127.0.0.1:{port}/postgres"}
            if server == "Postgres"
            else {"REDIS_ADDR": f"127.0.0.1:{port}"}
        )
        finished = _bench(postgres_admin_dsn, redis_url, "--quick", **unreachable)

    assert finished.returncode == 1, finished.stderr
    assert finished.stderr.startswith(f"taskforge bench: cannot use {server} at "), finished.stderr
    assert f"127.0.0.1:{port}" in finished.stderr
    assert "Traceback" not in finished.stderr and "secret" not in finished.stderr
    assert len(finished.stderr.splitlines()) == 1, finished.stderr
    assert asyncio.run(_bench_databases(postgres_admin_dsn)) == before


def test_big_tables_bench_at_a_tiny_size_times_every_read_and_sweep_before_and_after(
    postgres_admin_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "big.json"

    result = _bench(
        postgres_admin_dsn,
        redis_url,
        *("--big-tables", "--quick", "--big-jobs", "200", "--dead-letters", "20"),
        *("--out", str(out)),
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["stored"]["dead_letters"] == 20
    # 200 filled, 20 dead-lettered, each phase's drain and latency jobs (+1 warm-up), and the
    # job the empty side's job page shows
    measured = 2 * (report["sizes"]["drain"] + 100 + 1)
    assert report["stored"]["jobs"] == 200 + 20 + measured + 1
    for side in ("empty", "big"):
        timings = report[side]["timings"]
        assert {"GET /stats", "GET /metrics", "GET /dlq?limit=50", "sweep prune_finished"} <= set(
            timings
        )
        pages = {name for name in timings if name.startswith("GET /ui")}
        assert pages == {
            "GET /ui",
            "GET /ui/overview/live",
            "GET /ui/jobs",
            "GET /ui/jobs?state=succeeded",
            "GET /ui/jobs?queue=Q&state=pending",
            "GET /ui/jobs/{id}",
            "GET /ui/dlq",
            "GET /ui/dlq/group?{group}",
            "GET /ui/queues",
        }
        assert all(0 < t["p50_ms"] <= t["p99_ms"] for t in timings.values())
        assert report[side]["drain"]["jobs_per_second"] > 0
        assert len(report[side]["start_latency_ms"]) == 100
    assert report["verdicts"]["drain_time_ratio"] > 0
    assert "pages_under_150_ms" in report["verdicts"]
    plans = out.with_suffix(".explain.txt").read_text()
    assert "-- sweep: prune finished" in plans
    assert "jobs_prunable_by_finished_at" in plans  # retention walks its own index
    assert "-- dashboard: ready jobs, up to 10,001" in plans
    assert "-- dashboard: dead-letter groups" in plans
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def test_a_short_soak_samples_every_process_table_and_redis_and_draws_them(
    postgres_admin_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "soak.json"

    result = _bench(
        postgres_admin_dsn,
        redis_url,
        *("--soak", "4s", "--quick", "--soak-rate", "50", "--soak-retention", "1"),
        *("--out", str(out)),
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    samples = report["samples"]
    assert len(samples) >= 3
    for sample in samples:
        assert set(sample["rss_mib"]) == {"api", "worker", "scheduler"}
        assert all(mib > 0 for mib in sample["rss_mib"].values())
        assert sample["table_bytes"]["jobs"] > 0
        assert sample["redis_used_bytes"] > 0
        assert sample["errors"] == 0
    assert sum(sample["finished_per_second"] for sample in samples) > 0
    assert report["start_latency_ms"]["jobs"] > 0
    assert report["verdicts"]["zero_errors"] is True
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def test_the_peers_bench_times_taskforge_enqueues_in_an_empty_database_of_their_own(
    postgres_admin_dsn: str, redis_url: str
) -> None:
    # As pgqueuer's runs are: neither system's table holds the rows of the runs before.
    from taskforge.bench.peers import taskforge_enqueue
    from taskforge.bench.stack import Stack
    from taskforge.entrypoints.config import Settings

    async def scenario() -> tuple[list[float], int, set[str]]:
        settings = Settings.from_env({"POSTGRES_DSN": postgres_admin_dsn, **redis_env(redis_url)})
        stack = Stack(settings)
        await stack.open()
        try:
            before = await _bench_databases(postgres_admin_dsn, "peer")
            figures = [
                await taskforge_enqueue(stack, 1_500, bulk=True),
                await taskforge_enqueue(stack, 20, bulk=False),
            ]
            left = await _bench_databases(postgres_admin_dsn, "peer") - before
            in_the_stack = await stack.pool.fetchval("SELECT count(*) FROM jobs")
        finally:
            await stack.close()
        return [each["seconds"] for each in figures], in_the_stack, left

    seconds, in_the_stack, left = asyncio.run(scenario())

    assert all(each > 0 for each in seconds)
    assert in_the_stack == 0
    assert left == set()


def test_the_bench_reaches_redis_as_the_roles_do_over_tls(
    postgres_admin_dsn: str, tls_redis: PrivateRedis, tls_files: TlsFiles
) -> None:
    # The bench's own client (its ready queue, its checks) takes REDIS_TLS as every role
    # it starts does: it reaches a Redis with only a TLS port.
    from taskforge.bench.stack import Stack
    from taskforge.entrypoints.config import Settings

    async def scenario() -> bool:
        settings = Settings.from_env(
            {
                "POSTGRES_DSN": postgres_admin_dsn,
                "REDIS_ADDR": f"localhost:{tls_redis.port}",
                "REDIS_TLS": "true",
                "REDIS_TLS_CA_FILE": str(tls_files.ca),
            }
        )
        stack = Stack(settings)
        await stack.open()
        try:
            return bool(await stack.redis.ping())
        finally:
            await stack.close()

    assert asyncio.run(scenario())


def test_a_bench_with_redis_tls_at_a_plain_redis_says_so_in_one_line(
    postgres_admin_dsn: str, redis_url: str
) -> None:
    before = asyncio.run(_bench_databases(postgres_admin_dsn))

    finished = _bench(postgres_admin_dsn, redis_url, "--quick", REDIS_TLS="true")

    assert finished.returncode == 2, finished.stderr
    [line] = finished.stderr.splitlines()
    assert line.startswith("taskforge: invalid configuration: REDIS_TLS: the Redis server at ")
    assert "answers without TLS (+PONG): unset REDIS_TLS" in line
    assert asyncio.run(_bench_databases(postgres_admin_dsn)) == before
