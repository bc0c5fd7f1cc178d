"""Live review queues inside one portal process: a hub of subscribers per tenant, fed
from the tenant's case changes, and the RabbitMQ consumer that wakes it.

A ``case.*`` message only says "this tenant's cases changed". The hub then reads the
changes from the tenant's audit chain (:mod:`services.review_queue`), after the last one
it fanned out, and offers them to the tenant's subscribers. Reading rather than
forwarding the message costs one small query per burst of changes and tenant (bursts
coalesce: a tenant has one reader), and buys what the message alone cannot give: every
change carries its position in commit order (the cursor a reconnecting client sends
back), changes are delivered in that order although the relay publishes different
cases concurrently, and a message lost with this replica's queue (a broker outage
deletes it) costs nothing, since the next message of the tenant, a reconnect of the
consumer or the periodic look (``live_poll_seconds``) reads what it announced.

Each subscriber holds at most ``live_buffer_size`` changes. One that falls behind has
its buffer cleared and is sent a single :class:`Resync` in place of what was dropped,
so a slow client costs bounded memory and learns that it must reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import AMQPError

from adapters.broker import Names, connect, declare_topology
from adapters.settings import Settings
from domain.errors import TransientFailure
from domain.ports import UnitOfWorkFactory
from domain.review_queue import CaseChange, Cursor
from services.review_queue import changes_since, queue_head

log = logging.getLogger(__name__)

CASE_BINDING = "case.#"
# Changes read per query; a tenant's reader reads pages until it is level.
PAGE = 200
# Wake-ups waiting in this replica's queue: each only says "a tenant changed", so
# dropping the oldest when a replica lags loses nothing the next one does not recover.
QUEUE_MAX_LENGTH = 10_000
PREFETCH = 100
START_SECONDS = 10.0
CLOSE_SECONDS = 10.0
# After a lost connection, aio-pika tries again this often.
RECONNECT_SECONDS = 5.0
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Resync:
    """Changes up to ``cursor`` were dropped for this subscriber: reload the queue; the
    stream goes on after it."""

    cursor: Cursor
    reason: str


Item = CaseChange | Resync


class Subscriber:
    """One subscription's bounded buffer."""

    def __init__(self, tenant_id: uuid.UUID, capacity: int) -> None:
        self.tenant_id = tenant_id
        self._capacity = capacity
        self._items: deque[Item] = deque()
        self._ready = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._items)

    def offer(self, change: CaseChange) -> None:
        if len(self._items) >= self._capacity:
            self._items.clear()
            self._items.append(Resync(change.cursor, "the subscriber fell behind"))
            log.info(
                "review queue subscriber fell behind",
                extra={"tenant_id": str(self.tenant_id), "capacity": self._capacity},
            )
        else:
            self._items.append(change)
        self._ready.set()

    async def next(self, *, within: float) -> Item | None:
        """The oldest item, or None if none came within ``within`` seconds."""
        if not self._items:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout=max(within, 0.0))
        return self._items.popleft() if self._items else None


class _TenantFeed:
    """The reader of one tenant's changes, alive while the tenant has subscribers here."""

    def __init__(self, hub: Hub, tenant_id: uuid.UUID) -> None:
        self._hub = hub
        self.tenant_id = tenant_id
        self.subscribers: set[Subscriber] = set()
        self.position = 0
        self.started = asyncio.Event()
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"review-feed-{tenant_id}")

    async def _run(self) -> None:
        attempt = 0
        while not self.started.is_set():
            try:
                self.position = (await queue_head(self._hub.uow_factory, self.tenant_id)).position
                self.started.set()
            except Exception:
                attempt += 1
                log.warning("reading the review queue's head failed", exc_info=True)
                await asyncio.sleep(_delay(attempt))
        attempt = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self._hub.poll_seconds)
            self.wake.clear()
            try:
                await self._read()
                attempt = 0
            except Exception:
                # The database is away: keep the position and look again; the
                # subscribers wait (and their tokens' expiry still ends them).
                attempt += 1
                log.warning("reading the review queue failed", exc_info=True)
                await asyncio.sleep(_delay(attempt))
                self.wake.set()

    async def _read(self) -> None:
        while True:
            changes = await changes_since(
                self._hub.uow_factory, self.tenant_id, Cursor(self.position), limit=PAGE
            )
            for change in changes:
                for subscriber in tuple(self.subscribers):
                    subscriber.offer(change)
                self.position = change.position
            if len(changes) < PAGE:
                return


