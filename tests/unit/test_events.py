"""Validation of events as the doors in receive them."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.canonical import digest
from domain.errors import InvalidEvent
from domain.events import CHANNELS, EventType, SubjectKind, mask, parse_event

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _set(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(event)
    *parents, last = path.split(".")
    target = changed
    for part in parents:
        target = target[part]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return changed


_DELETE = object()


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_a_valid_transaction_is_normalised(transaction_event: Any) -> None:
    draft = parse_event(transaction_event("k1", amount="10.5"), now=NOW)

    assert draft.event_type is EventType.TRANSACTION
    assert draft.amount == Decimal("10.50")
    assert draft.payload["data"]["amount"] == "10.50"
    assert draft.payload["occurredAt"] == "2026-03-01T08:30:00.000000Z"
    assert draft.primary.kind is SubjectKind.ACCOUNT
    assert draft.counterparty is not None


_ACCOUNTS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,20}", fullmatch=True)
_PARTIES = st.fixed_dictionaries(
    {"account": _ACCOUNTS, "country": st.sampled_from(["DE", "FR", "NL", "US", "JP"])}
)
_TRANSACTIONS = st.fixed_dictionaries(
    {
        "idempotencyKey": st.just("k"),
        "type": st.just("transaction"),
        "occurredAt": st.sampled_from(
            ["2026-03-01T09:30:00+01:00", "2026-05-31T23:59:59.123456Z", "1999-12-31T23:00:00Z"]
        ),
        "data": st.fixed_dictionaries(
            {
                "amount": st.from_regex(r"[0-9]{1,15}(\.[0-9]{1,3})?", fullmatch=True),
                "currency": st.sampled_from(["EUR", "JPY", "BHD", "USD"]),
                "originator": _PARTIES,
                "beneficiary": _PARTIES,
                "channel": st.sampled_from(sorted(CHANNELS)),
            },
            optional={
                "reference": st.none()
                | st.text(max_size=140)
                | st.sampled_from(['say "hi"', "back\\slash\\", "ünï €", "emoji 🙂", "/"])
            },
        ),
    }
)


@given(_TRANSACTIONS)
def test_a_transaction_is_hashed_as_its_canonical_payload(event: dict[str, Any]) -> None:
    """The payload's hash is written field by field for speed: it must be the hash of
    the payload's canonical bytes, whatever the values."""
    try:
        draft = parse_event(event, now=NOW)
    except InvalidEvent:
        return
    assert draft.payload_hash == digest(draft.payload)


def test_the_same_meaning_has_the_same_hash(transaction_event: Any) -> None:
    one = parse_event(transaction_event("k1", amount="10.5"), now=NOW)
    two = parse_event(
        transaction_event("k2", amount="10.50", occurred_at="2026-03-01T08:30:00Z"), now=NOW
    )
    three = parse_event(transaction_event("k3", amount="10.51"), now=NOW)

    assert one.payload_hash == two.payload_hash
    assert one.payload_hash != three.payload_hash


