"""Compliance events as they arrive, and the rules that decide whether one can be valid.

Both doors in (the GraphQL mutation and the inbound queue) hand the same plain mapping
to :func:`parse_event`, so a bad event is refused with the same code and field path
whichever way it came. Validation is strict: unknown fields are refused, amounts are
decimal strings within the currency's minor units, and times are RFC 3339 date-times
with their offset. An event is at most :data:`MAX_EVENT_DEPTH` levels deep, checked
without recursion before anything else walks it, so that a deeply nested event is
refused on its own rather than failing its whole batch.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from json.encoder import encode_basestring as _quoted
from typing import Any

from domain.canonical import digest_without_floats, format_time
from domain.errors import InvalidEvent
from domain.reference import COUNTRIES, CURRENCY_MINOR_UNITS

MAX_EVENT_BYTES = 16 * 1024
MAX_KEY_LENGTH = 200
MAX_REFERENCE_LENGTH = 140
MAX_AMOUNT_DIGITS = 18
# The event is level 1 and its data level 2; our deepest shape (a party's account) is
# level 3, so 8 leaves room for new shapes without letting nesting cost anything.
MAX_EVENT_DEPTH = 8
FUTURE_TOLERANCE = timedelta(hours=24)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The smallest unit of each currency's amounts, by its digits after the point.
_QUANTA = {digits: Decimal(1).scaleb(-digits) for digits in set(CURRENCY_MINOR_UNITS.values())}

# Patterns are used with fullmatch only: "$" alone also matches before a final newline.
_KEY = re.compile(r"[\x21-\x7e]{1,200}")
_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
_AMOUNT = re.compile(r"[0-9]{1,18}(\.[0-9]{1,4})?")
# C0 and C1 controls and DEL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Format characters (bidirectional overrides, zero-width spaces, the byte-order mark)
# and the line and paragraph separators: invisible, or reordering what a reader sees.
_HIDDEN_CATEGORIES = frozenset({"Cf", "Zl", "Zp"})
# RFC 3339 date-time; the offset is optional here only so that a missing one can be
# named as such.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"(?P<offset>Z|[+-][0-9]{2}:[0-9]{2})?"
)


class EventType(StrEnum):
    TRANSACTION = "transaction"
    KYC_UPDATED = "kyc.updated"


class SubjectKind(StrEnum):
    CUSTOMER = "customer"
    ACCOUNT = "account"


# EventType(name) for a name known to be a string, without the enum's call machinery.
_EVENT_TYPES = {event_type.value: event_type for event_type in EventType}


CHANNELS = frozenset(
    {"wire", "sepa", "swift", "ach", "instant", "card", "cash", "cheque", "internal", "other"}
)
RISK_RATINGS = frozenset({"low", "medium", "high"})
SEGMENTS = frozenset({"retail", "business", "private", "correspondent"})


@dataclass(frozen=True, slots=True)
class SubjectRef:
    kind: SubjectKind
    ref: str

    def masked(self) -> str:
        """The reference as it may appear in logs: only its last four characters."""
        return mask(self.ref)


@dataclass(frozen=True, slots=True)
class SubjectFacts:
    """What an event says about one subject, and as of when; merged into the subject's
    attributes so that an older event fills gaps but never overwrites a newer one."""

    subject: SubjectRef
    attributes: Mapping[str, Any] = field(default_factory=dict)
    as_of: datetime | None = None


@dataclass(frozen=True, slots=True)
class EventDraft:
    """A validated event, not yet stored.

    ``payload`` is the normalised form that is stored and hashed; two submissions that
    mean the same thing (``"10.5"`` and ``"10.50"`` EUR) have the same ``payload_hash``.
    """

    idempotency_key: str
    event_type: EventType
    occurred_at: datetime
    payload: Mapping[str, Any]
    payload_hash: bytes
    primary: SubjectRef
    counterparty: SubjectRef | None
    facts: tuple[SubjectFacts, ...]
    amount: Decimal | None = None
    currency: str | None = None


def mask(reference: str) -> str:
    return "…" + reference[-4:] if len(reference) > 4 else "…"


def parse_event(raw: object, *, now: datetime) -> EventDraft:
    """Validate one event as sent by an integration; raise :class:`InvalidEvent`."""
    event = _mapping(raw, "")
    _check_depth(event)
    _check_size(event)
    _only(event, "", {"idempotencyKey", "type", "occurredAt", "data"})

    key = _string(event, "idempotencyKey", "idempotencyKey", MAX_KEY_LENGTH)
    if not _KEY.fullmatch(key):
        raise InvalidEvent("INVALID_FORMAT", "idempotencyKey", "use printable ASCII without spaces")
    type_name = _string(event, "type", "type", 40)
    event_type = _EVENT_TYPES.get(type_name)
    if event_type is None:
        raise InvalidEvent("UNKNOWN_EVENT_TYPE", "type", f"known types: {', '.join(EventType)}")
    occurred_at = _time(event, "occurredAt", now)
    data = _mapping(_required(event, "data", "data"), "data")

    if event_type is EventType.TRANSACTION:
        return _transaction(key, occurred_at, data)
    return _kyc_update(key, occurred_at, data)


def _transaction(key: str, occurred_at: datetime, data: Mapping[str, Any]) -> EventDraft:
    _only(
        data,
        "data",
        {"amount", "currency", "originator", "beneficiary", "channel", "reference"},
    )
    currency = _currency(data, "data.currency")
    amount = _amount(data, "data.amount", currency)
    originator = _party(data, "originator")
    beneficiary = _party(data, "beneficiary")
    channel = _string(data, "channel", "data.channel", 20)
    if channel not in CHANNELS:
        raise InvalidEvent(
            "INVALID_VALUE", "data.channel", f"known channels: {', '.join(sorted(CHANNELS))}"
        )
    reference = None
    if data.get("reference") is not None:
        reference = _string(data, "reference", "data.reference", MAX_REFERENCE_LENGTH)
    if originator["account"] == beneficiary["account"]:
        raise InvalidEvent(
            "INVALID_VALUE",
            "data.beneficiary.account",
            "originator and beneficiary are one account",
        )

    normalised = {
        "amount": str(amount),
        "currency": currency,
        "originator": originator,
        "beneficiary": beneficiary,
        "channel": channel,
        "reference": reference,
    }
    payload = _payload(EventType.TRANSACTION, occurred_at, normalised)
    origin = SubjectRef(SubjectKind.ACCOUNT, originator["account"])
    target = SubjectRef(SubjectKind.ACCOUNT, beneficiary["account"])
    return EventDraft(
        idempotency_key=key,
        event_type=EventType.TRANSACTION,
        occurred_at=occurred_at,
        payload=payload,
        payload_hash=_transaction_digest(payload),
        primary=origin,
        counterparty=target,
        facts=(
            SubjectFacts(origin, {"country": originator["country"]}, occurred_at),
            SubjectFacts(target, {"country": beneficiary["country"]}, occurred_at),
        ),
        amount=amount,
        currency=currency,
    )


def _kyc_update(key: str, occurred_at: datetime, data: Mapping[str, Any]) -> EventDraft:
    _only(data, "data", {"subject", "attributes"})
    subject_raw = _mapping(_required(data, "subject", "data.subject"), "data.subject")
    _only(subject_raw, "data.subject", {"kind", "ref"})
    kind_name = _string(subject_raw, "kind", "data.subject.kind", 20)
    try:
        kind = SubjectKind(kind_name)
    except ValueError:
        raise InvalidEvent(
            "INVALID_VALUE", "data.subject.kind", "a subject is a customer or an account"
        ) from None
    ref = _account_like(subject_raw, "ref", "data.subject.ref")

    attrs_raw = _mapping(_required(data, "attributes", "data.attributes"), "data.attributes")
    _only(
        attrs_raw,
        "data.attributes",
        {"riskRating", "pep", "sanctionsHit", "residenceCountry", "segment"},
    )
    if not attrs_raw:
        raise InvalidEvent("REQUIRED", "data.attributes", "name at least one attribute")
    attributes: dict[str, Any] = {}
    for name in ("pep", "sanctionsHit"):
        if name in attrs_raw:
            value = attrs_raw[name]
            if not isinstance(value, bool):
                raise InvalidEvent("INVALID_TYPE", f"data.attributes.{name}", "expected a boolean")
            attributes[name] = value
    for name, allowed in (("riskRating", RISK_RATINGS), ("segment", SEGMENTS)):
        if name in attrs_raw:
            value = _string(attrs_raw, name, f"data.attributes.{name}", 20)
            if value not in allowed:
                raise InvalidEvent(
                    "INVALID_VALUE",
                    f"data.attributes.{name}",
                    f"one of: {', '.join(sorted(allowed))}",
                )
            attributes[name] = value
    if "residenceCountry" in attrs_raw:
        attributes["residenceCountry"] = _country(
            attrs_raw, "residenceCountry", "data.attributes.residenceCountry"
        )

    normalised = {"subject": {"kind": kind.value, "ref": ref}, "attributes": attributes}
    payload = _payload(EventType.KYC_UPDATED, occurred_at, normalised)
    subject = SubjectRef(kind, ref)
    return EventDraft(
        idempotency_key=key,
        event_type=EventType.KYC_UPDATED,
        occurred_at=occurred_at,
        payload=payload,
        payload_hash=digest_without_floats(payload),
        primary=subject,
        counterparty=None,
        facts=(SubjectFacts(subject, attributes, occurred_at),),
    )


def _payload(
    event_type: EventType, occurred_at: datetime, data: Mapping[str, Any]
) -> dict[str, Any]:
    return {"type": event_type.value, "occurredAt": format_time(occurred_at), "data": dict(data)}


def _transaction_digest(payload: Mapping[str, Any]) -> bytes:
    """``digest_without_floats(payload)`` of a transaction's payload, its canonical text
    written field by field: for this one shape, the generic encoder's making, sorting
    and walking of four objects was the dearest step of validating an event. Keys go
    in sorted order, strings are quoted by the function the json module quotes them
    with, and a payload of any other shape takes the generic way."""
    data = payload["data"]
    origin, target = data["originator"], data["beneficiary"]
    reference = data["reference"]
    if (len(payload), len(data), len(origin), len(target)) != (3, 6, 2, 2):
        return digest_without_floats(payload)
    text = "".join(
        (
            '{"data":{"amount":',
            _quoted(data["amount"]),
            ',"beneficiary":{"account":',
            _quoted(target["account"]),
            ',"country":',
            _quoted(target["country"]),
            '},"channel":',
            _quoted(data["channel"]),
            ',"currency":',
            _quoted(data["currency"]),
            ',"originator":{"account":',
            _quoted(origin["account"]),
            ',"country":',
            _quoted(origin["country"]),
            '},"reference":',
            "null" if reference is None else _quoted(reference),
            '},"occurredAt":',
            _quoted(payload["occurredAt"]),
            ',"type":',
            _quoted(payload["type"]),
            "}",
        )
    )
    return hashlib.sha256(text.encode("utf-8")).digest()


# -- field readers: each names the field at fault --------------------------------------


def _check_depth(event: Mapping[str, Any]) -> None:
    """Refuse an event nested deeper than MAX_EVENT_DEPTH, walking it one level at a
    time: json.dumps and friends recurse, and fail on nesting a few hundred deep."""
    level: list[object] = [event]
    depth = 0
    while level:
        depth += 1
        below: list[object] = []
        for value in level:
            kind = type(value)
            # Exact types first: the abstract Mapping check is slow, and events are made
            # of plain dicts, lists and scalars.
            if kind is str or kind is bool or kind is int or value is None:
                continue
            if kind is dict or isinstance(value, Mapping):
                children: Any = value.values()  # type: ignore[attr-defined]
            elif isinstance(value, list | tuple):
                children = value
            else:
                continue
            if depth > MAX_EVENT_DEPTH:
                raise InvalidEvent(
                    "TOO_DEEP", "", f"an event is nested at most {MAX_EVENT_DEPTH} levels deep"
                )
            below += children
        level = below


# What json.dumps(event, default=str, ensure_ascii=False) makes, without making the
# encoder anew for every event.
_SIZE_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


def _check_size(event: Mapping[str, Any]) -> None:
    try:
        text = _SIZE_ENCODER.encode(event)
        # Its size in UTF-8: its length when it is ASCII (a flag of the string's).
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except (TypeError, ValueError):
        raise InvalidEvent("INVALID_TYPE", "", "expected a JSON object") from None
    if size > MAX_EVENT_BYTES:
        raise InvalidEvent("TOO_LARGE", "", f"an event is at most {MAX_EVENT_BYTES} bytes")


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if type(value) is dict:
        return value
    if not isinstance(value, Mapping):
        raise InvalidEvent("INVALID_TYPE", path, "expected an object")
    return value


def _only(value: Mapping[str, Any], path: str, allowed: set[str]) -> None:
    if value.keys() <= allowed:
        return
    unknown = sorted(str(name) for name in value if name not in allowed)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise InvalidEvent("UNKNOWN_FIELD", where, "this field is not part of the event")


def _required(value: Mapping[str, Any], name: str, path: str) -> Any:
    if value.get(name) is None:
        raise InvalidEvent("REQUIRED", path, "this field is required")
    return value[name]


def _string(value: Mapping[str, Any], name: str, path: str, max_length: int) -> str:
    text = _required(value, name, path)
    if not isinstance(text, str):
        raise InvalidEvent("INVALID_TYPE", path, "expected a string")
    if not text.strip():
        raise InvalidEvent("REQUIRED", path, "this field is required")
    if len(text) > max_length:
        raise InvalidEvent("TOO_LONG", path, f"at most {max_length} characters")
    if _CONTROL.search(text) or not _visible(text):
        raise InvalidEvent(
            "INVALID_FORMAT", path, "control, format and separator characters are not allowed"
        )
    return text


def _visible(text: str) -> bool:
    """False when the text holds a character that hides or reorders what is shown."""
    return text.isascii() or not any(
        unicodedata.category(char) in _HIDDEN_CATEGORIES for char in text
    )


def _account_like(value: Mapping[str, Any], name: str, path: str) -> str:
    text = _string(value, name, path, 64)
    if not _ACCOUNT.fullmatch(text):
        raise InvalidEvent(
            "INVALID_FORMAT", path, "letters, digits and . _ : / - only, starting alphanumeric"
        )
    return text


def _country(value: Mapping[str, Any], name: str, path: str) -> str:
    code = _string(value, name, path, 2)
    if code not in COUNTRIES:
        raise InvalidEvent("INVALID_COUNTRY", path, "expected an ISO 3166-1 alpha-2 code")
    return code


def _currency(value: Mapping[str, Any], path: str) -> str:
    code = _string(value, "currency", path, 3)
    if code not in CURRENCY_MINOR_UNITS:
        raise InvalidEvent("INVALID_CURRENCY", path, "expected an ISO 4217 currency code")
    return code


def _amount(value: Mapping[str, Any], path: str, currency: str) -> Decimal:
    raw = _required(value, "amount", path)
    if not isinstance(raw, str):
        raise InvalidEvent(
            "INVALID_AMOUNT", path, 'send the amount as a decimal string, such as "125.50"'
        )
    if not _AMOUNT.fullmatch(raw):
        raise InvalidEvent("INVALID_AMOUNT", path, 'a positive decimal such as "125.50"')
    try:
        amount = Decimal(raw)
    except InvalidOperation:  # pragma: no cover - the pattern already guards this
        raise InvalidEvent("INVALID_AMOUNT", path, "not a decimal number") from None
    exponent = CURRENCY_MINOR_UNITS[currency]
    quantized = amount.quantize(_QUANTA[exponent])
    if amount != quantized:
        raise InvalidEvent(
            "INVALID_AMOUNT", path, f"{currency} has {exponent} digits after the point"
        )
    if amount <= 0:
        raise InvalidEvent("INVALID_AMOUNT", path, "the amount must be greater than zero")
    if len(quantized.as_tuple().digits) > MAX_AMOUNT_DIGITS:
        raise InvalidEvent("INVALID_AMOUNT", path, "the amount is too large")
    return quantized


def _party(data: Mapping[str, Any], name: str) -> dict[str, str]:
    path = f"data.{name}"
    party = _mapping(_required(data, name, path), path)
    _only(party, path, {"account", "country"})
    return {
        "account": _account_like(party, "account", f"{path}.account"),
        "country": _country(party, "country", f"{path}.country"),
    }


def _time(value: Mapping[str, Any], name: str, now: datetime) -> datetime:
    text = _string(value, name, name, 40)
    # datetime.fromisoformat alone also reads week dates, basic format, offsets with
    # seconds and long fractions: the pattern holds it to RFC 3339.
    form = _RFC3339.fullmatch(text)
    if form is None:
        raise InvalidEvent(
            "INVALID_TIME", name, "expected an RFC 3339 date-time, such as 2026-03-01T09:30:00Z"
        )
    if form["offset"] is None:
        raise InvalidEvent("NAIVE_TIME", name, "the time must carry its offset, such as Z")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEvent("INVALID_TIME", name, "not a valid date and time") from None
    # Aware datetimes compare by their UTC instant, without converting (which could
    # overflow at the ends of the calendar).
    if moment > now + FUTURE_TOLERANCE:
        raise InvalidEvent("TIME_IN_FUTURE", name, "the event lies more than a day ahead")
    if moment < EPOCH:
        raise InvalidEvent("INVALID_TIME", name, "the event lies before 1970")
    return moment
