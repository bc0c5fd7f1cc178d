"""Waiting for the broker at start-up, shared by the queue consumers."""

from __future__ import annotations

import asyncio
import logging

from aio_pika.abc import AbstractRobustConnection

from adapters.broker import connect
from adapters.settings import Settings
from workers.consumer import Backoff

log = logging.getLogger(__name__)


async def connect_when_up(
    settings: Settings, stop: asyncio.Event, *, name: str
) -> AbstractRobustConnection | None:
    """Connect, waiting for the broker if it is not up yet; None if told to stop first.
    Once connected, the robust connection reconnects by itself."""
    backoff = Backoff(first_seconds=1.0, max_seconds=30.0)
    attempt = 1
    while not stop.is_set():
        try:
            return await connect(settings.amqp_url.get_secret_value(), name=name)
        except (ConnectionError, OSError) as error:
            delay = backoff.delay(attempt)
            log.warning(
                "the broker is not reachable yet",
                extra={
                    "attempt": attempt,
                    "retry_in_seconds": round(delay, 1),
                    "error": str(error),
                },
            )
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                attempt += 1
    return None