BAD = [
    ("data.amount", 10.5, "INVALID_AMOUNT", "data.amount"),
    ("data.amount", "-1.00", "INVALID_AMOUNT", "data.amount"),
    ("data.amount", "0", "INVALID_AMOUNT", "data.amount"),
    ("data.amount", "1.005", "INVALID_AMOUNT", "data.amount"),
    ("data.amount", "1e5", "INVALID_AMOUNT", "data.amount"),
    ("data.amount", "9" * 19, "INVALID_AMOUNT", "data.amount"),
    ("data.currency", "EURO", "TOO_LONG", "data.currency"),
    ("data.currency", "XYZ", "INVALID_CURRENCY", "data.currency"),
    ("data.originator.country", "XX", "INVALID_COUNTRY", "data.originator.country"),
    ("data.beneficiary.account", "bad account!", "INVALID_FORMAT", "data.beneficiary.account"),
    ("data.beneficiary.account", _DELETE, "REQUIRED", "data.beneficiary.account"),
    ("data.channel", "pigeon", "INVALID_VALUE", "data.channel"),
    ("data.reference", "x" * 141, "TOO_LONG", "data.reference"),
    ("data.reference", "line\nbreak", "INVALID_FORMAT", "data.reference"),
    ("data.extra", 1, "UNKNOWN_FIELD", "data.extra"),
    ("data.originator.iban", "x", "UNKNOWN_FIELD", "data.originator.iban"),
    ("extra", 1, "UNKNOWN_FIELD", "extra"),
    ("occurredAt", "2026-03-01T09:30:00", "NAIVE_TIME", "occurredAt"),
    ("occurredAt", "yesterday", "INVALID_TIME", "occurredAt"),
    ("occurredAt", "2027-01-01T00:00:00Z", "TIME_IN_FUTURE", "occurredAt"),
    ("type", "payment", "UNKNOWN_EVENT_TYPE", "type"),
    ("idempotencyKey", "has space", "INVALID_FORMAT", "idempotencyKey"),
    ("idempotencyKey", "k" * 201, "TOO_LONG", "idempotencyKey"),
    ("idempotencyKey", 42, "INVALID_TYPE", "idempotencyKey"),
    ("data", _DELETE, "REQUIRED", "data"),
    ("data", [], "INVALID_TYPE", "data"),
    ("data.reference", "x" * 20_000, "TOO_LARGE", ""),
    # A pattern must match the whole value: "$" alone would let a final newline through.
    ("data.amount", "1.00\n", "INVALID_AMOUNT", "data.amount"),
    ("idempotencyKey", "k1\n", "INVALID_FORMAT", "idempotencyKey"),
    ("data.beneficiary.account", "ACC1\n", "INVALID_FORMAT", "data.beneficiary.account"),
    ("data.channel", "sepa\n", "INVALID_FORMAT", "data.channel"),
    # Characters that reorder or hide text, and C1 controls, in free text.
    ("data.reference", "invoice \u202e24", "INVALID_FORMAT", "data.reference"),
    ("data.reference", "in\u200bvoice", "INVALID_FORMAT", "data.reference"),
    ("data.reference", "\ufeffinvoice", "INVALID_FORMAT", "data.reference"),
    ("data.reference", "line\u2028break", "INVALID_FORMAT", "data.reference"),
    ("data.reference", "para\u2029break", "INVALID_FORMAT", "data.reference"),
    ("data.reference", "next\x85line", "INVALID_FORMAT", "data.reference"),
    ("data.reference", "csi\x9b", "INVALID_FORMAT", "data.reference"),
    # Only RFC 3339 date-times, and 1970 counts in UTC.
    ("occurredAt", "20260301T093000Z", "INVALID_TIME", "occurredAt"),
    ("occurredAt", "2026-W09-1T09:30:00Z", "INVALID_TIME", "occurredAt"),
    ("occurredAt", "2026-060T09:30:00Z", "INVALID_TIME", "occurredAt"),
    ("occurredAt", "2026-03-01T09:30:00+01:00:30", "INVALID_TIME", "occurredAt"),
    ("occurredAt", "2026-03-01T09:30:00.1234567Z", "INVALID_TIME", "occurredAt"),
    ("occurredAt", "2026-03-01T09:30Z", "INVALID_TIME", "occurredAt"),
    ("occurredAt", "2026-03-01 09:30:00Z", "INVALID_TIME", "occurredAt"),
    ("occurredAt", "2026-03-01T09:30:00+0100", "INVALID_TIME", "occurredAt"),
    ("occurredAt", "2026-13-01T09:30:00Z", "INVALID_TIME", "occurredAt"),
    ("occurredAt", "1970-01-01T00:30:00+01:00", "INVALID_TIME", "occurredAt"),
    ("occurredAt", "0001-01-01T00:00:00+01:00", "INVALID_TIME", "occurredAt"),
    # Nesting is bounded before anything walks the event recursively.
    ("data.reference", _nested(9), "TOO_DEEP", ""),
    ("data.extra", _nested(5_000), "TOO_DEEP", ""),
]


