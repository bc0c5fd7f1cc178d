"""The outbox relay: publishes committed outbox rows to RabbitMQ, then marks them.

One batch is one transaction. It claims rows (see :mod:`outbox.store` for which rows a
relay may take), publishes them while holding their locks, and marks each as published
or failed before it commits. A relay that dies mid-batch releases its rows by dying;
whatever it had published goes out again, which consumers absorb with their inbox.

Within a batch, each ordering key's rows are published one after another, each confirm
awaited before the next and the key given up at its first failure; different keys go
concurrently. A failed row stays pending and is tried again after a back-off; once it
has failed ``max_attempts`` times it is parked and holds up nothing behind it.

``vigil relay`` runs :func:`run`: batches back to back while there is work, then waits
for a notification or the poll interval, and after it ``VIGIL_RELAY_LINGER_SECONDS``
more, so that the commits that follow one another under load share a claim. SIGTERM and
SIGINT finish the batch in flight; a second signal does not wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.broker import Names
from adapters.database import make_engine, plain_url, translate_errors
from adapters.metrics import (
    OUTBOX_OLDEST_AGE,
    OUTBOX_PARKED,
    OUTBOX_PENDING,
    RELAY_PUBLISH_SECONDS,
    RELAY_PUBLISHED,
    serve_metrics,
)
from adapters.settings import Settings
from domain.errors import TransientFailure
from outbox import store
from outbox.publisher import BrokerUnavailable, Outcome, Publisher
from outbox.store import Failure, PendingRow
from outbox.wakeup import Wakeup

log = logging.getLogger(__name__)

PURGE_BATCH = 5000
PURGE_INTERVAL_SECONDS = 60.0
STATS_INTERVAL_SECONDS = 5.0
_CONNECT_TIMEOUT_SECONDS = 10.0

_PUBLISHED = RELAY_PUBLISHED.labels(Outcome.PUBLISHED.value)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off: ``base``, twice that, four times, ... never above ``cap``."""

    base_seconds: float = 1.0
    cap_seconds: float = 300.0

    def delay(self, attempt: int) -> float:
        return min(self.cap_seconds, self.base_seconds * 2.0 ** max(attempt - 1, 0))


# Waiting for a broker or database that went away: soon at first, then every 10 s.
RECONNECT = Backoff(base_seconds=0.5, cap_seconds=10.0)


@dataclass(slots=True)
class _KeyResult:
    published: list[PendingRow] = field(default_factory=list)
    failure: Failure | None = None
    lost: BrokerUnavailable | None = None


