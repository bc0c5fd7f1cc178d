"""The ``ingestEvents`` mutation against the real database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.http.base import BaseView
from strawberry.schema import schema as strawberry_schema

from adapters.settings import Settings
from portal import schema as portal_schema
from tests.integration.portal_support import (
    INGEST,
    Portal,
    count_rows,
    error_codes,
    open_portal,
    stored_nothing,
    token,
)


@pytest.fixture
async def portal(settings: Settings) -> AsyncIterator[Portal]:
    async with open_portal(settings) as client:
        yield client


def _ingested(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "vigil_events_ingested_total", {"door": "graphql", "outcome": outcome}
    )
    return value or 0.0


def _counts(payload: dict[str, Any]) -> tuple[int, int, int]:
    return payload["acceptedCount"], payload["duplicateCount"], payload["rejectedCount"]


async def test_a_valid_transaction_is_stored_with_its_audit_record_and_message(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    accepted_before = _ingested("accepted")
    body = await portal.graphql(
        INGEST,
        {"input": {"events": [transaction_event("tx-1")], "clientMutationId": "m-17"}},
        token=token(settings, tenant, subject="payments-hub"),
        headers={"X-Correlation-ID": "corr-42:a.b"},
    )

    payload = body["data"]["ingestEvents"]
    assert payload["clientMutationId"] == "m-17"
    assert _counts(payload) == (1, 0, 0)
    (result,) = payload["results"]
    assert result["__typename"] == "EventAccepted"
    assert (result["index"], result["duplicate"]) == (0, False)
    event_id = uuid.UUID(result["eventId"])
    assert _ingested("accepted") == accepted_before + 1

    async with owner_engine.connect() as connection:
        event = (
            await connection.execute(
                text("SELECT * FROM events WHERE tenant_id = :t"), {"t": tenant}
            )
        ).one()
        audit = (
            await connection.execute(
                text("SELECT * FROM audit_records WHERE tenant_id = :t AND seq = 2"),
                {"t": tenant},
            )
        ).one()
        message = (
            await connection.execute(
                text("SELECT * FROM outbox WHERE tenant_id = :t"), {"t": tenant}
            )
        ).one()

    assert event.event_id == event_id
    assert (event.idempotency_key, event.door, event.actor) == ("tx-1", "graphql", "payments-hub")
    assert event.correlation_id == "corr-42:a.b"
    assert (audit.action, audit.actor, audit.entity_id) == (
        "event.accepted",
        "payments-hub",
        str(event_id),
    )
    assert audit.correlation_id == "corr-42:a.b"
    assert message.message_type == "event.received"
    assert message.envelope["tenantid"] == str(tenant)
    assert message.envelope["correlationid"] == "corr-42:a.b"
    assert message.envelope["data"]["eventId"] == str(event_id)


async def test_the_correlation_id_is_echoed_or_made_when_missing_or_unsafe(
    portal: Portal, settings: Settings, tenant: uuid.UUID
) -> None:
    bearer = {"Authorization": f"Bearer {token(settings, tenant)}"}
    body = {"query": "{ viewer { subject } }"}

    sent = await portal.client.post(
        "/graphql", json=body, headers={**bearer, "X-Correlation-ID": "abc-123"}
    )
    assert sent.headers["X-Correlation-ID"] == "abc-123"

    for unsafe in ("has space", "x" * 101, "new\\nline"):
        made = await portal.client.post(
            "/graphql", json=body, headers={**bearer, "X-Correlation-ID": unsafe}
        )
        assert uuid.UUID(made.headers["X-Correlation-ID"]).version == 7
    missing = await portal.client.post("/graphql", json=body, headers=bearer)
    assert uuid.UUID(missing.headers["X-Correlation-ID"]).version == 7


async def test_a_batch_answers_each_event_on_its_own_and_stores_only_good_ones(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    bad_amount = transaction_event("bad-amount")
    bad_amount["data"]["amount"] = "12.345"
    bad_type = {**transaction_event("bad-type"), "type": "payment"}
    first = transaction_event("good-1")
    events = [first, bad_amount, transaction_event("good-2", amount="9.99"), bad_type, first]

    payload = await portal.ingest(events, token=token(settings, tenant))

    assert [r["__typename"] for r in payload["results"]] == [
        "EventAccepted",
        "EventRejected",
        "EventAccepted",
        "EventRejected",
        "EventAccepted",
    ]
    assert [r["index"] for r in payload["results"]] == [0, 1, 2, 3, 4]
    ok_1, amount, ok_2, kind, again = payload["results"]
    assert (amount["code"], amount["field"]) == ("INVALID_AMOUNT", "data.amount")
    assert (kind["code"], kind["field"]) == ("UNKNOWN_EVENT_TYPE", "type")
    assert amount["message"]
    assert kind["message"]
    assert again == {**ok_1, "index": 4, "duplicate": True}
    assert ok_2["eventId"] != ok_1["eventId"]
    assert _counts(payload) == (2, 1, 2)
    assert await count_rows(owner_engine, "events", tenant) == 2
    assert await count_rows(owner_engine, "outbox", tenant) == 2


async def test_events_written_in_the_document_are_taken_as_from_variables(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    """The input is built from whatever GraphQL checked: literals in the document,
    variables inside them, and no clientMutationId at all."""
    document = """
    mutation($data: JSON!) {
      ingestEvents(input: {events: [
        {idempotencyKey: "inline-1", type: "transaction",
         occurredAt: "2026-03-01T09:30:00+01:00",
         data: {amount: "12.50", currency: "EUR", channel: "sepa",
                originator: {account: "DE89370400440532013000", country: "DE"},
                beneficiary: {account: "FR1420041010050500013M02606", country: "FR"}}},
        {idempotencyKey: "inline-2", type: "transaction",
         occurredAt: "2026-03-01T09:31:00+01:00", data: $data}
      ]}) {
        clientMutationId acceptedCount rejectedCount
        results { ... on EventRejected { index code field } }
      }
    }
    """
    sent = transaction_event("from-variables", amount="12.50")
    body = await portal.graphql(
        document, {"data": {"amount": "1.50"}}, token=token(settings, tenant)
    )

    payload = body["data"]["ingestEvents"]
    assert payload["clientMutationId"] is None
    assert (payload["acceptedCount"], payload["rejectedCount"]) == (1, 1)
    assert payload["results"][1] == {"index": 1, "code": "REQUIRED", "field": "data.currency"}
    await portal.ingest([sent], token=token(settings, tenant))
    async with owner_engine.connect() as connection:
        stored = (
            await connection.execute(
                text("SELECT idempotency_key, payload FROM events WHERE tenant_id = :t"),
                {"t": tenant},
            )
        ).all()
    payloads = {row.idempotency_key: row.payload for row in stored}
    assert payloads["inline-1"]["data"] == {
        **payloads["from-variables"]["data"],
        "reference": None,
    }


async def test_an_event_nested_too_deep_is_refused_on_its_own_in_its_batch(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    deep = transaction_event("deep")
    deep["data"]["reference"] = _nested(20)
    events = [transaction_event("good-1"), deep, transaction_event("good-2")]

    payload = await portal.ingest(events, token=token(settings, tenant))

    good_1, refused, good_2 = payload["results"]
    assert (refused["__typename"], refused["code"], refused["field"]) == (
        "EventRejected",
        "TOO_DEEP",
        "",
    )
    assert good_1["__typename"] == good_2["__typename"] == "EventAccepted"
    assert await count_rows(owner_engine, "events", tenant) == 2


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _event(transaction_event: Any, change: Any) -> dict[str, Any]:
    event: dict[str, Any] = transaction_event()
    change(event)
    return event


def _set(path: str, value: object) -> Any:
    *parents, leaf = path.split(".")

    def change(event: dict[str, Any]) -> None:
        target = event
        for name in parents:
            target = target[name]
        target[leaf] = value

    return change


def _drop(path: str) -> Any:
    *parents, leaf = path.split(".")

    def change(event: dict[str, Any]) -> None:
        target = event
        for name in parents:
            target = target[name]
        del target[leaf]

    return change


BAD_EVENTS = [
    ("float amount", _set("data.amount", 125.5), "INVALID_AMOUNT", "data.amount"),
    ("negative amount", _set("data.amount", "-3.00"), "INVALID_AMOUNT", "data.amount"),
    ("too many decimals", _set("data.amount", "1.001"), "INVALID_AMOUNT", "data.amount"),
    ("unknown currency", _set("data.currency", "XYZ"), "INVALID_CURRENCY", "data.currency"),
    ("naive time", _set("occurredAt", "2026-03-01T09:30:00"), "NAIVE_TIME", "occurredAt"),
    ("not a time", _set("occurredAt", "yesterday"), "INVALID_TIME", "occurredAt"),
    ("far future", _set("occurredAt", "2999-01-01T00:00:00Z"), "TIME_IN_FUTURE", "occurredAt"),
    ("unknown field", _set("data.colour", "red"), "UNKNOWN_FIELD", "data.colour"),
    ("unknown type", _set("type", "payment"), "UNKNOWN_EVENT_TYPE", "type"),
    ("long reference", _set("data.reference", "r" * 141), "TOO_LONG", "data.reference"),
    (
        "reference reordered",
        _set("data.reference", "invoice \u202e24"),
        "INVALID_FORMAT",
        "data.reference",
    ),
    ("amount with a newline", _set("data.amount", "1.00\n"), "INVALID_AMOUNT", "data.amount"),
    ("week date", _set("occurredAt", "2026-W09-1T09:30:00Z"), "INVALID_TIME", "occurredAt"),
    ("missing amount", _drop("data.amount"), "REQUIRED", "data.amount"),
    ("data not an object", _set("data", ["amount"]), "INVALID_TYPE", "data"),
    ("empty key", _set("idempotencyKey", " "), "REQUIRED", "idempotencyKey"),
    ("key with a space", _set("idempotencyKey", "a b"), "INVALID_FORMAT", "idempotencyKey"),
    (
        "unknown country",
        _set("data.originator.country", "QQ"),
        "INVALID_COUNTRY",
        "data.originator.country",
    ),
    (
        "one account on both sides",
        _set("data.beneficiary.account", "DE89370400440532013000"),
        "INVALID_VALUE",
        "data.beneficiary.account",
    ),
]


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_EVENTS],
)
async def test_a_bad_event_is_rejected_with_its_code_and_field_and_nothing_is_stored(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    transaction_event: Any,
    change: Any,
    code: str,
    field: str,
) -> None:
    rejected_before = _ingested("rejected")

    payload = await portal.ingest(
        [_event(transaction_event, change)], token=token(settings, tenant)
    )

    (result,) = payload["results"]
    assert result["__typename"] == "EventRejected"
    assert (result["code"], result["field"]) == (code, field)
    assert payload["rejectedCount"] == 1
    assert _ingested("rejected") == rejected_before + 1
    assert await stored_nothing(owner_engine, tenant)


# What the schema itself refuses is answered for the whole request: GraphQL checks the
# envelope (EventInput) before any resolver runs.
BAD_REQUESTS = [
    ("missing data", _drop("data")),
    ("null data", _set("data", None)),
    ("missing key", _drop("idempotencyKey")),
    ("unknown top-level field", _set("colour", "red")),
    ("time not a string", _set("occurredAt", 1700000000)),
]


@pytest.mark.parametrize("change", [pytest.param(c, id=name) for name, c in BAD_REQUESTS])
async def test_an_event_outside_the_schema_is_a_bad_request_and_nothing_is_stored(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    transaction_event: Any,
    change: Any,
) -> None:
    events = [transaction_event(), _event(transaction_event, change)]

    body = await portal.graphql(
        INGEST, {"input": {"events": events}}, token=token(settings, tenant)
    )

    assert body["data"] is None
    assert error_codes(body) == ["BAD_REQUEST"]
    assert await stored_nothing(owner_engine, tenant)


@pytest.mark.parametrize("size", [0, 1001])
async def test_a_batch_of_the_wrong_size_is_a_bad_request(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    transaction_event: Any,
    size: int,
) -> None:
    events = [transaction_event() for _ in range(size)]

    body = await portal.graphql(
        INGEST, {"input": {"events": events}}, token=token(settings, tenant)
    )

    (error,) = body["errors"]
    assert error["extensions"] == {"code": "BAD_REQUEST", "field": "input.events"}
    assert "1 to 1000" in error["message"]
    assert await stored_nothing(owner_engine, tenant)


async def test_concurrent_sends_of_one_key_make_one_event(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    transaction_event: Any,
) -> None:
    bearer = token(settings, tenant)
    event = transaction_event("same-key")

    payloads = await asyncio.gather(*(portal.ingest([event], token=bearer) for _ in range(50)))

    results = [payload["results"][0] for payload in payloads]
    assert {result["__typename"] for result in results} == {"EventAccepted"}
    assert len({result["eventId"] for result in results}) == 1
    assert sorted(result["duplicate"] for result in results) == [False] + [True] * 49
    assert await count_rows(owner_engine, "events", tenant) == 1
    assert await count_rows(owner_engine, "outbox", tenant) == 1
    assert await count_rows(owner_engine, "audit_records", tenant) == 2

    conflicting = transaction_event("same-key", amount="999.00")
    payload = await portal.ingest([conflicting], token=bearer)

    (result,) = payload["results"]
    assert (result["code"], result["field"]) == ("IDEMPOTENCY_CONFLICT", "idempotencyKey")
    assert await count_rows(owner_engine, "events", tenant) == 1
    assert await count_rows(owner_engine, "outbox", tenant) == 1
    assert await count_rows(owner_engine, "audit_records", tenant) == 2
    async with owner_engine.connect() as connection:
        amount = await connection.scalar(
            text("SELECT amount FROM events WHERE tenant_id = :t"), {"t": tenant}
        )
    assert str(amount) == "125.5000"


async def test_an_ingest_request_takes_no_trip_through_a_worker_thread(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    transaction_event: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each request used to build its empty sub-response in the default executor: a
    thread hop, with its wake-ups and its lock on the interpreter, per request."""
    loop = asyncio.get_running_loop()
    handed: list[object] = []
    original = loop.run_in_executor

    def run_in_executor(executor: Any, func: Any, *args: Any) -> Any:
        handed.append(func)
        return original(executor, func, *args)

    monkeypatch.setattr(loop, "run_in_executor", run_in_executor)
    body = await portal.graphql(
        INGEST,
        {"input": {"events": [transaction_event()]}},
        token=token(settings, tenant),
    )

    assert body["data"]["ingestEvents"]["acceptedCount"] == 1
    assert handed == []


