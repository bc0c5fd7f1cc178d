"""What every queue consumer of ours does the same way: consume with a bounded number of
messages in hand, hold a message that failed for a passing reason before requeueing
it, never leave a message unsettled, and stop by finishing what it holds.

A subclass says how to answer one message (:meth:`QueueConsumer.answer`). Whatever the
answer raises is a defect: it is logged and the message is given back to the queue
after the backoff, so the queue's delivery limit still ends the attempts. A message
left unsettled would hold a prefetch slot until the consumer restarts, and enough of
them would stall the consumer for every tenant.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.abc import ChannelFrame
from aiormq.exceptions import ChannelInvalidStateError
from pamqp.commands import Basic

from adapters.broker import Names, declare_topology

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 30.0
_CLOSE_SECONDS = 5.0
_LOGGED_ID_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to hold a message that failed for a transient reason before requeueing
    it: doubling with each delivery, capped, with jitter so that many held messages do
    not all come back at the same moment."""

    first_seconds: float = 0.5
    max_seconds: float = 60.0

    def delay(self, delivery: int) -> float:
        ceiling = min(self.max_seconds, self.first_seconds * 2.0 ** min(delivery - 1, 20))
        return ceiling * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not secrecy


class QueueConsumer:
    """Consumes one queue until :meth:`stop`; :meth:`handle` answers one delivery."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        names: Names,
        queue: str,
        *,
        prefetch: int,
        concurrency: int,
        backoff: Backoff | None = None,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
    ) -> None:
        self._connection = connection
        self._names = names
        self._queue_name = queue
        self._prefetch = prefetch
        # At most as many transactions at once as the pool has connections: the rest of
        # the prefetched messages wait here rather than time out waiting for the pool.
        self._slots = asyncio.Semaphore(concurrency)
        self._backoff = backoff or Backoff()
        self._stop_grace_seconds = stop_grace_seconds
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._acks = Acks()
        # The deliveries in hand that :meth:`ack` settled (by id: aio-pika marks only
        # the messages it acknowledged itself as processed).
        self._acked: set[int] = set()

    async def start(self) -> None:
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self._prefetch)
        await declare_topology(channel, self._names)
        await self.opened()
        self._channel = channel
        self._queue = await channel.get_queue(self._queue_name)
        self._consumer_tag = await self._queue.consume(self.handle)

    async def stop(self) -> None:
        """Stop taking messages, finish those in hand, close the channels. What is still
        unsettled when the channels close goes back to the queue."""
        self._stopping.set()
        if self._queue is not None and self._consumer_tag is not None:
            await quietly("cancelling the consumer", self._queue.cancel(self._consumer_tag))
        await self._drain()
        await self.closing()
        if self._channel is not None:
            await quietly("closing the channel", self._channel.close())

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Answer one delivery. Never raises: one bad message must not stop the others."""
        with self._tracked():
            try:
                await self.answer(message)
            except Exception:
                log.exception(
                    "answering a message failed; it goes back to the queue",
                    extra=delivery_fields(message),
                )
                if id(message) not in self._acked:
                    await self._give_back(message)
            finally:
                self._acked.discard(id(message))

    # -- what a subclass says --------------------------------------------------------------

    async def answer(self, message: AbstractIncomingMessage) -> None:
        """Settle one message (ack, reject, or :meth:`requeue_later`)."""
        raise NotImplementedError

    async def opened(self) -> None:
        """Open what the consumer needs besides its channel (called by :meth:`start`)."""

    async def closing(self) -> None:
        """Close it again, after the messages in hand are finished."""

    async def gave_back(self, message: AbstractIncomingMessage) -> None:
        """Count or log a message given back after a defect."""

    # -- shared steps ----------------------------------------------------------------------

    async def ack(self, message: AbstractIncomingMessage) -> None:
        """Acknowledge a delivery, with every other ack asked for in the same turn of the
        event loop (see :class:`Acks`)."""
        await self._acks.ack(message)
        self._acked.add(id(message))

    async def requeue_later(self, message: AbstractIncomingMessage) -> None:
        # Holding the message (rather than requeueing it at once) spaces out the attempts
        # that the queue's delivery limit counts. Stopping cuts the wait short.
        delay = self._backoff.delay(delivery(message))
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        await message.nack(requeue=True)

    async def _give_back(self, message: AbstractIncomingMessage) -> None:
        if message.processed:
            return
        try:
            await self.requeue_later(message)
        except Exception:
            # The channel is gone: the broker takes the message back with it.
            log.exception("could not requeue a message", extra=delivery_fields(message))
            return
        await self.gave_back(message)

    @contextmanager
    def _tracked(self) -> Iterator[None]:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _drain(self) -> None:
        # Deliveries read just before the cancel start their handler on a later turn of
        # the loop: let them register before waiting for the set to empty.
        for _ in range(3):
            await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._stop_grace_seconds
        while self._in_flight:
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning(
                    "stopped with messages unsettled; the broker will deliver them again",
                    extra={"in_flight": len(self._in_flight)},
                )
                return
            await asyncio.wait(set(self._in_flight), timeout=remaining)