@pytest.mark.parametrize(("path", "value", "code", "field"), BAD)
def test_a_bad_event_is_refused_naming_the_field(
    transaction_event: Any, path: str, value: Any, code: str, field: str
) -> None:
    event = _set(transaction_event("k1"), path, value)

    with pytest.raises(InvalidEvent) as raised:
        parse_event(event, now=NOW)

    assert (raised.value.code, raised.value.field) == (code, field)


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2026-03-01T09:30:00Z",
        "2026-03-01T09:30:00.5+01:00",
        "2026-03-01T09:30:00.123456-05:30",
        "1970-01-01T00:00:00Z",
        "1970-01-01T00:30:00-01:00",
    ],
)
def test_an_rfc_3339_time_is_accepted(transaction_event: Any, occurred_at: str) -> None:
    draft = parse_event(transaction_event("k1", occurred_at=occurred_at), now=NOW)

    assert draft.occurred_at.utcoffset() is not None


def test_a_reference_may_hold_any_printable_script(transaction_event: Any) -> None:
    event = _set(transaction_event("k1"), "data.reference", "Rechnung Nr. 42, Müller, 東京")

    draft = parse_event(event, now=NOW)

    assert draft.payload["data"]["reference"] == "Rechnung Nr. 42, Müller, 東京"


def test_an_event_eight_levels_deep_is_not_too_deep(transaction_event: Any) -> None:
    # The event is level 1 and data level 2: a reference nested to level 8 is refused
    # for its type, not for its depth.
    event = _set(transaction_event("k1"), "data.reference", _nested(6))

    with pytest.raises(InvalidEvent) as raised:
        parse_event(event, now=NOW)

    assert (raised.value.code, raised.value.field) == ("INVALID_TYPE", "data.reference")


def test_an_account_cannot_pay_itself(transaction_event: Any) -> None:
    event = transaction_event("k1", originator="ACC1", beneficiary="ACC1")

    with pytest.raises(InvalidEvent) as raised:
        parse_event(event, now=NOW)

    assert raised.value.code == "INVALID_VALUE"


def test_a_kyc_update_names_its_subject_and_attributes() -> None:
    draft = parse_event(
        {
            "idempotencyKey": "kyc-1",
            "type": "kyc.updated",
            "occurredAt": "2026-02-01T00:00:00Z",
            "data": {
                "subject": {"kind": "customer", "ref": "CUST-1"},
                "attributes": {"riskRating": "high", "pep": True, "residenceCountry": "IR"},
            },
        },
        now=NOW,
    )

    assert draft.primary.kind is SubjectKind.CUSTOMER
    assert draft.facts[0].attributes == {
        "riskRating": "high",
        "pep": True,
        "residenceCountry": "IR",
    }


@pytest.mark.parametrize(
    ("attributes", "code", "field"),
    [
        ({}, "REQUIRED", "data.attributes"),
        ({"pep": "yes"}, "INVALID_TYPE", "data.attributes.pep"),
        ({"riskRating": "extreme"}, "INVALID_VALUE", "data.attributes.riskRating"),
        ({"residenceCountry": "ZZ"}, "INVALID_COUNTRY", "data.attributes.residenceCountry"),
        ({"income": 5}, "UNKNOWN_FIELD", "data.attributes.income"),
    ],
)
def test_bad_kyc_attributes_are_refused(attributes: dict[str, Any], code: str, field: str) -> None:
    event = {
        "idempotencyKey": "kyc-1",
        "type": "kyc.updated",
        "occurredAt": "2026-02-01T00:00:00Z",
        "data": {"subject": {"kind": "customer", "ref": "CUST-1"}, "attributes": attributes},
    }
    with pytest.raises(InvalidEvent) as raised:
        parse_event(event, now=NOW)

    assert (raised.value.code, raised.value.field) == (code, field)


def test_masking_keeps_only_the_last_four_characters() -> None:
    assert mask("DE89370400440532013000") == "…3000"
    assert mask("1234") == "…"
