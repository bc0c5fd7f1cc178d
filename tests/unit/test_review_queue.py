"""Cursors and filters of the live review queue."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from domain.review_queue import CaseChange, Cursor, InvalidCursor, ReviewFilter


def change(change_type: str = "case.opened", **data: Any) -> CaseChange:
    return CaseChange(7, change_type, "case-1", datetime(2026, 3, 1, tzinfo=UTC), data)


@pytest.mark.parametrize("position", [0, 1, 42, 2**63 - 1])
def test_a_cursor_reads_back_as_the_position_it_was_made_from(position: int) -> None:
    encoded = Cursor(position).encode()
    assert str(position) not in encoded  # opaque: clients do not build their own
    assert Cursor.decode(encoded) == Cursor(position)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "42",
        "cnExOg",  # rq1: with no position
        "cnExOi0x",  # rq1:-1
        "cnExOjF4",  # rq1:1x
        "eHg6MQ",  # xx:1
        "!!!",
        "A" * 65,
        "cnExOjkyMjMzNzIwMzY4NTQ3NzU4MDg",  # rq1:2**63, past a bigint
        Cursor(1).encode() + "\u00e9",
    ],
)
def test_anything_but_a_cursor_the_queue_gave_is_refused(text: str) -> None:
    with pytest.raises(InvalidCursor):
        Cursor.decode(text)


def test_an_empty_filter_takes_every_change_even_of_unknown_types() -> None:
    assert ReviewFilter().matches(change("case.something_new"))


def test_a_filter_takes_a_change_whose_fields_hold_one_of_its_values() -> None:
    wanted = ReviewFilter(bands=frozenset({"high", "critical"}), statuses=frozenset({"open"}))
    assert wanted.matches(change(band="high", status="open"))
    assert not wanted.matches(change(band="low", status="open"))
    assert not wanted.matches(change(band="high", status="closed"))


def test_a_change_without_a_filtered_field_does_not_match_it() -> None:
    assert not ReviewFilter(assignees=frozenset({"ana"})).matches(change(band="high"))
    assert not ReviewFilter(queues=frozenset({"1"})).matches(change(queue=["1"]))
    assert ReviewFilter(queues=frozenset({"1"})).matches(change(queue=1))
    assert not ReviewFilter(queues=frozenset({"True"})).matches(change(queue=True))
