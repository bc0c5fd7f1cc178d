"""One canonical byte encoding for hashing: the same record always gives the same bytes.

JSON with sorted keys, no insignificant whitespace and UTF-8 text. Decimals are written
as strings, times in UTC with microseconds and a ``Z``, UUIDs in their hyphenated form.
Floats are refused: a binary float has no single decimal spelling, so it cannot be part
of a record whose hash must be reproduced years later.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def format_time(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetimes have no place in a record")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot encode {type(value).__name__} canonically")


def _refuse_floats(value: Any) -> None:
    if isinstance(value, float):
        raise TypeError("floats cannot be encoded canonically")
    if isinstance(value, Mapping):
        for item in value.values():
            _refuse_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_floats(item)


def canonical_bytes(value: Mapping[str, Any]) -> bytes:
    _refuse_floats(value)
    text = json.dumps(
        value, default=_default, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return text.encode("utf-8")


def digest(value: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(canonical_bytes(value)).digest()
