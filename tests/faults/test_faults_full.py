"""The full profile of the fault suite, opt-in: TASKFORGE_FAULTS=full pytest tests/faults.

Every scenario, the storm included (about 7 minutes on two cores). `python -m tests.faults`
runs the same scenarios and prints the invariant tables and the summary.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.harness import Scenario, Services
from tests.faults.runner import assert_scenario_holds
from tests.faults.scenarios import FULL

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("TASKFORGE_FAULTS") != "full",
        reason="the full fault profile is opt-in: set TASKFORGE_FAULTS=full",
    ),
]


@pytest.mark.parametrize("scenario", FULL, ids=[scenario.name for scenario in FULL])
def test_full_scenario_keeps_every_invariant(
    fault_services: Services, scenario: Scenario, tmp_path: Path
) -> None:
    assert_scenario_holds(fault_services, scenario, tmp_path)
