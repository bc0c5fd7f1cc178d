"""Run a unit of work again when it fails for a reason worth retrying."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from domain.errors import TransientFailure

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5

T = TypeVar("T")


async def with_retries(operation: Callable[[], Awaitable[T]], *, name: str) -> T:
    attempt = 1
    while True:
        try:
            return await operation()
        except TransientFailure as error:
            if attempt >= MAX_ATTEMPTS:
                raise
            delay = min(0.5, 0.01 * 2**attempt) * (0.5 + random.random())  # noqa: S311
            log.info(
                "retrying after a transient failure",
                extra={"operation": name, "attempt": attempt, "reason": error.message},
            )
            await asyncio.sleep(delay)
            attempt += 1
