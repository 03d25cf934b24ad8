"""Fixtures for the fault suite: private Postgres and Redis servers for the module's scenarios.

The suite needs the Postgres server binaries (initdb, pg_ctl, postgres) and redis-server on
this machine, nothing else: it starts its own servers on free ports and removes them. When
they are missing the tests skip with the reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.faults.harness import Services
from tests.servers import ServicesUnavailable, check_available


@pytest.fixture(scope="module")
def fault_services() -> Iterator[Services]:
    try:
        check_available()
    except ServicesUnavailable as exc:
        message = f"fault suite cannot run here: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: the fault suite must run)")
        pytest.skip(message)
    services = Services.start()
    try:
        yield services
    finally:
        services.remove()
