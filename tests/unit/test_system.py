"""The real id source: time-ordered, and never shared between a process and its fork."""

from __future__ import annotations

import os
import pickle
from uuid import RFC_4122, UUID

from taskforge.adapters.system import Uuid7Source


def test_ids_are_version_7_and_sort_in_creation_order() -> None:
    source = Uuid7Source()
    ids = [source.new_id() for _ in range(5000)]

    assert all(job_id.version == 7 for job_id in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_ids_made_in_one_call_sort_in_order_and_after_the_ones_before() -> None:
    # More than the 4,096 a millisecond's counter holds, so a batch crosses into the next.
    source = Uuid7Source()
    before = source.new_id()
    batch = source.new_ids(5000)
    after = source.new_id()

    ids = [before, *batch, after]
    assert all(job_id.version == 7 for job_id in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert source.new_ids(0) == []


def test_ids_behave_exactly_like_uuids_built_by_the_constructor() -> None:
    job_id = Uuid7Source().new_id()
    built = UUID(int=job_id.int)

    assert type(job_id) is UUID
    assert (job_id, hash(job_id), str(job_id), job_id.is_safe) == (
        built,
        hash(built),
        str(built),
        built.is_safe,
    )
    assert job_id.variant == RFC_4122
    assert pickle.loads(pickle.dumps(job_id)) == job_id


def test_a_forked_child_draws_different_random_bits() -> None:
    source = Uuid7Source()
    parent_state = source._random.getstate()

    child = os.fork()
    if child == 0:
        os._exit(0 if source._random.getstate() != parent_state else 1)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0
