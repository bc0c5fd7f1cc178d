"""``vigil dispatcher``: turns each ``event.received`` message into a score job.

For each message of the dispatch queue, in the message's tenant:

    1. insert the message id into the inbox (consumer ``dispatcher``), not yet committed;
       a message seen before is acknowledged and dropped here
    2. enqueue the score job, its id deterministic (``score:<tenant>:<event>``)
    3. commit the inbox row, then acknowledge the message

The inbox row is only committed once the job is enqueued, so "seen" always means "its
job was enqueued"; a duplicate is still caught before it reaches Redis (a concurrent
copy waits on the uncommitted row, then sees it). A crash between the enqueue and the
commit leaves the message unacknowledged: it comes again and is enqueued again, which is
refused while the first job waits and is a no-op once it has run.

    enqueued, already_queued   step 3 done (already_queued: arq had the job already)
    duplicate                  seen before: acknowledged
    rejected                   not an ``event.received`` CloudEvent: rejected without
                               requeue, so the queue dead-letters it
    retried                    the database or Redis is away: held for a back-off, then
                               requeued; the queue's delivery limit dead-letters a
                               message that never gets through, and the reconciler still
                               finds its event unassessed

The process also runs the reconciler (see :mod:`workers.reconciler`) every
``reconcile_interval_seconds``, and the SLA sweep (see :mod:`workers.sla_sweeper`) every
``sla_sweep_interval_seconds``. On SIGTERM or SIGINT it stops taking messages, finishes
those in hand and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from dataclasses import dataclass
from enum import StrEnum

from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from arq.connections import ArqRedis

from adapters import bounded_json
from adapters.broker import Names
from adapters.database import make_engine
from adapters.logging import bind_context
from adapters.metrics import DISPATCH_MESSAGES, serve_metrics
from adapters.score_queue import connect as connect_queue
from adapters.score_queue import enqueue_score
from adapters.settings import Settings
from adapters.unit_of_work import unit_of_work_factory
from domain.errors import TransientFailure
from domain.messages import EVENT_RECEIVED
from domain.ports import UnitOfWorkFactory
from workers.broker_wait import connect_when_up
from workers.consumer import STOP_GRACE_SECONDS, Backoff, QueueConsumer
from workers.envelope import valid_correlation_id
from workers.reconciler import Reconciler
from workers.sla_sweeper import SlaSweeper

log = logging.getLogger(__name__)

CONSUMER = "dispatcher"
CONNECTION_NAME = "vigil-dispatcher"
MAX_MESSAGE_ID = 300
MAX_MESSAGE_BYTES = 64 * 1024
MAX_DEPTH = 32


class Fate(StrEnum):
    """How a message was settled; the values are the metric's ``outcome`` labels."""

    ENQUEUED = "enqueued"
    ALREADY_QUEUED = "already_queued"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    RETRIED = "retried"


class Unreadable(ValueError):
    """A message that is not an ``event.received`` CloudEvent."""


@dataclass(frozen=True, slots=True)
class Received:
    message_id: str
    tenant_id: uuid.UUID
    event_id: uuid.UUID
    correlation_id: str | None


def read_received(body: bytes) -> Received:
    """Read the few attributes the dispatcher needs; raise :class:`Unreadable`."""
    # The relay writes these messages, but anyone the broker lets publish here could too:
    # an outsized or deeply nested body is refused before it is decoded.
    if len(body) > MAX_MESSAGE_BYTES:
        raise Unreadable(f"more than {MAX_MESSAGE_BYTES} bytes")
    try:
        envelope = bounded_json.loads(body.decode("utf-8"), max_depth=MAX_DEPTH)
    except bounded_json.TooDeep as error:
        raise Unreadable(str(error)) from None
    except ValueError:
        raise Unreadable("not JSON") from None
    if not isinstance(envelope, dict):
        raise Unreadable("not a JSON object")
    if envelope.get("type") != EVENT_RECEIVED:
        raise Unreadable(f"type is not {EVENT_RECEIVED}")
    message_id = envelope.get("id")
    if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_MESSAGE_ID:
        raise Unreadable("id is missing or too long")
    data = envelope.get("data")
    return Received(
        message_id=message_id,
        tenant_id=_uuid(envelope.get("tenantid"), "tenantid"),
        event_id=_uuid(data.get("eventId") if isinstance(data, dict) else None, "data.eventId"),
        correlation_id=valid_correlation_id(envelope.get("correlationid")),
    )


def _uuid(value: object, name: str) -> uuid.UUID:
    if not isinstance(value, str):
        raise Unreadable(f"{name} is missing")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise Unreadable(f"{name} is not a UUID") from None


