"""Canonical byte encodings for hashing: the same record always gives the same bytes.

:func:`canonical_bytes` is JSON with sorted keys, no insignificant whitespace and UTF-8
text. :func:`jsonb_text` is the text form PostgreSQL gives a ``jsonb`` value, so that
the database can hash a record it builds itself and Python can check that hash: keys
ordered by their length in bytes and then bytewise, ``", "`` and ``": "`` between
items, strings escaped as PostgreSQL escapes them (which is also how Python's ``json``
escapes them when it leaves non-ASCII text alone).

In both, decimals are written as strings, times in UTC with microseconds and a ``Z``,
UUIDs in their hyphenated form. Floats are refused: a binary float has no single decimal
spelling, so it cannot be part of a record whose hash must be reproduced years later.
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
    utc = value.astimezone(UTC)
    if utc.year >= 1000:
        # The same text as the format below, in a third less time; isoformat pads a
        # year below 1000 to four digits, which strftime does not.
        return utc.isoformat(timespec="microseconds")[:-6] + "Z"
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    # Most of a document is strings and integers: settle those with one quick check.
    if isinstance(value, str | int) or value is None:
        return
    if isinstance(value, float):
        raise TypeError("floats cannot be encoded canonically")
    if isinstance(value, Mapping):
        for item in value.values():
            _refuse_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_floats(item)


# Made once: json.dumps with these options makes a new encoder for every call, which
# cost more than the encoding of a small record.
_CANONICAL = json.JSONEncoder(
    default=_default, sort_keys=True, separators=(",", ":"), ensure_ascii=False
)


def canonical_bytes(value: Mapping[str, Any]) -> bytes:
    _refuse_floats(value)
    return _CANONICAL.encode(value).encode("utf-8")


def digest(value: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(canonical_bytes(value)).digest()


def digest_without_floats(value: Mapping[str, Any]) -> bytes:
    """:func:`digest` of a value that holds no float by construction (only strings,
    integers, booleans, null, objects and arrays, as a validated event's payload), the
    same bytes without walking the value for floats first: ingest hashes every event,
    and the walk cost more than the hashing."""
    return hashlib.sha256(_CANONICAL.encode(value).encode("utf-8")).digest()


def plain_json(value: Mapping[str, Any]) -> str:
    """``value`` as JSON text holding only what :func:`jsonb_text` reproduces: objects,
    arrays, strings, integers, booleans and null (other values as :func:`canonical_bytes`
    writes them)."""
    _refuse_floats(value)
    return json.dumps(value, default=_default, ensure_ascii=False)


def jsonb_text(value: Any) -> str:
    """The text PostgreSQL's ``jsonb_out`` writes for ``value`` once stored as jsonb."""
    return _jsonb(json.loads(plain_json({"": value}))[""])


def _jsonb(value: Any) -> str:
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: (len(key.encode("utf-8")), key.encode("utf-8")))
        items = ", ".join(f"{_string(key)}: {_jsonb(value[key])}" for key in keys)
        return "{" + items + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_jsonb(item) for item in value) + "]"
    if isinstance(value, str):
        return _string(value)
    if value is None or isinstance(value, bool | int):
        return json.dumps(value)
    raise TypeError(f"cannot encode {type(value).__name__} as jsonb text")


def _string(value: str) -> str:
    if "\x00" in value:
        raise ValueError("jsonb cannot hold the character U+0000")
    return json.dumps(value, ensure_ascii=False)
