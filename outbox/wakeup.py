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


class Signal:
    """One claim loop's view of the wakeups: set by every notification (and kick) since
    the loop last cleared it.

    Each loop needs its own. With one flag shared by the loops, a loop woken while
    another was claiming cleared the flag for both; the busy loop, whose claim could not
    see the newly committed rows (or saw them behind a head it held), then slept until
    the poll while those rows waited."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        """Forget the wakeups so far: call it as a claim starts, so that a commit during
        the claim makes the next wait return at once."""
        self._event.clear()

    async def wait(self, at_most: float) -> None:
        """Return when set, or after ``at_most`` seconds (the poll interval)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), at_most)


class Wakeup:
    def __init__(self, dsn: str, *, application_name: str = "vigil-relay") -> None:
        self._dsn = dsn
        self._application_name = application_name
        self._signals: list[Signal] = [Signal()]

    def signal(self) -> Signal:
        """A signal of its own for one claim loop."""
        made = Signal()
        self._signals.append(made)
        return made

    def kick(self) -> None:
        """Wake whoever waits now, or make the next wait return at once."""
        for signal in self._signals:
            signal.set()

    async def wait(self, at_most: float) -> None:
        """Return when woken, or after ``at_most`` seconds (the poll interval); for a
        single waiter (each claim loop has a :meth:`signal` of its own)."""
        signal = self._signals[0]
        await signal.wait(at_most)
        signal.clear()

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
        self.kick()
