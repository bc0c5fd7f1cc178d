"""Messages Vigil publishes about what happened, written to the outbox in the same
transaction as the change they describe (CloudEvents 1.0 once relayed)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

CLOUDEVENTS_SOURCE = "urn:vigil"

EVENT_RECEIVED = "event.received"


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """``message_id`` is the CloudEvents id; ``ordering_key`` names the aggregate whose
    messages must leave in the order they were written (a subject's id)."""

    message_id: uuid.UUID
    message_type: str
    subject: str
    ordering_key: uuid.UUID
    time: datetime
    data: Mapping[str, Any]
    correlation_id: str | None = None
    traceparent: str | None = None
    extensions: Mapping[str, str] = field(default_factory=dict)


def cloud_event(tenant_id: uuid.UUID, message: OutboxMessage) -> dict[str, Any]:
    """The structured-mode CloudEvent for a message (JSON-ready, no floats)."""
    return _envelope(str(tenant_id), _time(message.time), message)


def cloud_events(tenant_id: uuid.UUID, messages: Sequence[OutboxMessage]) -> list[dict[str, Any]]:
    """:func:`cloud_event` of each message, with the tenant, and the time the messages
    of one transaction usually share, written once."""
    tenant = str(tenant_id)
    envelopes = []
    last: datetime | None = None
    text = ""
    for message in messages:
        if message.time is not last:
            last, text = message.time, _time(message.time)
        envelopes.append(_envelope(tenant, text, message))
    return envelopes


def _time(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _envelope(tenant: str, time: str, message: OutboxMessage) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(message.message_id),
        "source": CLOUDEVENTS_SOURCE,
        "type": message.message_type,
        "subject": message.subject,
        "time": time,
        "datacontenttype": "application/json",
        "tenantid": tenant,
        "data": dict(message.data),
    }
    if message.correlation_id:
        envelope["correlationid"] = message.correlation_id
    if message.traceparent:
        envelope["traceparent"] = message.traceparent
    return envelope
