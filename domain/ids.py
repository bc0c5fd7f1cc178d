"""Time-ordered identifiers (UUID version 7, RFC 9562)."""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0
# Random bytes are read from the kernel a few kilobytes at a time: one system call per
# id cost more than anything else in making it, and ingest makes four ids per event.
_POOL_BYTES = 4096
_pool = b""
_taken = 0


def _random_bytes(count: int) -> bytes:
    """``count`` bytes from the operating system's CSPRNG, through a buffer; call with
    ``_lock`` held."""
    global _pool, _taken
    if _taken + count > len(_pool):
        _pool, _taken = os.urandom(_POOL_BYTES), 0
    chunk = _pool[_taken : _taken + count]
    _taken += count
    return chunk


def new_id() -> uuid.UUID:
    """A UUIDv7: 48 bits of Unix milliseconds, then a 12-bit counter and random bits.

    The counter keeps ids made in the same millisecond by one process in order.
    """
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = int.from_bytes(_random_bytes(2), "big") & 0x3FF
        else:
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        counter = _counter
        rand = int.from_bytes(_random_bytes(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= counter << 64
    value |= 0b10 << 62
    value |= rand
    return uuid.UUID(int=value)
