"""Reading Prometheus text output in tests: every sample as (name, labels, value)."""

from __future__ import annotations

import re
from dataclasses import dataclass

SPEC_METRICS_PER_QUEUE = frozenset(
    {
        "taskforge_queue_depth",
        "taskforge_job_attempts_total",
        "taskforge_job_success_total",
        "taskforge_job_failure_total",
        "taskforge_job_runtime_seconds_bucket",
        "taskforge_job_time_in_queue_seconds_bucket",
        "taskforge_worker_utilization",
        "taskforge_worker_concurrency_throttled_total",
        "taskforge_worker_rate_throttled_total",
    }
)
"""The spec's metrics with a queue label; the tenth, taskforge_dlq_count, has none."""

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_samples(text: str) -> list[Sample]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match is not None, f"not a Prometheus sample line: {line!r}"
        labels = dict(_LABEL.findall(match["labels"] or ""))
        samples.append(Sample(match["name"], labels, float(match["value"])))
    return samples


def value_of(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample with this name and exactly these labels, or None."""
    found = [s.value for s in parse_samples(text) if s.name == name and s.labels == labels]
    assert len(found) <= 1, f"{len(found)} samples of {name}{labels}"
    return found[0] if found else None


def names_with_label(text: str, label: str, value: str) -> set[str]:
    """The names of the samples that carry `label="value"`."""
    return {s.name for s in parse_samples(text) if s.labels.get(label) == value}
