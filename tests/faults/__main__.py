"""`python -m tests.faults [--profile full|ci] [--scenario NAME ...] [--seed N] [--logs DIR]`

Runs the fault-injection suite on private Postgres and Redis servers it starts and removes
itself, prints an invariant table per scenario and a summary, and exits 1 if any invariant
or check failed (2 when the servers cannot be started here).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.faults.runner import DEFAULT_SEED, run_scenarios
from tests.faults.scenarios import PROFILES, by_name
from tests.servers import ServicesUnavailable, check_available


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument(
        "--scenario", action="append", default=[], help="run only these (repeatable)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--logs", type=Path, default=None, help="where process logs go")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        for profile, scenarios in PROFILES.items():
            for scenario in scenarios:
                print(f"{profile:5} {scenario.name:13} {scenario.summary}")
        return 0
    try:
        check_available()
    except ServicesUnavailable as exc:
        print(f"cannot run the fault suite: {exc}", file=sys.stderr)
        return 2
    scenarios = by_name(args.scenario) if args.scenario else PROFILES[args.profile]
    results = run_scenarios(scenarios, seed=args.seed, logs=args.logs)
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
