"""RabbitMQ: connections and the topology every Vigil process declares on start.

    {prefix}.events          topic exchange; Vigil's own CloudEvents, routing key = type
    {prefix}.dead            direct exchange for dead letters
    {prefix}.inbound         quorum queue integrations publish CloudEvents to
    {prefix}.inbound.dead    what could never be valid, with the reason in a header
    {prefix}.dispatch        quorum queue of ``event.received`` for the scoring dispatcher
    {prefix}.dispatch.dead   dispatch messages that failed too often
    {prefix}.feed            Vigil's own results (risk.assessed, case.*) for integrations;
                             a bounded buffer: the database stays the record

Every type the relay publishes has a durable queue bound to it, so a message is
never returned as unroutable merely because no portal replica happens to be running.

Declarations are idempotent, so every process declares the whole topology on start and
none depends on another having run first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from domain.messages import EVENT_RECEIVED

DELIVERY_LIMIT = 10
FEED_BINDINGS = ("risk.assessed", "case.#")
FEED_TTL_MS = 7 * 24 * 3600 * 1000
FEED_MAX_LENGTH = 1_000_000


@dataclass(frozen=True, slots=True)
class Names:
    prefix: str

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}.events"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def inbound(self) -> str:
        return f"{self.prefix}.inbound"

    @property
    def inbound_dead(self) -> str:
        return f"{self.prefix}.inbound.dead"

    @property
    def dispatch(self) -> str:
        return f"{self.prefix}.dispatch"

    @property
    def dispatch_dead(self) -> str:
        return f"{self.prefix}.dispatch.dead"

    @property
    def feed(self) -> str:
        return f"{self.prefix}.feed"


def _work_queue_arguments(names: Names, dead_key: str) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": names.dead_exchange,
        "x-dead-letter-routing-key": dead_key,
        "x-delivery-limit": DELIVERY_LIMIT,
    }


async def connect(
    url: str, *, name: str, reconnect_seconds: float | None = None
) -> AbstractRobustConnection:
    """A connection that comes back by itself, every ``reconnect_seconds`` (aio-pika's 5
    unless given) after a loss."""
    options: dict[str, Any] = {}
    if reconnect_seconds is not None:
        options["reconnect_interval"] = reconnect_seconds
    connection: AbstractRobustConnection = await aio_pika.connect_robust(
        url, client_properties={"connection_name": name}, **options
    )
    return connection


async def declare_topology(channel: AbstractChannel, names: Names) -> AbstractExchange:
    """Declare exchanges, queues and bindings; return the events exchange."""
    events = await channel.declare_exchange(
        names.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    dead = await channel.declare_exchange(
        names.dead_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    quorum: dict[str, Any] = {"x-queue-type": "quorum"}

    inbound_dead = await channel.declare_queue(names.inbound_dead, durable=True, arguments=quorum)
    await inbound_dead.bind(dead, routing_key="inbound")
    await channel.declare_queue(
        names.inbound, durable=True, arguments=_work_queue_arguments(names, "inbound")
    )

    dispatch_dead = await channel.declare_queue(names.dispatch_dead, durable=True, arguments=quorum)
    await dispatch_dead.bind(dead, routing_key="dispatch")
    dispatch = await channel.declare_queue(
        names.dispatch, durable=True, arguments=_work_queue_arguments(names, "dispatch")
    )
    await dispatch.bind(events, routing_key=EVENT_RECEIVED)

    feed = await channel.declare_queue(
        names.feed,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-message-ttl": FEED_TTL_MS,
            "x-max-length": FEED_MAX_LENGTH,
        },
    )
    for pattern in FEED_BINDINGS:
        await feed.bind(events, routing_key=pattern)
    return events


async def delete_topology(channel: AbstractChannel, names: Names) -> None:
    """Remove everything :func:`declare_topology` made (used by tests)."""
    for queue in (
        names.inbound,
        names.inbound_dead,
        names.dispatch,
        names.dispatch_dead,
        names.feed,
    ):
        await channel.queue_delete(queue)
    for exchange in (names.events_exchange, names.dead_exchange):
        await channel.exchange_delete(exchange)
