"""The inbound-queue consumer: each CloudEvent on the queue is answered on its own and
settled only once its fate is certain.

    accepted, duplicate   the event is stored (or was stored before) and committed: ack
    dead-lettered         it can never be valid: a copy goes to the dead-letter queue with
                          the reason, and once the broker confirmed the copy: ack
    retried               a transient failure (the database is down, a deadlock): wait,
                          then nack with requeue; the queue's delivery limit dead-letters a
                          message that never succeeds, so nothing loops forever

Any other failure while answering one message is a defect: it is logged and the message
is retried like a transient failure (held, then nacked with requeue, so the delivery
limit still ends the attempts). A message is never left unsettled: each one would hold a
prefetch slot until the consumer restarts, and enough of them would stall it for every
tenant. A failure never stops the consumer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from adapters.broker import Names, declare_topology
from adapters.logging import bind_context
from adapters.metrics import EVENTS_INGESTED, INBOUND_MESSAGES
from domain.errors import InvalidEvent, TransientFailure, UnknownTenant
from domain.ids import new_id
from domain.ports import UnitOfWorkFactory
from services.ingest import Caller, IngestResult, Outcome, ingest_events
from workers.dead_letters import DeadLetters, Reason
from workers.envelope import Envelope, event_field, read_envelope, valid_correlation_id

log = logging.getLogger(__name__)

DOOR = "amqp"
STOP_GRACE_SECONDS = 30.0
_LOGGED_ID_LENGTH = 200
_CLOSE_SECONDS = 5.0


class Fate(StrEnum):
    """How a message was settled; the values are the metric's ``outcome`` labels."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"
    RETRIED = "retried"


