from __future__ import annotations

import time

from domain.ids import new_id


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
