"""The jsonb text encoding written in Python, on its own (the database's agreement with
it is checked in tests/integration/test_audit_sealing.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.canonical import digest, digest_without_floats, format_time, jsonb_text, plain_json


def test_keys_go_by_length_in_bytes_then_bytewise() -> None:
    value = {"bb": 1, "a": 2, "é": 3, "ab": 4, "b": 5}

    assert jsonb_text(value) == '{"a": 2, "b": 5, "ab": 4, "bb": 1, "é": 3}'


def test_strings_are_escaped_as_postgresql_escapes_them() -> None:
    assert jsonb_text({"s": 'q"b\\n\n\t\r\b\f\x01\x1f\x7f ü €'}) == (
        '{"s": "q\\"b\\\\n\\n\\t\\r\\b\\f\\u0001\\u001f\x7f ü €"}'
    )


def test_nested_values_and_other_types() -> None:
    value = {
        "list": [1, "two", None, True, {"z": [], "y": {}}],
        "id": uuid.UUID("018f0000-0000-7000-8000-000000000001"),
        "at": datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
        "amount": Decimal("10.50"),
        "big": 10**30,
        "neg": -7,
    }

    assert jsonb_text(value) == (
        '{"at": "2026-01-01T12:00:00.000000Z", "id": "018f0000-0000-7000-8000-000000000001",'
        ' "big": 1000000000000000000000000000000, "neg": -7, "list": [1, "two", null, true,'
        ' {"y": {}, "z": []}], "amount": "10.50"}'
    )


@pytest.mark.parametrize("value", [{"x": 1.5}, {"x": [{"y": 0.1}]}])
def test_floats_are_refused(value: dict[str, object]) -> None:
    with pytest.raises(TypeError, match="floats"):
        plain_json(value)
    with pytest.raises(TypeError, match="floats"):
        jsonb_text(value)


def test_the_nul_character_is_refused() -> None:
    with pytest.raises(ValueError, match="U\\+0000"):
        jsonb_text({"x": "a\x00b"})


@pytest.mark.parametrize(
    "value",
    [
        {"type": "transaction", "data": {"amount": "10.50", "reference": None, "pep": True}},
        {"b": ["é", "日本", "\u2028", 'q"\\'], "a": {"z": 1, "y": [False, None]}},
        {"at": datetime(2026, 3, 1, 9, 30, tzinfo=UTC), "id": uuid.UUID(int=7), "n": Decimal("1")},
    ],
)
def test_the_digest_without_the_float_walk_is_the_same_digest(value: dict[str, object]) -> None:
    # Stored events keep their hashes: a payload hashed either way must match, or a
    # retried event would be refused as a conflict with itself.
    assert digest_without_floats(value) == digest(value)


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.builds(
            timezone, st.timedeltas(min_value=-timedelta(hours=23), max_value=timedelta(hours=23))
        ),
    )
)
def test_a_time_is_written_in_utc_with_microseconds_and_a_z(moment: datetime) -> None:
    utc = moment.astimezone(UTC)
    assert format_time(moment) == utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