async def test_a_request_body_is_decoded_once(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    transaction_event: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The middleware decodes every JSON body to check it; GraphQL then takes that value
    rather than decoding the same bytes again (a batch of events is most of a body)."""
    decoded_again: list[object] = []
    original = BaseView.decode_json

    def decode_json(self: BaseView, data: str | bytes) -> object:
        decoded_again.append(data)
        return original(self, data)

    monkeypatch.setattr(BaseView, "decode_json", decode_json)
    body = await portal.graphql(
        INGEST,
        {"input": {"events": [transaction_event(), transaction_event()]}},
        token=token(settings, tenant),
    )

    assert body["data"]["ingestEvents"]["acceptedCount"] == 2
    assert decoded_again == []


async def test_a_document_is_parsed_once_and_a_bad_one_refused_every_time(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    transaction_event: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed: list[str] = []
    original = strawberry_schema.parse

    def parse(source: Any, **options: Any) -> Any:
        parsed.append(str(source))
        return original(source, **options)

    monkeypatch.setattr(strawberry_schema, "parse", parse)
    bearer = token(settings, tenant)
    for _ in range(3):
        body = await portal.graphql(
            INGEST, {"input": {"events": [transaction_event()]}}, token=bearer
        )
        assert body["data"]["ingestEvents"]["acceptedCount"] == 1
    # A syntax error is never kept: each request fails on it, with its code.
    broken = "mutation { ingestEvents(input: "
    for _ in range(2):
        refused = await portal.graphql(broken, token=bearer)
        assert error_codes(refused) == ["BAD_REQUEST"]

    assert parsed == [INGEST, broken, broken]


async def test_an_ingest_request_makes_no_reader(
    portal: Portal,
    settings: Settings,
    tenant: uuid.UUID,
    transaction_event: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reader (a read session and its DataLoaders) is made on a request's first read;
    ingest reads nothing, so it made one per request for nothing."""
    made: list[object] = []

    class CountedReader(portal_schema.Reader):
        def __init__(self, *args: Any) -> None:
            made.append(args)
            super().__init__(*args)

    monkeypatch.setattr(portal_schema, "Reader", CountedReader)
    body = await portal.graphql(
        INGEST, {"input": {"events": [transaction_event()]}}, token=token(settings, tenant)
    )
    viewer = await portal.graphql("{ viewer { subject } }", token=token(settings, tenant))

    assert body["data"]["ingestEvents"]["acceptedCount"] == 1
    assert viewer["data"]["viewer"]["subject"]
    assert made == []
