"""Each door stores one event, its audit record and its outbox row, and the message
reaches a bound queue as a CloudEvent with the right id, type, tenant and correlation id.

An event goes in through a door (the GraphQL mutation of the portal, served in-process,
or the inbound queue, with its consumer run in-process), then a relay publishes the
outbox and a queue of the test's own, bound to the events exchange with the routing key
``event.received``, receives the message.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.broker import Names
from adapters.settings import Settings
from domain.messages import EVENT_RECEIVED
from domain.ports import IngestUnitOfWorkFactory
from outbox.publisher import CONTENT_TYPE
from tests.integration.inbound_support import ONCE, Broker, Outcomes, cloud_event, stored
from tests.integration.portal_support import count_rows, open_portal, token
from tests.integration.relay_support import MakeRelay, outbox_rows, tap, until
from workers.consumer import Backoff
from workers.inbound_consumer import InboundConsumer

pytestmark = pytest.mark.usefixtures("quiet_outbox")


@pytest.fixture
async def broker(amqp: AbstractRobustConnection, names: Names) -> Broker:
    broker = Broker(amqp, names)
    await broker.purge()
    return broker


async def accepted_audits(owner_engine: AsyncEngine, tenant: uuid.UUID) -> list[Any]:
    async with owner_engine.connect() as connection:
        result = await connection.execute(
            text(
                "SELECT entity_id, correlation_id FROM audit_records"
                " WHERE tenant_id = :t AND action = 'event.accepted'"
            ),
            {"t": tenant},
        )
        return list(result)


async def stored_once(
    owner_engine: AsyncEngine, tenant: uuid.UUID, event_id: uuid.UUID, correlation_id: str
) -> str:
    """One event, its ``event.accepted`` audit record and its outbox row, each carrying
    the correlation id; the outbox row's message id, as text."""
    assert await stored(owner_engine, tenant) == ONCE
    assert await count_rows(owner_engine, "events", tenant) == 1
    assert await count_rows(owner_engine, "outbox", tenant) == 1
    async with owner_engine.connect() as connection:
        event = (
            await connection.execute(
                text("SELECT event_id, correlation_id FROM events WHERE tenant_id = :t"),
                {"t": tenant},
            )
        ).one()
        message = (
            await connection.execute(
                text(
                    "SELECT message_id, message_type, published_at FROM outbox WHERE tenant_id = :t"
                ),
                {"t": tenant},
            )
        ).one()
    assert (event.event_id, event.correlation_id) == (event_id, correlation_id)
    (audit,) = await accepted_audits(owner_engine, tenant)
    assert (audit.entity_id, audit.correlation_id) == (str(event_id), correlation_id)
    assert (message.message_type, message.published_at) == (EVENT_RECEIVED, None)
    return str(message.message_id)


async def relayed(
    make_relay: MakeRelay, amqp: AbstractRobustConnection, names: Names, tenant: uuid.UUID
) -> tuple[aio_pika.abc.AbstractIncomingMessage, dict[str, Any]]:
    """Run a relay once; the one message of the tenant that reached a queue bound with
    ``event.received``, and its body."""
    async with tap(amqp, names, tenant, routing_key="event.received") as queue:
        assert await make_relay().run_once() == 1
        await until(lambda: len(queue.messages) == 1)
    (message,) = queue.messages
    envelope: dict[str, Any] = json.loads(message.body)
    return message, envelope


def assert_cloud_event(
    message: aio_pika.abc.AbstractIncomingMessage,
    envelope: dict[str, Any],
    *,
    message_id: str,
    tenant: uuid.UUID,
    correlation_id: str,
    event_id: uuid.UUID,
) -> None:
    assert envelope["specversion"] == "1.0"
    assert envelope["id"] == message_id
    assert envelope["type"] == "event.received"
    assert envelope["tenantid"] == str(tenant)
    assert envelope["correlationid"] == correlation_id
    assert envelope["subject"] == f"event/{event_id}"
    assert envelope["data"]["eventId"] == str(event_id)
    assert envelope["data"]["eventType"] == "transaction"
    assert message.message_id == message_id
    assert message.correlation_id == correlation_id
    assert message.routing_key == "event.received"
    assert message.content_type == CONTENT_TYPE
    assert message.headers == {"tenantid": str(tenant), "type": "event.received"}


async def test_an_event_through_graphql_reaches_the_broker_as_a_cloud_event(
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    make_relay: MakeRelay,
    amqp: AbstractRobustConnection,
    names: Names,
    transaction_event: Any,
) -> None:
    correlation_id = f"corr-graphql-{uuid.uuid4().hex[:8]}"
    async with open_portal(settings) as portal:
        payload = await portal.ingest(
            [transaction_event()],
            token=token(settings, tenant),
            **{"X-Correlation-ID": correlation_id},
        )
    assert payload["acceptedCount"] == 1
    (result,) = payload["results"]
    assert result["__typename"] == "EventAccepted"
    event_id = uuid.UUID(result["eventId"])
    message_id = await stored_once(owner_engine, tenant, event_id, correlation_id)

    message, envelope = await relayed(make_relay, amqp, names, tenant)

    assert_cloud_event(
        message,
        envelope,
        message_id=message_id,
        tenant=tenant,
        correlation_id=correlation_id,
        event_id=event_id,
    )
    assert (await outbox_rows(owner_engine, tenant))[message_id].published_at is not None


async def test_an_event_through_the_inbound_queue_reaches_the_broker_as_a_cloud_event(
    settings: Settings,
    tenant: uuid.UUID,
    owner_engine: AsyncEngine,
    ingest_uow_factory: IngestUnitOfWorkFactory,
    make_relay: MakeRelay,
    amqp: AbstractRobustConnection,
    names: Names,
    broker: Broker,
    transaction_event: Any,
) -> None:
    correlation_id = f"corr-inbound-{uuid.uuid4().hex[:8]}"
    envelope_in = cloud_event(transaction_event(), tenant, correlationid=correlation_id)
    outcomes = Outcomes()
    connection = await aio_pika.connect_robust(
        settings.amqp_url.get_secret_value(), reconnect_interval=0.2
    )
    consumer = InboundConsumer(
        connection,
        ingest_uow_factory,
        names,
        prefetch=10,
        concurrency=4,
        backoff=Backoff(first_seconds=0.05, max_seconds=0.2),
    )
    try:
        await consumer.start()
        await broker.publish(envelope_in, content_type="application/cloudevents+json")
        await outcomes.reach(accepted=1)
    finally:
        await consumer.stop()
        await connection.close()
    async with owner_engine.connect() as db:
        event_id = await db.scalar(
            text("SELECT event_id FROM events WHERE tenant_id = :t AND idempotency_key = :k"),
            {"t": tenant, "k": envelope_in["id"]},
        )
    assert isinstance(event_id, uuid.UUID)
    message_id = await stored_once(owner_engine, tenant, event_id, correlation_id)

    message, envelope = await relayed(make_relay, amqp, names, tenant)

    assert_cloud_event(
        message,
        envelope,
        message_id=message_id,
        tenant=tenant,
        correlation_id=correlation_id,
        event_id=event_id,
    )
    assert (await outbox_rows(owner_engine, tenant))[message_id].published_at is not None
    assert await broker.waiting(names.inbound) == 0
    assert await broker.waiting(names.inbound_dead) == 0
