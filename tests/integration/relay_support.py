"""Helpers for the relay's tests: a queue that records what the relay published, and
outbox rows written and read with plain SQL (as the owner, who is not bound by RLS)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.broker import Names
from domain.ids import new_id
from domain.messages import EVENT_RECEIVED, OutboxMessage, cloud_event
from outbox.relay import Relay

MakeRelay = Callable[..., Relay]

WAIT_SECONDS = 20.0


async def until(condition: Callable[[], bool], *, seconds: float = WAIT_SECONDS) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


@dataclass
class Tap:
    """The messages of one tenant that reached a queue bound to the events exchange."""

    tenant: uuid.UUID
    messages: list[AbstractIncomingMessage] = field(default_factory=list)

    def record(self, message: AbstractIncomingMessage) -> None:
        headers = message.headers or {}
        if headers.get("tenantid") == str(self.tenant):
            self.messages.append(message)

    @property
    def ids(self) -> list[str]:
        return [str(message.message_id) for message in self.messages]

    def envelopes(self) -> list[dict[str, Any]]:
        return [json.loads(message.body) for message in self.messages]


@asynccontextmanager
async def tap(
    amqp: AbstractRobustConnection,
    names: Names,
    tenant: uuid.UUID,
    routing_key: str = EVENT_RECEIVED,
) -> AsyncIterator[Tap]:
    """An exclusive queue bound with ``routing_key``, consumed while the block runs."""
    recorder = Tap(tenant)

    async def on_message(message: AbstractIncomingMessage) -> None:
        recorder.record(message)

    channel = await amqp.channel()
    try:
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(names.events_exchange, routing_key=routing_key)
        await queue.consume(on_message, no_ack=True)
        yield recorder
    finally:
        await channel.close()


async def insert_row(
    connection: AsyncConnection,
    tenant: uuid.UUID,
    *,
    ordering_key: uuid.UUID | None = None,
    message_type: str = EVENT_RECEIVED,
) -> tuple[uuid.UUID, int]:
    """Add one outbox row as a unit of work would; return its message id and seq."""
    message = OutboxMessage(
        message_id=new_id(),
        message_type=message_type,
        subject="event/test",
        ordering_key=ordering_key or new_id(),
        time=datetime.now(UTC),
        data={"test": True},
    )
    row = (
        await connection.execute(
            text(
                "INSERT INTO outbox (tenant_id, message_id, ordering_key, message_type, envelope)"
                " VALUES (:tenant, :id, :key, :type, CAST(:envelope AS jsonb)) RETURNING seq"
            ),
            {
                "tenant": tenant,
                "id": message.message_id,
                "key": message.ordering_key,
                "type": message.message_type,
                "envelope": json.dumps(cloud_event(tenant, message)),
            },
        )
    ).one()
    return message.message_id, int(row.seq)


async def outbox_rows(engine: AsyncEngine, tenant: uuid.UUID) -> dict[str, Row[Any]]:
    """The tenant's outbox rows by message id (as text, like a CloudEvent id)."""
    async with engine.connect() as connection:
        result = await connection.execute(
            text(
                "SELECT message_id, seq, ordering_key, attempts, last_error, next_attempt_at,"
                " published_at, parked_at, clock_timestamp() AS now"
                " FROM outbox WHERE tenant_id = :tenant ORDER BY seq"
            ),
            {"tenant": tenant},
        )
        return {str(row.message_id): row for row in result}
