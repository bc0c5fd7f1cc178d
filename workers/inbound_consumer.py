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

import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustConnection,
)

from adapters.broker import Names
from adapters.logging import bind_context
from adapters.metrics import EVENTS_INGESTED, INBOUND_MESSAGES
from domain.errors import InvalidEvent, TransientFailure, UnknownTenant
from domain.ids import new_id
from domain.ports import IngestUnitOfWorkFactory
from services.ingest import Caller, IngestResult, Outcome, ingest_events
from workers.consumer import (
    STOP_GRACE_SECONDS,
    Backoff,
    QueueConsumer,
    delivery_fields,
    quietly,
)
from workers.dead_letters import DeadLetters, Reason
from workers.envelope import Envelope, event_field, read_envelope, valid_correlation_id

log = logging.getLogger(__name__)

DOOR = "amqp"
_LOGGED_ID_LENGTH = 200


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


class InboundConsumer(QueueConsumer):
    """Consumes the inbound queue until :meth:`stop`; :meth:`handle` answers one delivery."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        uow_factory: IngestUnitOfWorkFactory,
        names: Names,
        *,
        prefetch: int = 100,
        concurrency: int = 10,
        backoff: Backoff | None = None,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
    ) -> None:
        super().__init__(
            connection,
            names,
            names.inbound,
            prefetch=prefetch,
            concurrency=concurrency,
            backoff=backoff,
            stop_grace_seconds=stop_grace_seconds,
        )
        self._uow_factory = uow_factory
        self._dead_letters: DeadLetters | None = None

    async def opened(self) -> None:
        self._dead_letters = await DeadLetters.open(self._connection, self._names)

    async def closing(self) -> None:
        if self._dead_letters is not None:
            await quietly("closing the dead-letter channel", self._dead_letters.close())

    async def gave_back(self, message: AbstractIncomingMessage) -> None:
        verdict = Verdict(Fate.RETRIED, Reason("INTERNAL", "", "an unexpected failure"))
        _count(verdict)
        _log_verdict(message, verdict, None)

    # -- one message ----------------------------------------------------------------------

    async def answer(self, message: AbstractIncomingMessage) -> None:
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
            await self.requeue_later(message)
        else:
            await self.ack(message)
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
    return {**delivery_fields(message), "body_bytes": len(message.body)}


def _event_fields(envelope: Envelope) -> dict[str, Any]:
    # Never the data: it holds account numbers.
    return {
        "cloudevent_id": envelope.event_id[:_LOGGED_ID_LENGTH],
        "event_type": envelope.event_type[:_LOGGED_ID_LENGTH],
        "source": envelope.source,
    }
