"""The CI profile of the fault suite: three short scenarios on private Postgres and Redis.

ci-crash kills workers with SIGKILL mid-handler and between popping a hint and claiming it;
ci-services flushes Redis under a backlog and restarts Postgres in immediate mode; ci-hung
freezes Redis with SIGSTOP, then black-holes Postgres, and every API answer meanwhile must
come within its deadline. Each must keep every invariant (see invariants.py).
`python -m tests.faults` runs the full profile and prints the tables.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import Scenario, Services
from tests.faults.runner import assert_scenario_holds
from tests.faults.scenarios import CI

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("scenario", CI, ids=[scenario.name for scenario in CI])
def test_scenario_loses_nothing_and_leaves_nothing_stuck(
    fault_services: Services, scenario: Scenario, tmp_path: Path
) -> None:
    assert_scenario_holds(fault_services, scenario, tmp_path)
