"""The audit chain detects a changed, missing or reordered record."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import pytest

from domain.audit import GENESIS, AuditEntry, seal, verify_chain
from domain.canonical import canonical_bytes
from domain.errors import AuditChainBroken
from domain.ids import new_id

TENANT = uuid.UUID("018f0000-0000-7000-8000-000000000001")
WHEN = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _entries(count: int) -> list[AuditEntry]:
    return [
        AuditEntry(new_id(), "alice", "event.accepted", "event", str(i), "c-1", {"n": i})
        for i in range(count)
    ]


def test_a_sealed_chain_verifies() -> None:
    records = seal(TENANT, _entries(5), last_seq=0, last_hash=GENESIS, recorded_at=WHEN)

    assert verify_chain(records) == 5
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]


def test_a_chain_continues_from_its_head() -> None:
    first = seal(TENANT, _entries(2), last_seq=0, last_hash=GENESIS, recorded_at=WHEN)
    more = seal(TENANT, _entries(2), last_seq=2, last_hash=first[-1].hash, recorded_at=WHEN)

    assert verify_chain(first + more) == 4


def test_a_changed_record_is_detected() -> None:
    records = seal(TENANT, _entries(3), last_seq=0, last_hash=GENESIS, recorded_at=WHEN)
    forged = dataclasses.replace(records[1].entry, actor="mallory")
    records[1] = dataclasses.replace(records[1], entry=forged)

    with pytest.raises(AuditChainBroken) as raised:
        verify_chain(records)

    assert raised.value.seq == 2


def test_a_missing_record_is_detected() -> None:
    records = seal(TENANT, _entries(3), last_seq=0, last_hash=GENESIS, recorded_at=WHEN)

    with pytest.raises(AuditChainBroken) as raised:
        verify_chain([records[0], records[2]])

    assert raised.value.seq == 2


def test_a_rehashed_forgery_breaks_the_next_link() -> None:
    records = seal(TENANT, _entries(3), last_seq=0, last_hash=GENESIS, recorded_at=WHEN)
    forged = seal(
        TENANT,
        [dataclasses.replace(records[1].entry, actor="mallory")],
        last_seq=1,
        last_hash=records[0].hash,
        recorded_at=WHEN,
    )

    with pytest.raises(AuditChainBroken) as raised:
        verify_chain([records[0], forged[0], records[2]])

    assert raised.value.seq == 3


def test_canonical_bytes_do_not_depend_on_key_order() -> None:
    assert canonical_bytes({"b": 1, "a": [1, "x"]}) == canonical_bytes({"a": [1, "x"], "b": 1})


def test_canonical_bytes_refuse_floats() -> None:
    with pytest.raises(TypeError):
        canonical_bytes({"amount": 1.5})


def test_a_chain_of_both_hash_schemes_verifies() -> None:
    first = seal(TENANT, _entries(2), last_seq=0, last_hash=GENESIS, recorded_at=WHEN, scheme=1)
    later = seal(
        TENANT, _entries(2), last_seq=2, last_hash=first[-1].hash, recorded_at=WHEN, scheme=2
    )

    assert [record.scheme for record in first + later] == [1, 1, 2, 2]
    assert verify_chain(first + later) == 4


@pytest.mark.parametrize("scheme", [1, 2])
def test_a_changed_record_of_either_scheme_is_detected(scheme: int) -> None:
    records = seal(
        TENANT, _entries(3), last_seq=0, last_hash=GENESIS, recorded_at=WHEN, scheme=scheme
    )
    changed = dataclasses.replace(
        records[1], entry=dataclasses.replace(records[1].entry, details={"n": 99})
    )

    with pytest.raises(AuditChainBroken) as raised:
        verify_chain([records[0], changed, records[2]])
    assert raised.value.seq == 2


def test_a_record_claiming_another_scheme_is_detected() -> None:
    records = seal(TENANT, _entries(2), last_seq=0, last_hash=GENESIS, recorded_at=WHEN)

    for other in (1, 7):
        with pytest.raises(AuditChainBroken) as raised:
            verify_chain([records[0], dataclasses.replace(records[1], scheme=other)])
        assert raised.value.seq == 2
