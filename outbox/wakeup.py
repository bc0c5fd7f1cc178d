"""Waking the relay when outbox rows are committed.

A trigger on the outbox sends a notification on the ``vigil_outbox`` channel when an
insert commits. The relay listens on a connection of its own and otherwise polls: when
the listening connection is lost, the relay only gets slower (it wakes once per poll
interval) while the connection is opened again in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

CHANNEL = "vigil_outbox"

# How often an idle listening connection is checked: a connection that died without a
# word (a dropped network path) is otherwise only noticed by the kernel, much later.
_KEEPALIVE_SECONDS = 30.0
_CHECK_TIMEOUT_SECONDS = 5.0
_RECONNECT_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)


class Wakeup:
    def __init__(self, dsn: str, *, application_name: str = "vigil-relay") -> None:
        self._dsn = dsn
        self._application_name = application_name
        self._event = asyncio.Event()

    def kick(self) -> None:
        """Wake whoever waits now, or make the next wait return at once."""
        self._event.set()

    async def wait(self, at_most: float) -> None:
        """Return when woken, or after ``at_most`` seconds (the poll interval)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), at_most)
        self._event.clear()

    async def listen(self) -> None:
        """Keep a listening connection open until cancelled."""
        failures = 0
        while True:
            try:
                connection = await asyncpg.connect(
                    self._dsn,
                    timeout=_CHECK_TIMEOUT_SECONDS,
                    server_settings={"application_name": f"{self._application_name}-listen"},
                )
            except Exception as error:
                failures += 1
                delay = _RECONNECT_SECONDS[min(failures, len(_RECONNECT_SECONDS)) - 1]
                log.warning(
                    "cannot listen for outbox notifications; polling meanwhile",
                    extra={"error": str(error) or type(error).__name__, "retry_in_seconds": delay},
                )
                await asyncio.sleep(delay)
                continue

            failures = 0
            try:
                await self._listen_on(connection)
            except Exception as error:
                log.warning(
                    "lost the outbox notifications; polling until they are back",
                    extra={"error": str(error) or type(error).__name__},
                )
            finally:
                connection.terminate()
            await asyncio.sleep(_RECONNECT_SECONDS[0])

    async def _listen_on(self, connection: Any) -> None:
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_terminated(_: Any) -> None:
            if not lost.done():
                lost.set_result(None)

        connection.add_termination_listener(on_terminated)
        await connection.add_listener(CHANNEL, self._notified)
        log.info("listening for outbox notifications", extra={"channel": CHANNEL})
        # Rows may have been committed while nobody listened.
        self.kick()

        while not lost.done():
            _ = await asyncio.wait({lost}, timeout=_KEEPALIVE_SECONDS)
            if not lost.done():
                await connection.fetchval("SELECT 1", timeout=_CHECK_TIMEOUT_SECONDS)
        raise ConnectionError("the listening connection was closed")

    def _notified(self, *_: Any) -> None:
        self._event.set()
