"""Pictures of a bench report, as PNG files next to its JSON.

matplotlib is an optional dependency (the `bench` extra): it is imported only here, only
when a picture is drawn, and without it the bench still runs and says how to get it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MISSING = (
    "pictures skipped: matplotlib is not installed "
    "(pip install 'taskforge[bench]', or uv sync --extra bench)"
)


class ChartsUnavailable(RuntimeError):
    """matplotlib cannot be imported; the message says how to install it."""


def _figure(rows: int, columns: int, title: str) -> Figure:
    try:
        import matplotlib as mpl

        mpl.use("Agg")  # files only: no display needed or wanted
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ChartsUnavailable(MISSING) from exc
    figure = Figure(figsize=(6 * columns, 3.6 * rows), layout="constrained")
    figure.suptitle(title)
    return figure


def _histogram(axes: Axes, values_or_bins: Any, label: str) -> None:
    if isinstance(values_or_bins, dict):  # edges and counts from the report
        edges, counts = values_or_bins["edges_ms"], values_or_bins["counts"]
        if counts:
            axes.stairs(counts, edges, label=label, fill=False)
    elif values_or_bins:
        low = max(min(values_or_bins), 0.1)
        high = max(max(values_or_bins), low * 10)
        edges = [low * (high / low) ** (index / 50) for index in range(51)]
        axes.hist(values_or_bins, bins=edges, histtype="step", label=label)
    _log_milliseconds(axes)
    axes.set_xlabel("enqueue -> start (ms)")
    axes.set_ylabel("jobs")


def _log_milliseconds(axes: Axes) -> None:
    """A logarithmic x axis labelled 1, 2, 5, 10, 20, 50...: matplotlib's own labels of a
    range under a decade or two are its minor ticks in 10^x notation, printed over each
    other."""
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())


def draw_scale(report: dict[str, Any], path: Path) -> Path:
    """p99 of every read, dashboard page and sweep on the empty and the big tables against the
    targets (50 ms, pages 150 ms),
    the drain rates, and the enqueue->start latency histograms."""
    stored = report["stored"]
    figure = _figure(
        2,
        2,
        f"TaskForge on big tables: {stored['jobs']:,} jobs, {stored['dead_letters']:,} dead "
        f"letters ({report['measured_at']}, shared machine)",
    )
    bars, drains, histogram, latency = figure.subplots(2, 2).flat
    big_label = f"{stored['jobs']:,} jobs"
    sides = (("empty", "empty"), (big_label, "big"))
    names = list(report["big"]["timings"])
    positions = range(len(names))
    for offset, (label, side) in enumerate(sides):
        bars.barh(
            [p + offset * 0.4 for p in positions],
            [report[side]["timings"][name]["p99_ms"] for name in names],
            height=0.4,
            label=label,
        )
    queue = report.get("queue", "")
    shown = [n.removeprefix("GET ").replace(queue, "Q") if queue else n for n in names]
    bars.set_yticks([p + 0.2 for p in positions], shown)
    bars.tick_params(axis="y", labelsize=7)
    bars.invert_yaxis()
    bars.axvline(50, color="red", linestyle="--", label="target 50 ms")
    bars.axvline(150, color="purple", linestyle=":", label="dashboard pages 150 ms")
    bars.set_xlabel("p99 (ms)")
    bars.set_title("reads and sweeps, p99 (Q: a queue of the big tables)", fontsize=10)
    bars.legend(fontsize=8)
    drains.bar(
        [label for label, _ in sides],
        [report[side]["drain"]["jobs_per_second"] for _, side in sides],
        color=["tab:blue", "tab:orange"],
    )
    drains.set_ylabel("jobs/s")
    drains.set_title(f"drain of {report['empty']['drain']['jobs']:,} no-op jobs, 1 worker")
    for label, side in sides:
        _histogram(histogram, report[side]["start_latency_ms"], label)
    histogram.legend(fontsize=8)
    histogram.set_title(f"enqueue -> start at {report['sizes']['latency_rate']:g} jobs/s")
    for offset, (label, side) in enumerate(sides):
        figures = report[side]["latency"]
        latency.bar(
            [offset * 0.4, 1 + offset * 0.4],
            [figures["start_p50_ms"], figures["start_p99_ms"]],
            width=0.4,
            label=label,
        )
    latency.set_xticks([0.2, 1.2], ["p50", "p99"])
    latency.set_ylabel("ms")
    latency.set_title("enqueue -> start")
    latency.legend(fontsize=8)
    figure.savefig(path, dpi=90)
    return path


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def draw_soak(report: dict[str, Any], path: Path) -> Path:
    """Throughput, latency, resident memory, table sizes and Redis memory over the soak,
    and the latency histogram of the whole run."""
    samples = report["samples"]
    at = [sample["at"] / 60 for sample in samples]
    settings = report["settings"]
    figure = _figure(
        3,
        2,
        f"TaskForge soak: {settings['rate']:,.0f} jobs/s for {_duration(settings['duration'])}, "
        f"retention {settings['retention']:g} s, autovacuum {report.get('autovacuum', 'on')} "
        "(shared machine)",
    )
    throughput, latency, rss, sizes, redis, histogram = figure.subplots(3, 2).flat
    throughput.plot(at, [s["finished_per_second"] for s in samples], label="finished")
    throughput.plot(at, [s["enqueued_per_second"] for s in samples], label="enqueued", alpha=0.6)
    throughput.set_ylabel("jobs/s")
    throughput.set_title("throughput")
    throughput.legend(fontsize=8)
    latency.plot(at, [s["start_p50_ms"] for s in samples], label="p50")
    latency.plot(at, [s["start_p99_ms"] for s in samples], label="p99")
    latency.set_ylabel("ms")
    latency.set_title("enqueue -> start")
    latency.legend(fontsize=8)
    for name in samples[0]["rss_mib"] if samples else []:
        rss.plot(at, [s["rss_mib"][name] for s in samples], label=name)
    rss.set_ylabel("MiB")
    rss.set_title("resident memory per process")
    rss.legend(fontsize=8)
    for table in ("jobs", "dead_letters", "job_counts"):
        sizes.plot(
            at,
            [
                (s["table_bytes"].get(table, 0) + s["index_bytes"].get(table, 0)) / 2**20
                for s in samples
            ],
            label=f"{table} (+ indexes)",
        )
    sizes.set_ylabel("MiB")
    sizes.set_title("table and index sizes")
    sizes.legend(fontsize=8)
    dead = sizes.twinx()
    dead.plot(at, [s["dead_tuples"].get("jobs", 0) for s in samples], color="grey", alpha=0.4)
    dead.set_ylabel("dead tuples in jobs (grey)")
    redis.plot(at, [s["redis_used_bytes"] / 2**20 for s in samples])
    redis.set_ylabel("MiB")
    redis.set_title("Redis used memory")
    for axes in (throughput, latency, rss, sizes, redis):
        axes.set_xlabel("minutes")
    whole = report["start_latency_ms"]
    _histogram(histogram, whole, "whole run")
    histogram.set_title(
        f"enqueue -> start, {whole['jobs']:,} jobs: p50 {whole['p50_ms']:.1f} ms, "
        f"p99 {whole['p99_ms']:.1f} ms"
    )
    figure.savefig(path, dpi=90)
    return path


def draw_runs(report: dict[str, Any], path: Path) -> Path:
    """The standard scenarios: the jobs per second of each scenario timed for its rate
    (each run's figure as a dot when several runs were taken); the latency scenarios'
    enqueue->start and ->finish percentiles; the start-up times against their targets."""
    results = report["results"]
    rates = [row for row in results if "start_p50_ms" not in row and "target_seconds" not in row]
    latencies = [row for row in results if "start_p50_ms" in row]
    startups = [row for row in results if "target_seconds" in row]
    figure = _figure(2, 2, "TaskForge bench (shared machine)")
    figure.set_figheight(3.6 + 0.22 * len(rates))
    panels = figure.subplot_mosaic([["rates", "rates"], ["latency", "startup"]])
    _rates(panels["rates"], rates, report.get("runs", []))
    _latencies(panels["latency"], latencies)
    _startups(panels["startup"], startups)
    figure.savefig(path, dpi=90)
    return path


def _rates(axes: Axes, rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
    names = [row["name"] for row in rows]
    axes.barh(names, [row["jobs_per_second"] for row in rows])
    for run in runs:
        by_name = {row["name"]: row["jobs_per_second"] for row in run["results"]}
        axes.plot([by_name[name] for name in names], names, "k.", markersize=4)
    axes.invert_yaxis()
    axes.tick_params(axis="y", labelsize=8)
    axes.set_xlabel("jobs/s")
    title = "throughput (bars: medians; dots: each run)" if runs else "throughput"
    axes.set_title(title, fontsize=10)


def _latencies(axes: Axes, rows: list[dict[str, Any]]) -> None:
    marks = [f"{leg}_{p}" for leg in ("start", "finish") for p in ("p50", "p95", "p99")]
    width = 0.8 / max(len(rows), 1)
    for offset, row in enumerate(rows):
        axes.bar(
            [index + offset * width for index in range(len(marks))],
            [row.get(f"{mark}_ms", float("nan")) for mark in marks],  # NaN: no bar
            width=width,
            label=row["name"],
        )
    axes.set_xticks(
        [index + width * (len(rows) - 1) / 2 for index in range(len(marks))],
        [mark.replace("_", " ") for mark in marks],
        fontsize=8,
    )
    axes.set_ylabel("ms")
    axes.set_title("enqueue -> start and -> finish", fontsize=10)
    if rows:
        axes.legend(fontsize=7)


def _startups(axes: Axes, rows: list[dict[str, Any]]) -> None:
    names = [row["name"].partition(":")[0] for row in rows]
    axes.bar(names, [row["seconds"] for row in rows], color="tab:green")
    axes.plot(names, [row["target_seconds"] for row in rows], "r_", markersize=40, label="target")
    axes.tick_params(axis="x", labelsize=8)
    axes.set_ylabel("seconds")
    axes.set_title("start-up (median of the tries)", fontsize=10)
    if rows:
        axes.legend(fontsize=8)


def save_picture(draw: Any, report: dict[str, Any], path: Path) -> str:
    """Draw `report` into `path` with `draw`; the line to print about it, also when
    matplotlib is missing (then the picture is skipped, never the report)."""
    try:
        _figure(1, 1, "")  # matplotlib importable? Checked before `draw` reads the report.
        draw(report, path)
    except ChartsUnavailable as exc:
        return str(exc)
    return f"picture written to {path}"
