"""The CloudEvents 1.0 envelope (structured JSON mode) of a message on the inbound queue.

An integration publishes one event per message::

    {"specversion": "1.0", "id": "...", "source": "...", "type": "transaction",
     "time": "2026-03-01T09:30:00+01:00", "datacontenttype": "application/json",
     "tenantid": "<uuid>", "correlationid": "...", "traceparent": "...", "data": {...}}

The envelope is read strictly: a body over :data:`MAX_MESSAGE_BYTES`, anything but UTF-8
JSON, JSON nested deeper than :data:`MAX_MESSAGE_DEPTH` (``TOO_DEEP``), a repeated key,
a missing required attribute, another spec version or an attribute outside
:data:`ATTRIBUTES` is refused with :class:`~domain.errors.InvalidEvent`, whose
``field`` names the attribute at fault. What the event itself must be (its type, time and
data) is left to :func:`domain.events.parse_event`, so both doors in refuse a bad event
alike; :func:`event_field` turns its field paths back into CloudEvents attribute names.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters import bounded_json
from domain.errors import InvalidEvent

MAX_MESSAGE_BYTES = 64 * 1024
# The event inside is refused past domain.events.MAX_EVENT_DEPTH; this bound only keeps
# the decoder itself from recursing without limit.
MAX_MESSAGE_DEPTH = 32
MAX_SOURCE_LENGTH = 200
MAX_CORRELATION_LENGTH = 200

REQUIRED = ("specversion", "id", "source", "type", "time", "tenantid", "data")
OPTIONAL = ("datacontenttype", "correlationid", "traceparent")
ATTRIBUTES = frozenset(REQUIRED + OPTIONAL)

# Content types that mean "this body is a structured-mode CloudEvent in JSON".
_MESSAGE_TYPES = frozenset({"application/cloudevents+json", "application/json"})
_PRINTABLE = re.compile(r"[\x21-\x7e]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")

# parse_event names fields as the GraphQL door spells them; the queue's senders know the
# CloudEvents names instead.
_EVENT_FIELDS = {"idempotencyKey": "id", "occurredAt": "time"}


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message that is a well-formed CloudEvent; ``event`` is what parse_event takes."""

    event_id: str
    source: str
    event_type: str
    tenant_id: uuid.UUID
    correlation_id: str | None
    traceparent: str | None
    event: Mapping[str, Any]


def read_envelope(
    body: bytes, *, content_type: str | None = None, content_encoding: str | None = None
) -> Envelope:
    """Read one message body; raise :class:`InvalidEvent` when it cannot be a CloudEvent."""
    _check_transport(body, content_type, content_encoding)
    attributes = _decode(body)
    _check_attributes(attributes)
    return Envelope(
        event_id=_text(attributes, "id"),
        source=_bounded(attributes, "source", MAX_SOURCE_LENGTH),
        event_type=_text(attributes, "type"),
        tenant_id=_tenant(attributes),
        correlation_id=_correlation(attributes),
        traceparent=_traceparent(attributes),
        event={
            "idempotencyKey": attributes["id"],
            "type": attributes["type"],
            "occurredAt": attributes["time"],
            "data": attributes["data"],
        },
    )


def event_field(field: str) -> str:
    """The CloudEvents name of a field path reported by parse_event."""
    head, dot, rest = field.partition(".")
    return _EVENT_FIELDS.get(head, head) + dot + rest


def valid_correlation_id(value: object) -> str | None:
    """The value when it can serve as a correlation id (printable, bounded), else None."""
    if (
        isinstance(value, str)
        and len(value) <= MAX_CORRELATION_LENGTH
        and _PRINTABLE.fullmatch(value)
    ):
        return value
    return None


# -- steps ------------------------------------------------------------------------------


def _check_transport(body: bytes, content_type: str | None, content_encoding: str | None) -> None:
    if len(body) > MAX_MESSAGE_BYTES:
        raise InvalidEvent("TOO_LARGE", "", f"a message is at most {MAX_MESSAGE_BYTES} bytes")
    if content_type and _media_type(content_type) not in _MESSAGE_TYPES:
        raise InvalidEvent(
            "UNSUPPORTED_CONTENT_TYPE", "", "send a structured-mode CloudEvent as JSON"
        )
    if content_encoding and content_encoding.lower() not in {"utf-8", "identity"}:
        raise InvalidEvent("UNSUPPORTED_CONTENT_TYPE", "", "compressed bodies are not accepted")


