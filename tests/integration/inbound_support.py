"""Helpers for the inbound-queue tests: CloudEvents as integrations send them, the
queues seen from outside, the consumer's outcome counter, what a tenant has stored, and
a TCP proxy whose closing is a real outage."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.broker import Names

SOURCE = "urn:core-banking:payments"
WAIT_SECONDS = 15.0


# -- messages -----------------------------------------------------------------------------


def cloud_event(event: Mapping[str, Any], tenant_id: uuid.UUID, **changes: Any) -> dict[str, Any]:
    """The CloudEvent an integration sends for an event; ``changes`` set attributes, and
    a change to ``None`` removes the attribute."""
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": event["idempotencyKey"],
        "source": SOURCE,
        "type": event["type"],
        "time": event["occurredAt"],
        "datacontenttype": "application/json",
        "tenantid": str(tenant_id),
        "correlationid": f"corr-{uuid.uuid4().hex[:12]}",
        "data": event["data"],
    }
    envelope.update(changes)
    return {name: value for name, value in envelope.items() if value is not None}


def encode(envelope: Mapping[str, Any]) -> bytes:
    return json.dumps(envelope).encode()


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


# -- the queues and the database, seen from outside --------------------------------------


class Broker:
    def __init__(self, connection: AbstractRobustConnection, names: Names) -> None:
        self.connection = connection
        self.names = names

    async def purge(self) -> None:
        async with self.connection.channel() as channel:
            for name in (self.names.inbound, self.names.inbound_dead):
                await (await channel.get_queue(name)).purge()

    async def publish(self, body: bytes | Mapping[str, Any], **properties: Any) -> None:
        payload = body if isinstance(body, bytes) else encode(body)
        message = aio_pika.Message(
            payload, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties
        )
        async with self.connection.channel() as channel:
            await channel.default_exchange.publish(message, routing_key=self.names.inbound)

    async def waiting(self, name: str) -> int:
        """Messages ready in a queue (not those held unacknowledged by a consumer)."""
        async with self.connection.channel() as channel:
            queue = await channel.get_queue(name)
            return queue.declaration_result.message_count or 0

    async def dead_letters(self, count: int) -> list[AbstractIncomingMessage]:
        """Take ``count`` messages from the dead-letter queue, waiting for them."""
        taken: list[AbstractIncomingMessage] = []
        async with self.connection.channel() as channel:
            queue = await channel.get_queue(self.names.inbound_dead)
            async with asyncio.timeout(WAIT_SECONDS):
                while len(taken) < count:
                    message = await queue.get(no_ack=True, fail=False)
                    if message is None:
                        await asyncio.sleep(0.05)
                    else:
                        taken.append(message)
        return taken


class Outcomes:
    """The consumer's outcome counter, read as a difference from when it was made."""

    NAMES = ("accepted", "duplicate", "dead_lettered", "retried")

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> dict[str, float]:
        return {
            name: REGISTRY.get_sample_value("vigil_inbound_messages_total", {"outcome": name})
            or 0.0
            for name in Outcomes.NAMES
        }

    def since(self) -> dict[str, int]:
        now = self._read()
        return {name: int(now[name] - self._start[name]) for name in self.NAMES}

    async def reach(self, *, loose: tuple[str, ...] = (), **expected: int) -> None:
        """Wait until the expected counts are reached, then check that nothing else
        happened; the counts named in ``loose`` may have gone further."""
        await until(lambda: all(self.since()[n] >= c for n, c in expected.items()))
        counts = self.since()
        for name in loose:
            counts[name] = min(counts[name], expected.get(name, 0))
        assert counts == {name: expected.get(name, 0) for name in self.NAMES}


@dataclass(frozen=True)
class Stored:
    events: int
    accepted_audits: int
    received_messages: int


async def stored(owner_engine: AsyncEngine, tenant_id: uuid.UUID) -> Stored:
    async with owner_engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    """
                    SELECT
                      (SELECT count(*) FROM events WHERE tenant_id = :t),
                      (SELECT count(*) FROM audit_records
                        WHERE tenant_id = :t AND action = 'event.accepted'),
                      (SELECT count(*) FROM outbox
                        WHERE tenant_id = :t AND message_type = 'event.received')
                    """
                ),
                {"t": tenant_id},
            )
        ).one()
    return Stored(*row)


async def stored_event(owner_engine: AsyncEngine, tenant_id: uuid.UUID) -> Any:
    async with owner_engine.connect() as connection:
        return (
            await connection.execute(
                text("SELECT * FROM events WHERE tenant_id = :t"), {"t": tenant_id}
            )
        ).one()


NOTHING = Stored(0, 0, 0)
ONCE = Stored(1, 1, 1)


class TcpProxy:
    """A local port forwarded to PostgreSQL. Closing it is a real outage for whoever
    connects through it: open connections drop and new ones are refused."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
            try:
                await asyncio.gather(_copy(reader, upstream_writer), _copy(upstream_reader, writer))
            finally:
                upstream_writer.close()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._pipes.discard(task)


async def _copy(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
    while data := await source.read(65536):
        target.write(data)
        await target.drain()
    target.close()
