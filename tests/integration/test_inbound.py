"""The inbound-queue consumer against the real RabbitMQ and PostgreSQL.

Each test runs a consumer in-process on its own connection, publishes to the inbound
queue as an integration would, and checks what was stored, what reached the dead-letter
queue, and that nothing was left on the inbound queue once the consumer stopped (a
message it had not acknowledged would be back there).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from adapters.audit_trail import verify
from adapters.broker import DELIVERY_LIMIT, Names
from adapters.database import make_engine
from adapters.ingest_store import ingest_unit_of_work_factory
from adapters.settings import Settings
from domain.ports import IngestUnitOfWorkFactory
from tests.integration.inbound_support import (
    NOTHING,
    ONCE,
    SOURCE,
    Broker,
    Outcomes,
    Stored,
    TcpProxy,
    cloud_event,
    encode,
    stored,
    stored_event,
)
from workers.consumer import Backoff
from workers.envelope import read_envelope
from workers.inbound_consumer import InboundConsumer

FAST = Backoff(first_seconds=0.05, max_seconds=0.2)


@pytest.fixture
async def broker(amqp: AbstractRobustConnection, names: Names) -> Broker:
    broker = Broker(amqp, names)
    await broker.purge()
    return broker


Run = Callable[..., Any]


@pytest.fixture
def consuming(settings: Settings, names: Names, ingest_uow_factory: IngestUnitOfWorkFactory) -> Run:
    """``async with consuming(): ...`` runs a consumer for the duration of the block."""

    @asynccontextmanager
    async def run(
        factory: IngestUnitOfWorkFactory | None = None, amqp_url: str | None = None
    ) -> AsyncIterator[InboundConsumer]:
        connection = await aio_pika.connect_robust(
            amqp_url or settings.amqp_url.get_secret_value(), reconnect_interval=0.2
        )
        consumer = InboundConsumer(
            connection,
            factory or ingest_uow_factory,
            names,
            prefetch=10,
            concurrency=4,
            backoff=FAST,
        )
        try:
            await consumer.start()
            yield consumer
        finally:
            await consumer.stop()
            await connection.close()

    return run


# -- accepted and duplicates --------------------------------------------------------------


async def test_a_valid_cloud_event_is_stored_once_and_acknowledged(
    broker: Broker,
    consuming: Run,
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
) -> None:
    envelope = cloud_event(transaction_event(), tenant)
    outcomes = Outcomes()

    async with consuming():
        await broker.publish(envelope, content_type="application/cloudevents+json")
        await outcomes.reach(accepted=1)

    assert await stored(owner_engine, tenant) == ONCE
    event = await stored_event(owner_engine, tenant)
    assert event.idempotency_key == envelope["id"]
    assert (event.door, event.actor) == ("amqp", f"amqp:{SOURCE}")
    assert event.correlation_id == envelope["correlationid"]
    async with owner_engine.connect() as connection:
        assert await verify(connection, tenant) == 2
    assert await broker.waiting(broker.names.inbound) == 0
    assert await broker.waiting(broker.names.inbound_dead) == 0


async def test_the_same_cloud_event_twice_is_stored_once(
    broker: Broker,
    consuming: Run,
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
) -> None:
    envelope = cloud_event(transaction_event(), tenant)
    outcomes = Outcomes()

    async with consuming():
        await broker.publish(envelope)
        await outcomes.reach(accepted=1)
        await broker.publish(envelope)
        await outcomes.reach(accepted=1, duplicate=1)

    assert await stored(owner_engine, tenant) == ONCE
    assert await broker.waiting(broker.names.inbound) == 0
    assert await broker.waiting(broker.names.inbound_dead) == 0


async def test_the_correlation_id_comes_from_the_event_else_the_message_else_is_new(
    broker: Broker,
    consuming: Run,
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
) -> None:
    from_event = cloud_event(transaction_event("from-event"), tenant, correlationid="ce-1")
    from_message = cloud_event(transaction_event("from-message"), tenant, correlationid=None)
    made = cloud_event(transaction_event("made"), tenant, correlationid=None)
    outcomes = Outcomes()

    async with consuming():
        await broker.publish(from_event, correlation_id="amqp-1")
        await broker.publish(from_message, correlation_id="amqp-2")
        await broker.publish(made)
        await outcomes.reach(accepted=3)

    async with owner_engine.connect() as connection:
        rows = dict(
            (
                await connection.execute(
                    text("SELECT idempotency_key, correlation_id FROM events WHERE tenant_id = :t"),
                    {"t": tenant},
                )
            ).all()
        )
    assert rows["from-event"] == "ce-1"
    assert rows["from-message"] == "amqp-2"
    assert uuid.UUID(rows["made"]).version == 7


# -- dead letters -------------------------------------------------------------------------


async def test_the_same_id_with_another_payload_is_dead_lettered_as_a_conflict(
    broker: Broker,
    consuming: Run,
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
) -> None:
    first = cloud_event(transaction_event("pay-1", amount="125.50"), tenant)
    second = cloud_event(transaction_event("pay-1", amount="999.00"), tenant)
    outcomes = Outcomes()

    async with consuming():
        await broker.publish(first)
        await outcomes.reach(accepted=1)
        await broker.publish(encode(second), message_id="m-2")
        (dead,) = await broker.dead_letters(1)
        await outcomes.reach(accepted=1, dead_lettered=1)

    assert dead.headers["x-vigil-error-code"] == "IDEMPOTENCY_CONFLICT"
    assert dead.headers["x-vigil-error-field"] == "id"
    assert dead.body == encode(second)
    assert dead.message_id == "m-2"
    assert await stored(owner_engine, tenant) == ONCE
    assert (await stored_event(owner_engine, tenant)).amount == Decimal("125.50")
    assert await broker.waiting(broker.names.inbound) == 0


@dataclass(frozen=True)
class Bad:
    """A message that can never be valid, made from a good CloudEvent."""

    name: str
    make: Callable[[dict[str, Any]], bytes]
    code: str
    field: str | None = None
    properties: Mapping[str, Any] | None = None


def _changed(**changes: Any) -> Callable[[dict[str, Any]], bytes]:
    return lambda envelope: encode({**envelope, **changes})


def _without(name: str) -> Callable[[dict[str, Any]], bytes]:
    return lambda envelope: encode({k: v for k, v in envelope.items() if k != name})


def _in_data(**changes: Any) -> Callable[[dict[str, Any]], bytes]:
    return lambda envelope: encode({**envelope, "data": {**envelope["data"], **changes}})


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _data_nested(depth: int) -> Callable[[dict[str, Any]], bytes]:
    """The envelope with its data replaced by arrays nested ``depth`` deep, as raw JSON
    (json.dumps would itself fail on the deepest)."""
    return lambda envelope: (
        encode({**envelope, "data": None})[:-1] + b', "data": ' + (_nested(depth) + b"}")
    )


BAD_MESSAGES = [
    Bad("not JSON", lambda _: b'{"specversion": "1.0", "id": ', "INVALID_JSON"),
    Bad("not UTF-8", lambda _: b'{"id": "\xff"}', "INVALID_JSON"),
    Bad("not an object", lambda _: b'["specversion", "1.0"]', "INVALID_TYPE"),
    Bad(
        "a key twice",
        lambda e: encode(e)[:-1] + b', "id": "other"}',
        "INVALID_JSON",
    ),
    Bad("missing id", _without("id"), "REQUIRED", "id"),
    Bad("missing tenantid", _without("tenantid"), "REQUIRED", "tenantid"),
    Bad("specversion 0.3", _changed(specversion="0.3"), "UNSUPPORTED_SPECVERSION", "specversion"),
    Bad("unknown attribute", _changed(priority="high"), "UNKNOWN_FIELD", "priority"),
    Bad("base64 data", _changed(data_base64="e30="), "UNSUPPORTED_CONTENT_TYPE", "data_base64"),
    Bad(
        "XML data",
        _changed(datacontenttype="application/xml"),
        "UNSUPPORTED_CONTENT_TYPE",
        "datacontenttype",
    ),
    Bad(
        "an XML message",
        encode,
        "UNSUPPORTED_CONTENT_TYPE",
        properties={"content_type": "application/xml"},
    ),
    Bad("tenantid not a UUID", _changed(tenantid="acme-bank"), "INVALID_FORMAT", "tenantid"),
    Bad("tenantid as a number", _changed(tenantid=42), "INVALID_TYPE", "tenantid"),
    Bad("unknown tenant", _changed(tenantid=str(uuid.uuid4())), "UNKNOWN_TENANT", "tenantid"),
    Bad("bad traceparent", _changed(traceparent="00-xyz"), "INVALID_FORMAT", "traceparent"),
    Bad("id with spaces", _changed(id="pay 1"), "INVALID_FORMAT", "id"),
    Bad("unknown type", _changed(type="payment"), "UNKNOWN_EVENT_TYPE", "type"),
    Bad("naive time", _changed(time="2026-03-01T09:30:00"), "NAIVE_TIME", "time"),
    Bad("float amount", _in_data(amount=125.5), "INVALID_AMOUNT", "data.amount"),
    Bad("unknown field in data", _in_data(colour="red"), "UNKNOWN_FIELD", "data.colour"),
    Bad("oversized body", _in_data(reference="x" * 70_000), "TOO_LARGE"),
    Bad("nested past the recursion limit", _data_nested(5_000), "TOO_DEEP"),
    Bad("nested too deep for a message", _data_nested(40), "TOO_DEEP"),
    Bad("nested too deep for an event", _in_data(reference=[[[[[[[[[]]]]]]]]]), "TOO_DEEP"),
    Bad("time in basic format", _changed(time="20260301T093000Z"), "INVALID_TIME", "time"),
    Bad("time as a week date", _changed(time="2026-W09-1T09:30:00Z"), "INVALID_TIME", "time"),
    Bad(
        "time before 1970 in UTC",
        _changed(time="1970-01-01T00:30:00+01:00"),
        "INVALID_TIME",
        "time",
    ),
]


@pytest.mark.parametrize("bad", BAD_MESSAGES, ids=[bad.name for bad in BAD_MESSAGES])
async def test_a_message_that_can_never_be_valid_is_dead_lettered_with_its_reason(
    bad: Bad,
    broker: Broker,
    consuming: Run,
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
) -> None:
    envelope = cloud_event(transaction_event(), tenant)
    body = bad.make(envelope)
    outcomes = Outcomes()

    async with consuming():
        await broker.publish(body, message_id="m-bad", **(bad.properties or {}))
        (dead,) = await broker.dead_letters(1)
        await outcomes.reach(dead_lettered=1)

    assert dead.headers["x-vigil-error-code"] == bad.code
    assert dead.headers.get("x-vigil-error-field") == bad.field
    assert dead.headers["x-vigil-error-message"]
    assert (dead.body, dead.message_id) == (body, "m-bad")
    assert await stored(owner_engine, tenant) == NOTHING
    if bad.code == "UNKNOWN_TENANT":
        assert await stored(owner_engine, uuid.UUID(json.loads(body)["tenantid"])) == NOTHING
    assert await broker.waiting(broker.names.inbound) == 0


async def test_a_bad_message_does_not_stop_the_consumer(
    broker: Broker,
    consuming: Run,
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
) -> None:
    outcomes = Outcomes()

    async with consuming():
        await broker.publish(b"\x00 not a cloud event")
        await broker.publish(cloud_event(transaction_event(), tenant))
        await outcomes.reach(accepted=1, dead_lettered=1)

    assert await stored(owner_engine, tenant) == ONCE
    assert await broker.waiting(broker.names.inbound) == 0


async def test_deeply_nested_messages_are_dead_lettered_and_do_not_stall_the_consumer(
    broker: Broker,
    consuming: Run,
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
) -> None:
    # Far more poison than the consumer's prefetch (10): were any left unsettled, the
    # valid event behind them would never be delivered.
    deep = _data_nested(5_000)(cloud_event(transaction_event("deep"), tenant))
    outcomes = Outcomes()

    async with consuming():
        for _ in range(120):
            await broker.publish(deep)
        await broker.publish(cloud_event(transaction_event("after"), tenant))
        await outcomes.reach(accepted=1, dead_lettered=120)
        dead = await broker.dead_letters(120)

    assert {message.headers["x-vigil-error-code"] for message in dead} == {"TOO_DEEP"}
    assert (await stored_event(owner_engine, tenant)).idempotency_key == "after"
    assert await broker.waiting(broker.names.inbound) == 0


async def test_an_unexpected_failure_requeues_the_message_after_the_backoff(
    broker: Broker,
    consuming: Run,
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures = iter([RuntimeError("a defect outside the ingest step")])

    def read_once_failing(body: bytes, **properties: Any) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return read_envelope(body, **properties)

    monkeypatch.setattr("workers.inbound_consumer.read_envelope", read_once_failing)
    outcomes = Outcomes()

    async with consuming():
        await broker.publish(cloud_event(transaction_event(), tenant))
        await outcomes.reach(retried=1, accepted=1)

    assert await stored(owner_engine, tenant) == ONCE
    assert await broker.waiting(broker.names.inbound) == 0
    assert await broker.waiting(broker.names.inbound_dead) == 0


# -- outages: acknowledged only after the commit, carrying on afterwards ----------------


@pytest.fixture
async def database_proxy(settings: Settings) -> AsyncIterator[tuple[TcpProxy, AsyncEngine]]:
    """A proxy in front of PostgreSQL, and an application engine that goes through it."""
    url = make_url(settings.database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.open()
    engine = make_engine(url.set(port=proxy.port).render_as_string(hide_password=False))
    try:
        yield proxy, engine
    finally:
        await engine.dispose()
        await proxy.close()


async def test_while_the_database_is_down_the_message_stays_on_the_queue(
    broker: Broker,
    consuming: Run,
    database_proxy: tuple[TcpProxy, AsyncEngine],
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
) -> None:
    proxy, engine = database_proxy
    envelope = cloud_event(transaction_event(), tenant)
    outcomes = Outcomes()
    await proxy.close()

    async with consuming(ingest_unit_of_work_factory(engine)):
        await broker.publish(envelope)
        await outcomes.reach(retried=2, loose=("retried",))
        assert await stored(owner_engine, tenant) == NOTHING
    assert await broker.waiting(broker.names.inbound) == 1

    await proxy.open()
    async with consuming(ingest_unit_of_work_factory(engine)):
        await outcomes.reach(retried=2, accepted=1, loose=("retried",))

    assert await stored(owner_engine, tenant) == ONCE
    assert await broker.waiting(broker.names.inbound) == 0
    assert await broker.waiting(broker.names.inbound_dead) == 0


async def test_the_consumer_carries_on_when_the_database_comes_back(
    broker: Broker,
    consuming: Run,
    database_proxy: tuple[TcpProxy, AsyncEngine],
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
) -> None:
    proxy, engine = database_proxy
    before = cloud_event(transaction_event("before"), tenant)
    during = cloud_event(transaction_event("during"), tenant)
    outcomes = Outcomes()

    async with consuming(ingest_unit_of_work_factory(engine)):
        await broker.publish(before)
        await outcomes.reach(accepted=1)
        await proxy.close()
        await broker.publish(during)
        await outcomes.reach(accepted=1, retried=1, loose=("retried",))
        assert (await stored(owner_engine, tenant)).events == 1
        await proxy.open()
        await outcomes.reach(accepted=2, retried=1, loose=("retried",))

    assert await stored(owner_engine, tenant) == Stored(2, 2, 2)
    assert await broker.waiting(broker.names.inbound) == 0
    assert await broker.waiting(broker.names.inbound_dead) == 0


async def test_a_message_that_keeps_failing_is_dead_lettered_by_the_delivery_limit(
    broker: Broker,
    consuming: Run,
    database_proxy: tuple[TcpProxy, AsyncEngine],
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
) -> None:
    proxy, engine = database_proxy
    body = encode(cloud_event(transaction_event(), tenant))
    outcomes = Outcomes()
    await proxy.close()

    async with consuming(ingest_unit_of_work_factory(engine)):
        await broker.publish(body)
        (dead,) = await broker.dead_letters(1)
        await outcomes.reach(retried=DELIVERY_LIMIT + 1)

    assert dead.body == body
    assert "x-vigil-error-code" not in dead.headers
    (death,) = dead.headers["x-death"]
    assert death["reason"] == "delivery_limit"
    assert await stored(owner_engine, tenant) == NOTHING
    assert await broker.waiting(broker.names.inbound) == 0


async def test_the_consumer_resumes_after_losing_the_broker(
    broker: Broker,
    consuming: Run,
    settings: Settings,
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    transaction_event: Any,
) -> None:
    url = URL(settings.amqp_url.get_secret_value())
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5672)
    await proxy.open()
    before = cloud_event(transaction_event("before"), tenant)
    after = cloud_event(transaction_event("after"), tenant)
    outcomes = Outcomes()

    try:
        async with consuming(amqp_url=str(url.with_port(proxy.port))):
            await broker.publish(before)
            await outcomes.reach(accepted=1)
            await proxy.close()
            await broker.publish(after)
            await asyncio.sleep(0.5)
            assert await broker.waiting(broker.names.inbound) == 1
            await proxy.open()
            await outcomes.reach(accepted=2)
    finally:
        await proxy.close()

    assert await stored(owner_engine, tenant) == Stored(2, 2, 2)
    assert await broker.waiting(broker.names.inbound) == 0
