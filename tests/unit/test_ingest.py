"""The ingest use case, over in-memory ports."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from domain.audit import verify_chain
from domain.messages import EVENT_RECEIVED
from services.ingest import BatchTooLarge, Caller, Outcome, ingest_events
from tests.unit.fakes import FakeStore, FakeUnitOfWork

TENANT = uuid.UUID("018f0000-0000-7000-8000-00000000000a")
NOW = datetime(2026, 6, 1, tzinfo=UTC)
CALLER = Caller(TENANT, "integration-a", "graphql", "corr-1")


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


def _factory(store: FakeStore) -> Any:
    return lambda tenant_id: FakeUnitOfWork(store, tenant_id)


async def test_each_new_event_gets_an_audit_record_and_a_message(
    store: FakeStore, transaction_event: Any
) -> None:
    events = [transaction_event(f"k{i}") for i in range(3)]

    results = await ingest_events(_factory(store), CALLER, events, now=NOW)

    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 3
    assert len(store.events) == 3
    assert [r.entry.action for r in store.audit] == ["event.accepted"] * 3
    assert verify_chain(store.audit) == 3
    assert [m.message_type for m in store.outbox] == [EVENT_RECEIVED] * 3
    assert {m.data["eventId"] for m in store.outbox} == {str(r.event_id) for r in results}
    assert store.commits == 1


async def test_a_bad_event_is_answered_alone_and_nothing_of_it_is_stored(
    store: FakeStore, transaction_event: Any
) -> None:
    bad = transaction_event("bad", amount="1.001")

    results = await ingest_events(
        _factory(store), CALLER, [transaction_event("good"), bad], now=NOW
    )

    assert results[0].outcome is Outcome.ACCEPTED
    assert results[1].outcome is Outcome.REJECTED
    assert results[1].rejection is not None
    assert (results[1].rejection.code, results[1].rejection.field) == (
        "INVALID_AMOUNT",
        "data.amount",
    )
    assert set(store.events) == {"good"}


async def test_a_repeated_key_returns_the_original_event(
    store: FakeStore, transaction_event: Any
) -> None:
    first = await ingest_events(_factory(store), CALLER, [transaction_event("k")], now=NOW)
    again = await ingest_events(_factory(store), CALLER, [transaction_event("k")], now=NOW)

    assert again[0].outcome is Outcome.DUPLICATE
    assert again[0].event_id == first[0].event_id
    assert len(store.audit) == 1
    assert len(store.outbox) == 1


async def test_a_repeated_key_with_another_payload_is_a_conflict(
    store: FakeStore, transaction_event: Any
) -> None:
    await ingest_events(_factory(store), CALLER, [transaction_event("k")], now=NOW)
    results = await ingest_events(
        _factory(store), CALLER, [transaction_event("k", amount="999.00")], now=NOW
    )

    assert results[0].outcome is Outcome.REJECTED
    assert results[0].rejection is not None
    assert results[0].rejection.code == "IDEMPOTENCY_CONFLICT"
    assert len(store.events) == 1


async def test_a_key_repeated_inside_one_batch(store: FakeStore, transaction_event: Any) -> None:
    results = await ingest_events(
        _factory(store),
        CALLER,
        [transaction_event("k"), transaction_event("k"), transaction_event("k", amount="1.00")],
        now=NOW,
    )

    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.REJECTED]
    assert results[0].event_id == results[1].event_id
    assert len(store.events) == 1


async def test_subjects_merge_what_events_say_about_them(store: FakeStore) -> None:
    kyc = {
        "idempotencyKey": "kyc",
        "type": "kyc.updated",
        "occurredAt": "2026-02-01T00:00:00Z",
        "data": {
            "subject": {"kind": "account", "ref": "ACC-1"},
            "attributes": {"riskRating": "high"},
        },
    }
    payment = {
        "idempotencyKey": "pay",
        "type": "transaction",
        "occurredAt": "2026-02-02T00:00:00Z",
        "data": {
            "amount": "5.00",
            "currency": "EUR",
            "originator": {"account": "ACC-1", "country": "NL"},
            "beneficiary": {"account": "ACC-2", "country": "BE"},
            "channel": "sepa",
        },
    }

    await ingest_events(_factory(store), CALLER, [kyc, payment], now=NOW)

    attributes = {ref.ref: attrs for ref, (_, attrs) in store.subjects.items()}
    assert attributes["ACC-1"] == {"riskRating": "high", "country": "NL"}
    assert attributes["ACC-2"] == {"country": "BE"}


@pytest.mark.parametrize("size", [0, 1001])
async def test_a_batch_holds_1_to_1000_events(
    store: FakeStore, transaction_event: Any, size: int
) -> None:
    with pytest.raises(BatchTooLarge):
        await ingest_events(_factory(store), CALLER, [transaction_event()] * size, now=NOW)
