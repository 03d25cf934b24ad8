"""The real id source: time-ordered, and never shared between a process and its fork."""

from __future__ import annotations

import os

from taskforge.adapters.system import Uuid7Source


def test_ids_are_version_7_and_sort_in_creation_order() -> None:
    source = Uuid7Source()
    ids = [source.new_id() for _ in range(5000)]

    assert all(job_id.version == 7 for job_id in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_draws_different_random_bits() -> None:
    source = Uuid7Source()
    parent_state = source._random.getstate()

    child = os.fork()
    if child == 0:
        os._exit(0 if source._random.getstate() != parent_state else 1)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0