_LOG_EVENTS = {
    Fate.ACCEPTED: "inbound event accepted",
    Fate.DUPLICATE: "inbound event was stored before",
    Fate.DEAD_LETTERED: "inbound message dead-lettered",
    Fate.RETRIED: "inbound message requeued after a transient failure",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    fate: Fate
    reason: Reason | None = None
    event_id: uuid.UUID | None = None


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


class InboundConsumer:
    """Consumes the inbound queue until :meth:`stop`; :meth:`handle` answers one delivery."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        uow_factory: UnitOfWorkFactory,
        names: Names,
        *,
        prefetch: int = 100,
        concurrency: int = 10,
        backoff: Backoff | None = None,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
    ) -> None:
        self._connection = connection
        self._uow_factory = uow_factory
        self._names = names
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
        self._dead_letters: DeadLetters | None = None

    async def start(self) -> None:
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self._prefetch)
        await declare_topology(channel, self._names)
        self._dead_letters = await DeadLetters.open(self._connection, self._names)
        self._channel = channel
        self._queue = await channel.get_queue(self._names.inbound)
        self._consumer_tag = await self._queue.consume(self.handle)

    async def stop(self) -> None:
        """Stop taking messages, finish those in hand, close the channels. What is still
        unsettled when the channels close goes back to the queue."""
        self._stopping.set()
        if self._queue is not None and self._consumer_tag is not None:
            await _quietly("cancelling the consumer", self._queue.cancel(self._consumer_tag))
        await self._drain()
        if self._dead_letters is not None:
            await _quietly("closing the dead-letter channel", self._dead_letters.close())
        if self._channel is not None:
            await _quietly("closing the channel", self._channel.close())

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Answer one delivery. Never raises: one bad message must not stop the others."""
        with self._tracked():
            try:
                await self._answer(message)
            except Exception:
                log.exception(
                    "answering an inbound message failed", extra=_delivery_fields(message)
                )
                await self._give_back(message)

    async def _give_back(self, message: AbstractIncomingMessage) -> None:
        """Settle a message whose answer failed unexpectedly: requeue it after the
        backoff, unless the failure came after it was settled."""
        if message.processed:
            return
        verdict = Verdict(Fate.RETRIED, Reason("INTERNAL", "", "an unexpected failure"))
        try:
            await self._requeue_later(message, verdict)
        except Exception:
            # The channel is gone: the broker takes the message back with it.
            log.exception("could not requeue an inbound message", extra=_delivery_fields(message))
            return
        _count(verdict)
        _log_verdict(message, verdict, None)

    # -- one message ----------------------------------------------------------------------

    async def _answer(self, message: AbstractIncomingMessage) -> None:
        try:
            envelope = read_envelope(
                message.body,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
            )
        except InvalidEvent as error:
            with bind_context(correlation_id=valid_correlation_id(message.correlation_id)):
                await self._settle(message, _refused(error.code, error.field, error.message))
            return

        caller = _caller(envelope, message)
        with bind_context(
            tenant_id=caller.tenant_id,
            correlation_id=caller.correlation_id,
            traceparent=envelope.traceparent,
        ):
            async with self._slots:
                verdict = await self._ingest(caller, envelope)
            await self._settle(message, verdict, envelope)

    async def _ingest(self, caller: Caller, envelope: Envelope) -> Verdict:
        try:
            (result,) = await ingest_events(self._uow_factory, caller, [envelope.event])
        except UnknownTenant as error:
            return _refused(error.code, "tenantid", error.message)
        except TransientFailure as error:
            return Verdict(Fate.RETRIED, Reason(error.code, "", error.message))
        except Exception:
            # Not the message's fault as far as we can tell (a bug, a missing grant): hold
            # it back like a transient failure; the delivery limit ends the attempts.
            log.exception("ingesting an inbound event failed", extra=_event_fields(envelope))
            return Verdict(Fate.RETRIED, Reason("INTERNAL", "", "an unexpected failure"))
        return _verdict(result)

    async def _settle(
        self, message: AbstractIncomingMessage, verdict: Verdict, envelope: Envelope | None = None
    ) -> None:
        if verdict.fate is Fate.DEAD_LETTERED and not await self._dead_letter(message, verdict):
            verdict = Verdict(Fate.RETRIED, verdict.reason)
        if verdict.fate is Fate.RETRIED:
            await self._requeue_later(message, verdict)
        else:
            await message.ack()
        _count(verdict)
        _log_verdict(message, verdict, envelope)

    async def _dead_letter(self, message: AbstractIncomingMessage, verdict: Verdict) -> bool:
        """Publish the copy with its reason; True once the broker confirmed it."""
        if self._dead_letters is None or verdict.reason is None:
            raise RuntimeError("the consumer is not started")
        try:
            await self._dead_letters.publish(message, verdict.reason)
        except Exception:
            log.exception(
                "could not dead-letter an inbound message", extra=_delivery_fields(message)
            )
            return False
        return True

    async def _requeue_later(self, message: AbstractIncomingMessage, verdict: Verdict) -> None:
        # Holding the message (rather than requeueing it at once) spaces out the attempts
        # that the queue's delivery limit counts. Stopping cuts the wait short.
        delay = self._backoff.delay(_delivery(message))
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        await message.nack(requeue=True)

    # -- stopping -------------------------------------------------------------------------

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


async def _quietly(step: str, operation: Awaitable[object]) -> None:
    """Run a step of stopping that may fail or hang while the broker is unreachable; the
    broker takes back whatever is unsettled when the connection goes anyway."""
    try:
        async with asyncio.timeout(_CLOSE_SECONDS):
            await operation
    except Exception as error:
        log.warning(
            "could not finish a step of stopping", extra={"step": step, "error": repr(error)}
        )


# -- helpers ------------------------------------------------------------------------------


def _caller(envelope: Envelope, message: AbstractIncomingMessage) -> Caller:
    correlation_id = (
        envelope.correlation_id or valid_correlation_id(message.correlation_id) or str(new_id())
    )
    return Caller(
        tenant_id=envelope.tenant_id,
        actor=f"{DOOR}:{envelope.source}",
        door=DOOR,
        correlation_id=correlation_id,
    )


def _verdict(result: IngestResult) -> Verdict:
    if result.outcome is Outcome.ACCEPTED:
        return Verdict(Fate.ACCEPTED, event_id=result.event_id)
    if result.outcome is Outcome.DUPLICATE:
        return Verdict(Fate.DUPLICATE, event_id=result.event_id)
    rejection = result.rejection
    if rejection is None:  # pragma: no cover - a rejected result always says why
        return _refused("INTERNAL", "", "rejected without a reason")
    return _refused(rejection.code, event_field(rejection.field), rejection.message)


def _refused(code: str, field: str, message: str) -> Verdict:
    return Verdict(Fate.DEAD_LETTERED, Reason(code, field, message))


def _delivery(message: AbstractIncomingMessage) -> int:
    """Which delivery of the message this is, 1 for the first (quorum queues count
    earlier unsuccessful ones in ``x-delivery-count``)."""
    earlier = message.headers.get("x-delivery-count")
    return earlier + 1 if isinstance(earlier, int) and earlier >= 0 else 1


def _count(verdict: Verdict) -> None:
    INBOUND_MESSAGES.labels(outcome=verdict.fate.value).inc()
    if verdict.fate is Fate.ACCEPTED:
        EVENTS_INGESTED.labels(door=DOOR, outcome="accepted").inc()
    elif verdict.fate is Fate.DUPLICATE:
        EVENTS_INGESTED.labels(door=DOOR, outcome="duplicate").inc()
    elif verdict.fate is Fate.DEAD_LETTERED:
        EVENTS_INGESTED.labels(door=DOOR, outcome="rejected").inc()


def _log_verdict(
    message: AbstractIncomingMessage, verdict: Verdict, envelope: Envelope | None
) -> None:
    fields: dict[str, Any] = {**_delivery_fields(message), "outcome": verdict.fate.value}
    if envelope is not None:
        fields.update(_event_fields(envelope))
    if verdict.event_id is not None:
        fields["event_id"] = str(verdict.event_id)
    if verdict.reason is not None:
        fields.update(code=verdict.reason.code, reason=verdict.reason.message)
        if verdict.reason.field:
            fields["field"] = verdict.reason.field
    level = logging.INFO if verdict.fate in (Fate.ACCEPTED, Fate.DUPLICATE) else logging.WARNING
    log.log(level, _LOG_EVENTS[verdict.fate], extra=fields)


def _delivery_fields(message: AbstractIncomingMessage) -> dict[str, Any]:
    return {
        "message_id": (message.message_id or "")[:_LOGGED_ID_LENGTH] or None,
        "delivery": _delivery(message),
        "body_bytes": len(message.body),
    }


def _event_fields(envelope: Envelope) -> dict[str, Any]:
    # Never the data: it holds account numbers.
    return {
        "cloudevent_id": envelope.event_id[:_LOGGED_ID_LENGTH],
        "event_type": envelope.event_type[:_LOGGED_ID_LENGTH],
        "source": envelope.source,
    }
