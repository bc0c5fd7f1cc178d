"""Publishing one outbox row to RabbitMQ, and what can become of it.

The channel has publisher confirms and ``on_return_raises``, and every message is
mandatory, so a publish ends in one of these ways:

    published   the broker routed the message to a queue and confirmed it
    returned    no queue is bound for its routing key (aio-pika raises PublishError)
    nacked      the broker refused it (DeliveryError)
    timeout     no answer within the publish timeout
    error       anything else about this message (the channel was closed on it, ...)

Those are about the message: the relay counts them against the row. A lost connection
is about the broker, not the message: :class:`BrokerUnavailable` is raised, the row is
left as it was, and the next publish connects again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from enum import StrEnum

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import (
    AMQPConnectionError,
    ChannelInvalidStateError,
    DeliveryError,
    PublishError,
)
from aiormq.abc import ChannelFrame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from adapters.broker import Names, declare_topology
from domain.errors import TransientFailure
from outbox.store import PendingRow

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents+json"

_CONNECT_TIMEOUT_SECONDS = 10.0


class Outcome(StrEnum):
    PUBLISHED = "published"
    RETURNED = "returned"
    NACKED = "nacked"
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Delivery:
    outcome: Outcome
    seconds: float
    error: str | None = None


class BrokerUnavailable(TransientFailure):
    """The broker cannot be reached; nothing is known about the message in flight."""


class Publisher:
    """One connection and one confirming channel, opened when first needed and opened
    again after they were lost. The topology is declared on every connect, so work
    queues exist before the first message leaves.

    The connection is a plain one, not a robust one: the relay wants to know that a
    batch lost its broker (and leave its rows for later) rather than have a channel
    restored behind its back, and it reconnects between batches on its own terms.
    """

    def __init__(
        self,
        url: str,
        names: Names,
        *,
        timeout_seconds: float,
        connection_name: str = "vigil-relay",
    ) -> None:
        self._url = url
        self._names = names
        self._timeout = timeout_seconds
        self._connection_name = connection_name
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._sender: _Sender | None = None

    @property
    def connected(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def connect(self) -> None:
        """Make sure the connection and channel are open; raise BrokerUnavailable if not."""
        if self.connected:
            return
        await self.close()
        try:
            self._connection = await aio_pika.connect(
                self._url,
                timeout=_CONNECT_TIMEOUT_SECONDS,
                client_properties={"connection_name": self._connection_name},
            )
            self._channel = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            _ = await declare_topology(self._channel, self._names)
            underlay = await self._channel.get_underlay_channel()
            if not isinstance(underlay, aiormq.Channel):
                raise TypeError(f"unexpected AMQP channel {type(underlay).__name__}")
            self._sender = _Sender(underlay, self._names.events_exchange)
        except (AMQPConnectionError, ConnectionError, OSError, TimeoutError) as error:
            await self.close()
            raise BrokerUnavailable(f"cannot reach the broker: {_describe(error)}") from error
        log.info("broker connected", extra={"exchange": self._names.events_exchange})

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if self._sender is not None:
            self._sender.close()
        self._channel = self._sender = None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except Exception as error:  # a connection that broke is dropped all the same
                log.debug("broker connection closed uncleanly", extra={"error": _describe(error)})

    async def publish(self, row: PendingRow) -> Delivery:
        """Publish a row's CloudEvent and wait for the broker's answer."""
        sender = self._sender
        if sender is None or not self.connected:
            raise BrokerUnavailable("not connected to the broker")

        started = time.perf_counter()
        try:
            confirmation = sender.send(row)
            async with asyncio.timeout(self._timeout):
                _ = await confirmation
        except PublishError as error:
            return _failed(Outcome.RETURNED, started, error)
        except DeliveryError as error:
            return _failed(Outcome.NACKED, started, error)
        except TimeoutError as error:
            return _failed(Outcome.TIMEOUT, started, error)
        except (AMQPConnectionError, ChannelInvalidStateError, ConnectionError, OSError) as error:
            raise BrokerUnavailable(f"lost the broker: {_describe(error)}") from error
        except asyncio.CancelledError as error:
            # aiormq cancels the confirmations pending on a channel that closes; only a
            # cancellation of this very task is a request to stop.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise BrokerUnavailable("the channel closed during the publish") from error
        except Exception as error:  # about this message only: counted against its row
            return _failed(Outcome.ERROR, started, error)
        return Delivery(Outcome.PUBLISHED, time.perf_counter() - started)


class _Sender:
    """Publishes on one confirming aiormq channel, writing the frames of every message
    sent in one turn of the event loop to the socket at once.

    aiormq's own ``basic_publish`` queues each message for the connection's writer on
    its own, and the writer then makes one ``send()`` per message: on a busy machine
    the largest single cost of publishing, for the relay and the broker alike. This does
    what ``basic_publish`` does for a confirmed message (the next delivery tag, a
    confirmation registered under it and under the message id, where returns and
    nacks find it) and leaves the frames to one flush per turn. Delivery tags follow
    the order of the frames on the wire, because this is the channel's only publisher
    and the flushes go out one after another.
    """

    def __init__(self, channel: aiormq.Channel, exchange: str) -> None:
        self._channel = channel
        self._exchange = exchange
        self._frames: list[Basic.Publish | ContentHeader | ContentBody] = []
        self._flushing = asyncio.Lock()
        self._flush_due = False
        self._flushes: set[asyncio.Task[None]] = set()

    def send(self, row: PendingRow) -> asyncio.Future[object]:
        """Queue a row's message; return the future of the broker's answer."""
        channel = self._channel
        body = row.body.encode()
        message_id = str(row.message_id)
        channel.delivery_tag += 1
        delivery_tag = channel.delivery_tag
        confirmation: asyncio.Future[object] = channel.create_future()
        channel.confirmations[delivery_tag] = confirmation
        channel.message_id_delivery_tag[message_id] = delivery_tag

        def forget(_: asyncio.Future[object]) -> None:
            if channel.message_id_delivery_tag.get(message_id) == delivery_tag:
                del channel.message_id_delivery_tag[message_id]

        confirmation.add_done_callback(forget)
        self._frames.append(
            Basic.Publish(exchange=self._exchange, routing_key=row.message_type, mandatory=True)
        )
        self._frames.append(ContentHeader(properties=_properties(row), body_size=len(body)))
        size = channel.max_content_size  # the largest body frame this connection takes
        self._frames.extend(ContentBody(body[at : at + size]) for at in range(0, len(body), size))
        if not self._flush_due:
            self._flush_due = True
            flush = asyncio.get_running_loop().create_task(self._flush())
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        return confirmation

    def close(self) -> None:
        for flush in self._flushes:
            _ = flush.cancel()

    async def _flush(self) -> None:
        # Runs after the tasks already scheduled in this turn: their messages go too.
        async with self._flushing:
            frames, self._frames = self._frames, []
            self._flush_due = False
            if frames:
                await self._channel.write_queue.put(
                    ChannelFrame.marshall(channel_number=self._channel.number, frames=frames)
                )


def _properties(row: PendingRow) -> Basic.Properties:
    return Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=2,  # persistent
        message_id=str(row.message_id),
        correlation_id=row.correlation_id,
        message_type=row.message_type,
        app_id="vigil",
        headers={"tenantid": str(row.tenant_id), "type": row.message_type},
    )


def _failed(outcome: Outcome, started: float, error: BaseException) -> Delivery:
    return Delivery(outcome, time.perf_counter() - started, f"{outcome}: {_describe(error)}")


def _describe(error: BaseException) -> str:
    detail = str(error) or type(error).__name__
    return detail[:500]
