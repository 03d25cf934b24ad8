"""taskforge-cli's views of the API's resources, as plain text."""

from __future__ import annotations

from taskforge.cli.render import _policy


def test_a_policy_reads_its_numbers_in_full_never_in_exponent_form() -> None:
    job = {
        "initialDelay": 1.0,
        "backoff": 1_000_000.0,
        "maxDelay": 315_360_000.0,
        "jitter": False,
        "visibilityTimeout": 30.0,
        "timeout": 0,
    }

    assert _policy(job) == (
        "backoff 1s x1000000 up to 87600h00m, no jitter; visibility timeout 30s"
    )