class Relay:
    def __init__(
        self,
        engine: AsyncEngine,
        publisher: Publisher,
        *,
        batch_size: int = 200,
        max_attempts: int = 10,
        retention_hours: float = 24.0,
        retry: Backoff = Backoff(),
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._retention_seconds = retention_hours * 3600
        self._retry = retry
        # Each claim loop keeps a database connection of its own and speaks to it with
        # asyncpg directly; the engine serves the chores (purge, statistics).
        self._dsn = plain_url(engine.url.render_as_string(hide_password=False))
        self._connection: asyncpg.Connection | None = None
        # Whether the last batch may have left rows behind that could leave at once.
        self.more_due = False

    @classmethod
    def from_settings(cls, settings: Settings, engine: AsyncEngine) -> Relay:
        publisher = Publisher(
            settings.amqp_url.get_secret_value(),
            Names(settings.amqp_prefix),
            timeout_seconds=settings.relay_publish_timeout_seconds,
        )
        return cls(
            engine,
            publisher,
            batch_size=settings.relay_batch_size,
            max_attempts=settings.relay_max_attempts,
            retention_hours=settings.relay_retention_hours,
        )

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close(timeout=_CONNECT_TIMEOUT_SECONDS)
            except Exception:  # a connection that broke is dropped all the same
                connection.terminate()
        await self._publisher.close()

    async def run_once(self) -> int:
        """Claim, publish and mark one batch; return how many rows it claimed (0 when
        nothing may leave now). Raise :class:`TransientFailure` when the broker or the
        database is away; the rows it could not settle are left as they were."""
        # No row is locked while the broker is away.
        await self._publisher.connect()

        with translate_errors():
            connection = await self._database()
            try:
                async with connection.transaction():
                    claimed = await store.claim(connection, self._batch_size)
                    groups = claimed.groups
                    self.more_due = claimed.more_due
                    if not groups:
                        return 0
                    results = await asyncio.gather(
                        *(self._publish_in_order(rows) for rows in groups.values())
                    )
                    published = [row for result in results for row in result.published]
                    failures = [result.failure for result in results if result.failure]
                    # A row parked here makes the row behind it a head once this batch
                    # commits, and nothing else will wake a loop for it.
                    self.more_due = self.more_due or any(failure.park for failure in failures)
                    await store.mark_published(connection, published)
                    await store.mark_failed(connection, failures)
            except BaseException:
                # Whatever broke (or cancelled) the batch, its connection is not trusted
                # again: closing it rolls back and releases every row it had claimed.
                self._connection = None
                connection.terminate()
                raise

        _PUBLISHED.inc(len(published))
        RELAY_PUBLISHED.labels("parked").inc(sum(failure.park for failure in failures))
        lost = next((result.lost for result in results if result.lost), None)
        if lost is not None:
            await self._publisher.close()
            raise lost
        return len(claimed)

    async def _database(self) -> asyncpg.Connection:
        connection = self._connection
        if connection is None or connection.is_closed():
            self._connection = None
            connection = await asyncpg.connect(
                self._dsn,
                timeout=_CONNECT_TIMEOUT_SECONDS,
                server_settings={"application_name": "vigil-relay"},
            )
            self._connection = connection
        return connection

    async def _publish_in_order(self, rows: Sequence[PendingRow]) -> _KeyResult:
        result = _KeyResult()
        for row in rows:
            try:
                delivery = await self._publisher.publish(row)
            except BrokerUnavailable as error:
                RELAY_PUBLISHED.labels(Outcome.ERROR.value).inc()
                result.lost = error
                return result

            if delivery.outcome is Outcome.PUBLISHED:
                RELAY_PUBLISH_SECONDS.observe(delivery.seconds)
                result.published.append(row)
                continue
            RELAY_PUBLISHED.labels(delivery.outcome.value).inc()
            result.failure = self._failed(row, delivery.outcome, delivery.error or "")
            return result
        return result

    def _failed(self, row: PendingRow, outcome: Outcome, error: str) -> Failure:
        attempts = row.attempts + 1
        failure = Failure(
            row,
            error,
            retry_in_seconds=self._retry.delay(attempts),
            park=attempts >= self._max_attempts,
        )
        context = {
            "message_id": str(row.message_id),
            "tenant_id": str(row.tenant_id),
            "message_type": row.message_type,
            "correlation_id": row.correlation_id,
            "outcome": outcome.value,
            "attempts": attempts,
            "error": error,
        }
        if failure.park:
            log.error("outbox message parked after too many failures", extra=context)
        else:
            log.warning(
                "outbox message not published; will try again",
                extra={**context, "retry_in_seconds": failure.retry_in_seconds},
            )
        return failure

    async def purge_published(self) -> int:
        """Delete rows published longer ago than the retention period; return how many."""
        deleted = 0
        while True:
            with translate_errors():
                async with self._engine.begin() as connection:
                    count = await store.delete_published(
                        connection, older_than_seconds=self._retention_seconds, limit=PURGE_BATCH
                    )
            deleted += count
            if count < PURGE_BATCH:
                break
        if deleted:
            log.info("published outbox rows deleted", extra={"count": deleted})
        return deleted

    async def refresh_stats(self) -> None:
        with translate_errors():
            async with self._engine.connect() as connection:
                stats = await store.read_stats(connection)
        OUTBOX_PENDING.set(stats.pending)
        OUTBOX_PARKED.set(stats.parked)
        OUTBOX_OLDEST_AGE.set(stats.oldest_pending_seconds)


async def run(settings: Settings) -> None:
    """The ``vigil relay`` process."""
    serve_metrics(settings.relay_metrics_port)
    workers = settings.relay_concurrency
    # The claim loops have connections of their own; the engine serves the two chores.
    engine = make_engine(settings.relay_database_url, pool_size=2, application_name="vigil-relay")
    # Several claim loops, each with its own channel: while one waits for the broker's
    # confirms, another claims or commits. Head-of-subject claiming keeps them in order.
    relays = [Relay.from_settings(settings, engine) for _ in range(workers)]
    relay = relays[0]
    wakeup = Wakeup(plain_url(settings.relay_database_url))
    stop = asyncio.Event()
    _stop_on_signals(stop, wakeup)

    chores = [
        asyncio.create_task(wakeup.listen(), name="listen"),
        asyncio.create_task(_every(STATS_INTERVAL_SECONDS, relay.refresh_stats), name="stats"),
        asyncio.create_task(_every(PURGE_INTERVAL_SECONDS, relay.purge_published), name="purge"),
    ]
    log.info(
        "relay started",
        extra={
            "exchange": Names(settings.amqp_prefix).events_exchange,
            "batch_size": settings.relay_batch_size,
            "concurrency": workers,
            "poll_seconds": settings.relay_poll_seconds,
        },
    )
    try:
        _ = await asyncio.gather(
            *(
                _work(
                    each,
                    wakeup,
                    stop,
                    settings.relay_poll_seconds,
                    linger_seconds=settings.relay_linger_seconds,
                )
                for each in relays
            )
        )
    finally:
        for chore in chores:
            chore.cancel()
        _ = await asyncio.gather(*chores, return_exceptions=True)
        for each in relays:
            await each.close()
        await engine.dispose()
        log.info("relay stopped")


async def _work(
    relay: Relay,
    wakeup: Wakeup,
    stop: asyncio.Event,
    poll_seconds: float,
    *,
    linger_seconds: float = 0.0,
) -> None:
    failures = 0
    signal = wakeup.signal()
    while not stop.is_set():
        signal.clear()
        try:
            claimed = await relay.run_once()
        except Exception as error:
            failures += 1
            delay = RECONNECT.delay(failures)
            context = {"error": str(error) or type(error).__name__, "retry_in_seconds": delay}
            if isinstance(error, TransientFailure):
                log.warning("relay waiting for the broker or the database", extra=context)
            else:
                log.exception("relay batch failed", extra=context)
            await _sleep(stop, delay)
            continue

        failures = 0
        # A full batch, a key's followers cut short, or a row parked (the one behind it
        # becomes a head) may have left rows that can leave at once. Otherwise what is
        # left was committed after the claim began (which has set the signal already,
        # so the wait returns at once) or is held by another loop (which claims again
        # itself when its claim ends), so waiting for a commit costs nothing, where
        # claiming again at once would usually find nothing, at the price of a claim's
        # statements for every commit.
        if claimed == 0 or not relay.more_due:
            await signal.wait(poll_seconds)
            # Commits come one after another under load: a loop that claimed at each one
            # paid a claim's statements for a handful of rows. Lingering lets the commits
            # that follow join the next claim, for a few milliseconds more per message.
            if linger_seconds > 0:
                await _sleep(stop, linger_seconds)


def _stop_on_signals(stop: asyncio.Event, wakeup: Wakeup) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal(name: str) -> None:
        if stop.is_set() and main is not None:
            log.warning("stopping now, abandoning the batch in flight", extra={"signal": name})
            main.cancel()
            return
        log.info("stopping after the batch in flight", extra={"signal": name})
        stop.set()
        wakeup.kick()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum.name)


async def _every(seconds: float, chore: Callable[[], Awaitable[object]]) -> None:
    while True:
        try:
            _ = await chore()
        except Exception as error:
            log.warning(
                "relay chore failed",
                extra={"chore": getattr(chore, "__name__", "?"), "error": str(error)},
            )
        await asyncio.sleep(seconds)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
