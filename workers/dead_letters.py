"""Dead letters with their reason: a copy of a message that can never be valid, published
to the dead exchange with headers that say why, and confirmed by the broker before the
original is acknowledged.

The broker's own dead-lettering (``x-dead-letter-exchange``) cannot carry a reason, so
Vigil publishes the copy itself. It keeps the body and properties of the original, with
three exceptions: it is always persistent, it never expires, and it drops ``user_id``
(the broker refuses a ``user_id`` that is not the publishing connection's user).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractMessage,
    AbstractRobustConnection,
)
from aiormq.abc import FieldValue

from adapters.broker import Names

ROUTING_KEY = "inbound"
PUBLISH_TIMEOUT_SECONDS = 10.0
MAX_HEADER_TEXT = 500

CODE_HEADER = "x-vigil-error-code"
FIELD_HEADER = "x-vigil-error-field"
MESSAGE_HEADER = "x-vigil-error-message"
REFUSED_AT_HEADER = "x-vigil-refused-at"

# Set by the broker on delivery; meaningless on a new message.
_BROKER_HEADERS = frozenset({"x-delivery-count"})


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a message can never be valid: a stable code, the field at fault, a sentence."""

    code: str
    field: str
    message: str


class DeadLetters:
    """Publishes dead letters on a channel of its own with publisher confirms and mandatory
    routing, so that a copy the broker could not route is an error, never a silent loss."""

    def __init__(self, channel: AbstractChannel, exchange: AbstractExchange) -> None:
        self._channel = channel
        self._exchange = exchange

    @classmethod
    async def open(cls, connection: AbstractRobustConnection, names: Names) -> DeadLetters:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(names.dead_exchange)
        return cls(channel, exchange)

    async def publish(self, original: AbstractMessage, reason: Reason) -> None:
        """Return once the broker confirmed the copy; raise if it did not."""
        # The timeout covers waiting for a lost connection to come back, not only the
        # confirm: a robust channel would otherwise wait for as long as the outage lasts.
        async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
            await self._exchange.publish(
                dead_letter(original, reason), routing_key=ROUTING_KEY, mandatory=True
            )

    async def close(self) -> None:
        await self._channel.close()


def dead_letter(original: AbstractMessage, reason: Reason) -> aio_pika.Message:
    headers: dict[str, FieldValue] = {
        key: value for key, value in original.headers.items() if key not in _BROKER_HEADERS
    }
    headers[CODE_HEADER] = reason.code
    if reason.field:
        headers[FIELD_HEADER] = reason.field[:MAX_HEADER_TEXT]
    headers[MESSAGE_HEADER] = reason.message[:MAX_HEADER_TEXT]
    headers[REFUSED_AT_HEADER] = datetime.now(UTC).isoformat()
    return aio_pika.Message(
        original.body,
        headers=headers,
        content_type=original.content_type,
        content_encoding=original.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=original.priority,
        correlation_id=original.correlation_id,
        reply_to=original.reply_to,
        message_id=original.message_id,
        timestamp=original.timestamp,
        type=original.type,
        app_id=original.app_id,
    )
