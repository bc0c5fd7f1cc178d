"""A pass of some work every interval, in a long-lived process, until it is stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def every(
    seconds: float, stop: asyncio.Event, work: Callable[[], Awaitable[object]], *, name: str
) -> None:
    """Run ``work`` every ``seconds`` until ``stop`` is set; nothing when ``seconds`` is
    0. A failed pass is logged and the next one tries again: one bad pass never ends the
    loop that the other passes need."""
    if seconds <= 0:
        return
    while not await _stopped(stop, seconds):
        try:
            await work()
        except Exception as error:
            log.warning(
                "a periodic pass failed; will try again", extra={"task": name, "error": repr(error)}
            )


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
