"""Plain-text tables: per scenario the invariants and the faults, then one summary row each."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from tests.faults.harness import ScenarioResult


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    line = "+".join("-" * (width + 2) for width in widths)

    def render(cells: Sequence[str]) -> str:
        return "|".join(f" {cell!s:<{width}} " for cell, width in zip(cells, widths, strict=True))

    return "\n".join([render(headers), line, *(render(row) for row in rows)])


def _mark(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def scenario_report(result: ScenarioResult) -> str:
    lines = [f"== {result.name}: {result.summary} (seed {result.seed}, {result.duration:.0f}s)"]
    rows = [[v.name, _mark(v.ok), v.detail] for v in result.verdicts]
    rows += [[c.name, _mark(c.ok), c.detail.replace("\n", " ")[:300]] for c in result.checks]
    lines.append(table(["invariant / check", "result", "detail"], rows))
    failures = [v for v in result.verdicts if not v.ok]
    for verdict in failures:
        lines.append(f"-- {verdict.name}: {verdict.count} violation(s), e.g.")
        lines += [f"   {example}" for example in verdict.violations]
    if result.faults:
        fault_rows = [
            [
                f"+{record.offset:.1f}s",
                record.kind,
                record.target,
                str(len(record.victims)) if record.victims else "-",
                _seconds(record.recovery),
                record.basis,
                record.note[:80],
            ]
            for record in result.faults
        ]
        headers = ["at", "fault", "target", "victims", "recovery", "measured as", "note"]
        lines.append(table(headers, fault_rows))
    lines.append(f"logs: {result.logs}")
    return "\n".join(lines)


def fault_counts(results: Sequence[ScenarioResult]) -> Counter[str]:
    return Counter(record.kind for result in results for record in result.faults)


def summary(results: Sequence[ScenarioResult]) -> str:
    rows = []
    for result in results:
        t = result.tally
        kinds = Counter(record.kind for record in result.faults)
        recoveries = [r.recovery for r in result.faults if r.recovery is not None]
        rows.append(
            [
                result.name,
                str(t.accepted),
                str(sum(kinds.values())),
                str(t.executions),
                f"{t.reruns} ({t.reruns_after_success})",
                str(t.overlaps),
                str(t.lost),
                str(t.stuck),
                str(t.dead_letters),
                _seconds(max(recoveries) if recoveries else None),
                _seconds(result.drain),
                "PASS" if result.ok else "FAIL",
            ]
        )
    totals = [sum(int(row[i].split()[0]) for row in rows) for i in (1, 2, 3, 4, 5, 6, 7, 8)]
    rows.append(
        ["total", *(str(value) for value in totals[:3]), str(totals[3]), *map(str, totals[4:]),
         "", "", "PASS" if all(r.ok for r in results) else "FAIL"]
    )  # fmt: skip
    headers = [
        "scenario",
        "accepted",
        "faults",
        "executions",
        "re-runs (of finished)",
        "overlaps",
        "lost",
        "stuck",
        "DLQ",
        "max recovery",
        "drain",
        "verdict",
    ]
    by_kind: dict[str, list[float]] = {}
    for result in results:
        for record in result.faults:
            by_kind.setdefault(record.kind, [])
            if record.recovery is not None:
                by_kind[record.kind].append(record.recovery)
    counts = fault_counts(results)
    kind_rows = [
        [kind, str(counts[kind]), _seconds(max(values) if values else None)]
        for kind, values in sorted(by_kind.items())
    ]
    return "\n".join(
        [
            table(headers, rows),
            "",
            table(["fault kind", "injected", "max recovery"], kind_rows),
        ]
    )