def _decode(body: bytes) -> dict[str, Any]:
    try:
        value = bounded_json.loads(
            body.decode("utf-8"),
            max_depth=MAX_MESSAGE_DEPTH,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constants,
        )
    except (bounded_json.TooDeep, RecursionError):
        raise InvalidEvent(
            "TOO_DEEP", "", f"a message is nested at most {MAX_MESSAGE_DEPTH} levels deep"
        ) from None
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidEvent("INVALID_JSON", "", _json_reason(error)) from None
    if not isinstance(value, dict):
        raise InvalidEvent("INVALID_TYPE", "", "expected a JSON object")
    return value


def _check_attributes(attributes: Mapping[str, Any]) -> None:
    if "data_base64" in attributes:
        raise InvalidEvent(
            "UNSUPPORTED_CONTENT_TYPE", "data_base64", "send data as JSON, not base64"
        )
    unknown = sorted(name for name in attributes if name not in ATTRIBUTES)
    if unknown:
        raise InvalidEvent("UNKNOWN_FIELD", unknown[0], "this attribute is not accepted")
    for name in REQUIRED:
        if attributes.get(name) is None:
            raise InvalidEvent("REQUIRED", name, "this attribute is required")
    if attributes["specversion"] != "1.0":
        raise InvalidEvent("UNSUPPORTED_SPECVERSION", "specversion", 'only "1.0" is accepted')
    content_type = attributes.get("datacontenttype")
    if content_type is not None and (
        not isinstance(content_type, str) or _media_type(content_type) != "application/json"
    ):
        raise InvalidEvent(
            "UNSUPPORTED_CONTENT_TYPE", "datacontenttype", 'only "application/json" is accepted'
        )


# -- attribute readers: each names the attribute at fault -------------------------------


def _text(attributes: Mapping[str, Any], name: str) -> str:
    value = attributes[name]
    if not isinstance(value, str):
        raise InvalidEvent("INVALID_TYPE", name, "expected a string")
    return value


def _bounded(attributes: Mapping[str, Any], name: str, max_length: int) -> str:
    value = _text(attributes, name)
    if not value.strip():
        raise InvalidEvent("REQUIRED", name, "this attribute is required")
    if len(value) > max_length:
        raise InvalidEvent("TOO_LONG", name, f"at most {max_length} characters")
    if not value.isprintable():
        raise InvalidEvent("INVALID_FORMAT", name, "control characters are not allowed")
    return value


def _tenant(attributes: Mapping[str, Any]) -> uuid.UUID:
    value = _text(attributes, "tenantid")
    # uuid.UUID also reads braces, URNs and bare hex; only the usual spelling is accepted.
    if not _UUID.fullmatch(value):
        raise InvalidEvent("INVALID_FORMAT", "tenantid", "expected a UUID")
    return uuid.UUID(value)


def _correlation(attributes: Mapping[str, Any]) -> str | None:
    value = attributes.get("correlationid")
    if value is None:
        return None
    if valid_correlation_id(value) is None:
        raise InvalidEvent(
            "INVALID_FORMAT",
            "correlationid",
            f"printable ASCII without spaces, at most {MAX_CORRELATION_LENGTH} characters",
        )
    return str(value)


def _traceparent(attributes: Mapping[str, Any]) -> str | None:
    value = attributes.get("traceparent")
    if value is None:
        return None
    if not isinstance(value, str) or not _TRACEPARENT.fullmatch(value):
        raise InvalidEvent("INVALID_FORMAT", "traceparent", "expected a W3C traceparent")
    return value


# -- JSON strictness --------------------------------------------------------------------


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key is read differently by different parsers; refuse the ambiguity.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key[:40]!r} appears twice")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_reason(error: Exception) -> str:
    if isinstance(error, UnicodeDecodeError):
        return "the body is not UTF-8"
    if isinstance(error, json.JSONDecodeError):
        return f"not JSON: {error.msg} at line {error.lineno} column {error.colno}"
    return f"not JSON: {error}"
