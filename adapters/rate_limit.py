"""A request rate limit per tenant, counted in Redis so that every portal replica
shares it.

Fixed windows: the first request of a tenant in a window creates its counter with an
expiry, the others increment it, in one Lua script (atomic, one round trip). A burst
at the edge of two windows may reach twice the limit for a moment; that is the price
of one key and one round trip per request, and the limit is a guard against abuse,
not a quota.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis

_COUNT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_seconds: int


class TenantRateLimit:
    def __init__(self, redis: Redis, prefix: str, *, requests: int, window_seconds: float) -> None:
        self._redis = redis
        self._prefix = prefix
        self._requests = requests
        self._window_ms = max(1, int(window_seconds * 1000))
        self._count = redis.register_script(_COUNT)

    async def check(self, tenant_id: uuid.UUID) -> Verdict:
        """Count one request of the tenant; refuse it past the limit of its window."""
        now_ms = int(time.time() * 1000)
        window = now_ms // self._window_ms
        key = f"{self._prefix}:ratelimit:{tenant_id}:{window}"
        # The counter outlives its window a little, so a slow clock never revives it.
        count = int(await self._count(keys=[key], args=[self._window_ms + 1000]))
        if count <= self._requests:
            return Verdict(True, 0)
        remaining_ms = (window + 1) * self._window_ms - now_ms
        return Verdict(False, max(1, math.ceil(remaining_ms / 1000)))
