"""The transactional enqueue on each driver it takes, against real Postgres (and whole
worker and scheduler processes where a job must run)."""

from tests.integration.processes.conftest import (  # the process stack and its ledger
    ledger_dsn,
    pytest_runtest_makereport,
    stack,
)

__all__ = ["ledger_dsn", "pytest_runtest_makereport", "stack"]
