"""``vigil dispatcher``: turns ``event.received`` messages into score jobs.

Messages of one tenant that arrive within ``dispatch_batch_linger_seconds`` of each
other are taken together, up to ``dispatch_batch_size``, and for each such batch, in the
tenant:

    1. insert the messages' ids into the inbox (consumer ``dispatcher``), not yet
       committed; a message seen before is acknowledged and dropped here
    2. enqueue one score job for the events of the rest, its id derived from them
       (see :mod:`adapters.score_queue`)
    3. commit the inbox rows, then acknowledge the messages

The inbox rows are only committed once the job is enqueued, so "seen" always means "its
job was enqueued"; a duplicate is still caught before it reaches Redis (a concurrent
copy waits on the uncommitted row, then sees it; rows are inserted in one order, so two
batches holding copies of each other's messages wait rather than deadlock). A crash
between the enqueue and the commit leaves the messages unacknowledged: they come again
and are enqueued again, which arq refuses while the first job waits if they form the
same batch, and which scores nothing twice otherwise (an assessment is unique per
event and ruleset version).

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
from adapters.score_queue import MAX_BATCH, enqueue_batch
from adapters.score_queue import connect as connect_queue
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


_Pending = tuple[Received, "asyncio.Future[Fate]"]


class Dispatcher(QueueConsumer):
    """Consumes the dispatch queue until :meth:`stop`; :meth:`handle` answers one delivery.

    Messages of one tenant that arrive together are dispatched together: the first
    waits ``linger_seconds`` for others, and up to ``batch_size`` of them share one
    transaction, one inbox statement and one batch job. Each message is still settled
    on its own, by what became of its batch.

    At most ``tenant_batches`` batches of a tenant that are not full run at once. While
    that many run, the tenant's next batch goes on gathering past its linger and starts
    when one of them ends (or once it is full): the busier the tenant, the larger its
    batches, so the cost per message of a transaction and a job falls as the load rises,
    while a quiet tenant's message still waits only the linger."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        uow_factory: UnitOfWorkFactory,
        redis: ArqRedis,
        names: Names,
        *,
        prefetch: int = 200,
        concurrency: int = 10,
        batch_size: int = 100,
        linger_seconds: float = 0.01,
        tenant_batches: int = 2,
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
        self._batch_size = max(1, min(batch_size, MAX_BATCH))
        self._linger = linger_seconds
        self._tenant_batches = max(1, tenant_batches)
        self._open: dict[uuid.UUID, list[_Pending]] = {}
        # Per tenant: its batches running, and its open batch once it has lingered out
        # while that many ran.
        self._running_for: dict[uuid.UUID, int] = {}
        self._held: dict[uuid.UUID, list[_Pending]] = {}
        self._running: set[asyncio.Task[None]] = set()

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
            await self.ack(message)
            _settled(fate, message_id=received.message_id)

    async def _dispatch(self, received: Received) -> Fate:
        """Join the tenant's open batch (opening one if need be) and wait for its fate."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Fate] = loop.create_future()
        # A handler cancelled while its batch runs never reads the outcome.
        future.add_done_callback(_retrieve)
        batch = self._open.get(received.tenant_id)
        if batch is None:
            batch = self._open[received.tenant_id] = []
            loop.call_later(self._linger, self._lingered, received.tenant_id, batch)
        batch.append((received, future))
        if len(batch) >= self._batch_size:
            self._close(received.tenant_id, batch)
        # Shielded: the batch's transaction commits or rolls back whole either way.
        return await asyncio.shield(future)

    def _lingered(self, tenant_id: uuid.UUID, batch: list[_Pending]) -> None:
        if self._open.get(tenant_id) is not batch:
            return  # closed already, full
        if self._running_for.get(tenant_id, 0) < self._tenant_batches:
            self._close(tenant_id, batch)
        else:
            self._held[tenant_id] = batch

    def _close(self, tenant_id: uuid.UUID, batch: list[_Pending]) -> None:
        if self._open.get(tenant_id) is batch:
            del self._open[tenant_id]
            if self._held.get(tenant_id) is batch:
                del self._held[tenant_id]
            self._running_for[tenant_id] = self._running_for.get(tenant_id, 0) + 1
            task = asyncio.ensure_future(self._run(tenant_id, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _ended(self, tenant_id: uuid.UUID) -> None:
        running = self._running_for[tenant_id] - 1
        if running:
            self._running_for[tenant_id] = running
        else:
            del self._running_for[tenant_id]
        held = self._held.get(tenant_id)
        if held is not None:
            self._close(tenant_id, held)

    async def _run(self, tenant_id: uuid.UUID, batch: list[_Pending]) -> None:
        try:
            async with self._slots:
                fates = await self._dispatch_batch(tenant_id, [item for item, _ in batch])
        except BaseException as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        finally:
            self._ended(tenant_id)
        for (_, future), fate in zip(batch, fates, strict=True):
            if not future.done():
                future.set_result(fate)

    async def _dispatch_batch(self, tenant_id: uuid.UUID, batch: list[Received]) -> list[Fate]:
        """One transaction: the inbox rows of the batch's messages, and one job for the
        events of those not seen before; a copy of a message seen before is a duplicate."""
        async with self._uow_factory(tenant_id) as uow:
            new = await uow.inbox.first_sights(CONSUMER, [item.message_id for item in batch])
            fresh: dict[str, Received] = {}
            for item in batch:
                if item.message_id in new:
                    fresh.setdefault(item.message_id, item)
            enqueued = True
            if fresh:
                events = {item.event_id: item.correlation_id for item in fresh.values()}
                enqueued = await enqueue_batch(self._redis, tenant_id, list(events.items()))
                await uow.commit()
        first = Fate.ENQUEUED if enqueued else Fate.ALREADY_QUEUED
        return [first if fresh.get(item.message_id) is item else Fate.DUPLICATE for item in batch]


def _retrieve(future: asyncio.Future[Fate]) -> None:
    if not future.cancelled():
        _ = future.exception()


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
        batch_size=settings.dispatch_batch_size,
        linger_seconds=settings.dispatch_batch_linger_seconds,
        tenant_batches=settings.dispatch_tenant_batches,
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