class Dispatcher(QueueConsumer):
    """Consumes the dispatch queue until :meth:`stop`; :meth:`handle` answers one delivery."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        uow_factory: UnitOfWorkFactory,
        redis: ArqRedis,
        names: Names,
        *,
        prefetch: int = 200,
        concurrency: int = 10,
        backoff: Backoff | None = None,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
    ) -> None:
        super().__init__(
            connection,
            names,
            names.dispatch,
            prefetch=prefetch,
            concurrency=concurrency,
            backoff=backoff,
            stop_grace_seconds=stop_grace_seconds,
        )
        self._uow_factory = uow_factory
        self._redis = redis

    async def gave_back(self, message: AbstractIncomingMessage) -> None:
        _settled(Fate.RETRIED, message_id=message.message_id, reason="INTERNAL")

    async def answer(self, message: AbstractIncomingMessage) -> None:
        try:
            received = read_received(message.body)
        except Unreadable as error:
            await message.reject(requeue=False)
            _settled(Fate.REJECTED, message_id=message.message_id, reason=str(error))
            return

        with bind_context(
            tenant_id=received.tenant_id,
            event_id=received.event_id,
            correlation_id=received.correlation_id,
        ):
            try:
                async with self._slots:
                    fate = await self._dispatch(received)
            except TransientFailure as error:
                await self.requeue_later(message)
                _settled(Fate.RETRIED, message_id=received.message_id, reason=error.message)
                return
            except Exception:
                # Not the message's fault as far as we can tell (a bug, a missing grant):
                # hold it back like a transient failure; the delivery limit ends it.
                log.exception("dispatching failed unexpectedly")
                await self.requeue_later(message)
                _settled(Fate.RETRIED, message_id=received.message_id, reason="INTERNAL")
                return
            await message.ack()
            _settled(fate, message_id=received.message_id)

    async def _dispatch(self, received: Received) -> Fate:
        async with self._uow_factory(received.tenant_id) as uow:
            if not await uow.inbox.first_sight(CONSUMER, received.message_id):
                return Fate.DUPLICATE
            enqueued = await enqueue_score(
                self._redis,
                received.tenant_id,
                received.event_id,
                correlation_id=received.correlation_id,
            )
            await uow.commit()
        return Fate.ENQUEUED if enqueued else Fate.ALREADY_QUEUED


def _settled(fate: Fate, *, message_id: str | None, reason: str | None = None) -> None:
    DISPATCH_MESSAGES.labels(fate.value).inc()
    fields = {"outcome": fate.value, "message_id": (message_id or "")[:MAX_MESSAGE_ID] or None}
    if fate is Fate.REJECTED:
        log.warning("dispatch message rejected", extra={**fields, "reason": reason})
    elif fate is Fate.RETRIED:
        log.warning(
            "dispatch message requeued after a transient failure",
            extra={**fields, "reason": reason},
        )
    else:
        log.debug("dispatch message settled", extra=fields)


async def run(settings: Settings) -> None:
    """Consume and reconcile until SIGTERM or SIGINT, then finish what is in hand."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    serve_metrics(settings.dispatch_metrics_port, settings.metrics_host)

    engine = make_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        application_name=CONNECTION_NAME,
    )
    redis = connect_queue(settings, max_connections=settings.database_pool_size + 10)
    # Reconciling needs only the database and Redis: it goes on while the broker is away.
    reconciler = Reconciler.from_settings(settings, engine, redis)
    reconciling = asyncio.create_task(reconciler.run(stop), name="reconcile")
    sweeping = asyncio.create_task(
        SlaSweeper.from_settings(settings, engine).run(stop), name="sla-sweep"
    )
    try:
        connection = await connect_when_up(settings, stop, name=CONNECTION_NAME)
        if connection is None:
            return
        try:
            await _consume(settings, connection, unit_of_work_factory(engine), redis, stop)
        finally:
            await connection.close()
    finally:
        for task in (reconciling, sweeping):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await redis.aclose(close_connection_pool=True)
        await engine.dispose()
    log.info("dispatcher stopped")


async def _consume(
    settings: Settings,
    connection: AbstractRobustConnection,
    uow_factory: UnitOfWorkFactory,
    redis: ArqRedis,
    stop: asyncio.Event,
) -> None:
    names = Names(settings.amqp_prefix)
    dispatcher = Dispatcher(
        connection,
        uow_factory,
        redis,
        names,
        prefetch=settings.dispatch_prefetch,
        concurrency=settings.database_pool_size,
    )
    try:
        await dispatcher.start()
        log.info(
            "consuming the dispatch queue",
            extra={"queue": names.dispatch, "score_queue": settings.score_queue},
        )
        await stop.wait()
        log.info("stopping: finishing the messages in hand")
    finally:
        await dispatcher.stop()