class Acks:
    """Acknowledges deliveries, writing every ack asked for on a channel in one turn of
    the event loop to the socket at once.

    aio-pika's ``ack`` gives aiormq one frame and waits for it to be written, and
    aiormq's writer makes one ``send()`` per frame, so the broker is woken once per
    message. A dispatch batch settles all of its messages in the same turn: here their
    ``basic.ack`` frames go out together, each still for its own delivery tag (never
    ``multiple``, so no ack can cover a delivery still being worked on)."""

    def __init__(self) -> None:
        self._due: dict[int, _DueAcks] = {}

    async def ack(self, message: AbstractIncomingMessage) -> None:
        tag = message.delivery_tag
        if tag is None:
            raise ValueError("a delivery without a tag cannot be acknowledged")
        channel = message.channel
        if not isinstance(channel, aiormq.Channel):
            await message.ack()  # not aiormq's own channel: leave it to aio-pika
            return
        due = self._due.get(id(channel))
        if due is None:
            due = self._due[id(channel)] = _DueAcks(channel, [], channel.create_future())
            asyncio.get_running_loop().call_soon(self._flush, id(channel))
        due.tags.append(tag)
        await asyncio.shield(due.written)

    def _flush(self, key: int) -> None:
        # Runs after the handlers already woken in this turn: their acks go too.
        due = self._due.pop(key)
        write = asyncio.ensure_future(_write_acks(due))
        write.add_done_callback(_retrieve)


@dataclass(slots=True)
class _DueAcks:
    channel: aiormq.Channel
    tags: list[int]
    written: asyncio.Future[Any]


async def _write_acks(due: _DueAcks) -> None:
    channel = due.channel
    try:
        if channel.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} closed")
        frames = [Basic.Ack(delivery_tag=tag) for tag in due.tags]
        await channel.write_queue.put(
            ChannelFrame.marshall(
                channel_number=channel.number, frames=frames, drain_future=due.written
            )
        )
    except BaseException as error:
        if not due.written.done():
            due.written.set_exception(
                error if isinstance(error, Exception) else ChannelInvalidStateError()
            )
        raise


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        _ = task.exception()


def delivery(message: AbstractIncomingMessage) -> int:
    """Which delivery of the message this is, 1 for the first (quorum queues count
    earlier unsuccessful ones in ``x-delivery-count``)."""
    earlier = message.headers.get("x-delivery-count")
    return earlier + 1 if isinstance(earlier, int) and earlier >= 0 else 1


def delivery_fields(message: AbstractIncomingMessage) -> dict[str, Any]:
    return {
        "message_id": (message.message_id or "")[:_LOGGED_ID_LENGTH] or None,
        "delivery": delivery(message),
    }


async def quietly(step: str, operation: Awaitable[object]) -> None:
    """Run a step of stopping that may fail or hang while the broker is unreachable; the
    broker takes back whatever is unsettled when the connection goes anyway."""
    try:
        async with asyncio.timeout(_CLOSE_SECONDS):
            await operation
    except Exception as error:
        log.warning(
            "could not finish a step of stopping", extra={"step": step, "error": repr(error)}
        )