class Hub:
    """Tenant -> subscribers of this process."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        *,
        buffer_size: int,
        poll_seconds: float,
        max_subscribers: int = 5000,
    ) -> None:
        self.uow_factory = uow_factory
        self.buffer_size = buffer_size
        self.poll_seconds = poll_seconds
        self.max_subscribers = max_subscribers
        self._feeds: dict[uuid.UUID, _TenantFeed] = {}
        self._subscribers = 0

    @contextlib.asynccontextmanager
    async def subscription(self, tenant_id: uuid.UUID) -> AsyncIterator[tuple[Subscriber, Cursor]]:
        """A subscriber of the tenant, and the position after which its buffer receives
        every change; it is removed when the block ends."""
        if self._subscribers >= self.max_subscribers:
            raise TransientFailure("this portal serves as many subscriptions as it may")
        self._subscribers += 1
        feed = self._feeds.get(tenant_id)
        if feed is None:
            feed = self._feeds[tenant_id] = _TenantFeed(self, tenant_id)
        subscriber = Subscriber(tenant_id, self.buffer_size)
        try:
            try:
                await asyncio.wait_for(feed.started.wait(), timeout=START_SECONDS)
            except TimeoutError as error:
                raise TransientFailure("the review queue cannot be read now") from error
            # No await between reading the position and joining: every change after
            # it reaches the buffer.
            feed.subscribers.add(subscriber)
            yield subscriber, Cursor(feed.position)
        finally:
            self._subscribers -= 1
            feed.subscribers.discard(subscriber)
            if not feed.subscribers and self._feeds.get(tenant_id) is feed:
                del self._feeds[tenant_id]
                feed.task.cancel()

    def notify(self, tenant_id: uuid.UUID) -> None:
        """The tenant's cases changed: its reader looks (nothing to do without one)."""
        feed = self._feeds.get(tenant_id)
        if feed is not None:
            feed.wake.set()

    def notify_all(self) -> None:
        for feed in self._feeds.values():
            feed.wake.set()

    def subscriber_count(self) -> int:
        """Subscribers that have joined their tenant's feed."""
        return sum(len(feed.subscribers) for feed in self._feeds.values())

    async def close(self) -> None:
        feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            feed.task.cancel()
        for feed in feeds:
            with contextlib.suppress(asyncio.CancelledError):
                await feed.task


def replica_queue_name(names: Names) -> str:
    host = socket.gethostname()[:60]
    return f"{names.prefix}.live.{host}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


class CaseEventConsumer:
    """This replica's exclusive, auto-delete queue of ``case.*`` messages, bound to the
    events exchange; each message wakes its tenant's reader in the hub.

    It connects in the background, so that the portal serves HTTP while the broker is
    away; the robust connection re-declares the queue and its binding after a loss, and
    every tenant is then read once, for what was published while the queue was gone.
    """

    def __init__(self, settings: Settings, hub: Hub) -> None:
        self._settings = settings
        self._hub = hub
        self._names = Names(settings.amqp_prefix)
        self.queue_name = replica_queue_name(self._names)
        # The connection is named after the queue: an operator sees which replica it is.
        self.name = f"vigil-portal-live {self.queue_name}"
        self.reconnects = 0
        self._connection: AbstractRobustConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.consuming = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="case-event-consumer")

    async def close(self) -> None:
        """Stop; a connection attempt in flight is let finish (cancelling aio-pika
        mid-handshake leaves its tasks behind), up to ``CLOSE_SECONDS``."""
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=CLOSE_SECONDS)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._connection is not None:
            await self._connection.close()

    async def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                await self._consume()
                return
            except (ConnectionError, OSError, AMQPError) as error:
                attempt += 1
                if self._connection is not None:
                    with contextlib.suppress(Exception):
                        await self._connection.close()
                    self._connection = None
                log.warning(
                    "the broker is not reachable yet; live review queues wait for it",
                    extra={"attempt": attempt, "error": str(error)},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=_delay(attempt))

    async def _consume(self) -> None:
        connection = await connect(
            self._settings.amqp_url.get_secret_value(),
            name=self.name,
            reconnect_seconds=RECONNECT_SECONDS,
        )
        self._connection = connection
        if self._stop.is_set():
            return
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        events = await declare_topology(channel, self._names)
        queue = await channel.declare_queue(
            self.queue_name,
            exclusive=True,
            auto_delete=True,
            arguments={"x-max-length": QUEUE_MAX_LENGTH},
        )
        await queue.bind(events, routing_key=CASE_BINDING)
        await queue.consume(self._on_message)
        connection.reconnect_callbacks.add(self._reconnected)
        self.consuming.set()
        log.info("consuming case events", extra={"queue": self.queue_name})
        # What changed before the queue existed is read now.
        self._hub.notify_all()

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.connected.is_set()

    def _reconnected(self, *_: object) -> None:
        self.reconnects += 1
        log.info("case events consumer reconnected", extra={"queue": self.queue_name})
        self._hub.notify_all()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # The wake-up is recorded in memory before the ack; what it announces is read
        # from the database, so nothing is lost if this process dies after the ack.
        tenant = message.headers.get("tenantid")
        try:
            tenant_id = uuid.UUID(str(tenant))
        except ValueError:
            log.warning("case event without a tenant", extra={"type": message.type})
        else:
            self._hub.notify(tenant_id)
        await message.ack()


def _delay(attempt: int) -> float:
    return float(min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** min(attempt, 10)))
