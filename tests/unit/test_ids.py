from __future__ import annotations

import copy
import time
import uuid

from domain.ids import new_id, new_ids


def test_ids_are_version_7_and_time_ordered() -> None:
    ids = [new_id() for _ in range(10_000)]

    assert all(i.version == 7 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_an_id_carries_its_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000

    assert before <= made.int >> 80 <= after + 1


def test_ids_made_together_follow_each_other_and_those_made_alone() -> None:
    before = new_id()
    together = new_ids(10_000)
    after = new_id()

    made = [before, *together, after]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in made)
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert new_ids(0) == []


def test_an_id_is_the_uuid_of_its_value() -> None:
    for made in new_ids(100):
        same = uuid.UUID(int=made.int)
        assert (made, hash(made), str(made), made.is_safe) == (
            same,
            hash(same),
            str(same),
            same.is_safe,
        )
        assert copy.deepcopy(made) == same
