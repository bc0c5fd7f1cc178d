"""``vigil inbound``: the process that consumes the inbound queue (see
:mod:`workers.inbound_consumer`) until SIGTERM or SIGINT.

On a signal it stops taking messages, finishes those in hand, closes its connections and
returns, so the command exits 0. Broker restarts are ridden out by the robust connection
(it reconnects and resumes consuming); database outages by the consumer's retries.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aio_pika.abc import AbstractRobustConnection

from adapters.broker import Names
from adapters.database import make_engine
from adapters.ingest_store import ingest_unit_of_work_factory
from adapters.metrics import serve_metrics
from adapters.settings import Settings
from domain.ports import IngestUnitOfWorkFactory
from workers.broker_wait import connect_when_up
from workers.inbound_consumer import InboundConsumer

log = logging.getLogger(__name__)

CONNECTION_NAME = "vigil-inbound"


async def run(settings: Settings) -> None:
    """Consume until SIGTERM or SIGINT, then finish the messages in hand and return."""
    stop = _stop_on_signals()
    serve_metrics(settings.inbound_metrics_port)
    engine = make_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        application_name=CONNECTION_NAME,
    )
    try:
        connection = await connect_when_up(settings, stop, name=CONNECTION_NAME)
        if connection is None:
            return
        try:
            await _consume(settings, connection, ingest_unit_of_work_factory(engine), stop)
        finally:
            await connection.close()
    finally:
        await engine.dispose()
    log.info("stopped")


async def _consume(
    settings: Settings,
    connection: AbstractRobustConnection,
    uow_factory: IngestUnitOfWorkFactory,
    stop: asyncio.Event,
) -> None:
    names = Names(settings.amqp_prefix)
    consumer = InboundConsumer(
        connection,
        uow_factory,
        names,
        prefetch=settings.inbound_prefetch,
        concurrency=settings.database_pool_size,
    )
    try:
        await consumer.start()
        log.info("consuming the inbound queue", extra={"queue": names.inbound})
        await stop.wait()
        log.info("stopping: finishing the messages in hand")
    finally:
        await consumer.stop()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop
