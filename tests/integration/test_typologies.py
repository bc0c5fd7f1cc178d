"""Each typology of the default ruleset fires on a crafted history and stays quiet on a
near miss, with the explanation's values right.

Every test takes the real path: a fresh tenant with the default ruleset active, a small
history ingested as an integration would send it, and the history's last event scored.
The assessment's explanation is read back as stored, and for the rule under test it
must show exactly the figures the history makes, the rule's own parameters as its
thresholds, and a reason that names both. A near miss is the same history one unit
short (one sender fewer, a second less dormant, a cent below, a country not listed),
and its figures are checked too, so that it misses by that one unit and no more.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.cel_rules import CachedScorers
from domain.default_ruleset import DEFAULT_RULESET
from domain.ports import UnitOfWorkFactory
from services.ingest import Caller, Outcome, ingest_events
from services.scoring import ScoreOutcome, install_ruleset, score_event
from tests.integration.scoring_support import Effects, effects

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
# The ingest clock: every event of a history lies in its past.
NOW = T + timedelta(days=1)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

RULES: Mapping[str, Mapping[str, Any]] = {rule["code"]: rule for rule in DEFAULT_RULESET["rules"]}
HIGH_RISK = ["KP", "IR", "MM"]

_keys = itertools.count(1)


# -- history builders ----------------------------------------------------------------------


def pay(
    origin: str,
    target: str,
    at: datetime,
    amount: str = "100.00",
    *,
    origin_country: str = "NL",
    target_country: str = "NL",
    currency: str = "EUR",
) -> dict[str, Any]:
    """A transfer between two accounts, as an integration sends it."""
    return {
        "idempotencyKey": f"ty-{next(_keys)}",
        "type": "transaction",
        "occurredAt": at.isoformat(),
        "data": {
            "amount": amount,
            "currency": currency,
            "originator": {"account": origin, "country": origin_country},
            "beneficiary": {"account": target, "country": target_country},
            "channel": "sepa",
        },
    }


def kyc(account: str, at: datetime, **attributes: Any) -> dict[str, Any]:
    """A KYC update of an account: ``pep=True``, ``sanctionsHit=True``, ..."""
    return {
        "idempotencyKey": f"ty-{next(_keys)}",
        "type": "kyc.updated",
        "occurredAt": at.isoformat(),
        "data": {"subject": {"kind": "account", "ref": account}, "attributes": attributes},
    }


def fan_in(senders: int, transfers: int = 0) -> list[dict[str, Any]]:
    """``transfers`` (default: one per sender) of 100.00 into B within a day, from
    ``senders`` different accounts taken in turn; the last at T."""
    count = transfers or senders
    return [
        pay(f"S{index % senders}", "B", T - (count - 1 - index) * HOUR) for index in range(count)
    ]


def split(pieces: int, amount: str = "100.00") -> list[dict[str, Any]]:
    """A's regular history (one transfer of 300.00 to C a week, from 30 days back), then
    ``pieces`` transfers of ``amount`` from A to B within the last 23 hours; the last at T."""
    regular = [pay("A", "C", T - (30 - 7 * week) * DAY, "300.00") for week in range(4)]
    return [
        *regular,
        *(pay("A", "B", T - (pieces - 1 - index) * HOUR, amount) for index in range(pieces)),
    ]


def profile(
    account: str, scored: dict[str, Any], *, sent: str = "", got: str = "", times: int = 4
) -> list[dict[str, Any]]:
    """``account``'s profile: ``times`` transfers of ``sent`` from it and as many of ``got``
    to it, three days apart and each with another account; then the scored transfer."""
    history = []
    for index in range(times):
        at = T - 3 * (times - index) * DAY
        if sent:
            history.append(pay(account, f"P{index}", at, sent))
        if got:
            history.append(pay(f"Q{index}", account, at, got))
    return [*history, scored]


def fan_out(recipients: int, transfers: int = 0) -> list[dict[str, Any]]:
    """``transfers`` (default: one per recipient) of 100.00 from A, twelve hours apart
    (so never a burst), to ``recipients`` different accounts taken in turn; the last at T."""
    count = transfers or recipients
    return [
        pay("A", f"R{index % recipients}", T - (count - 1 - index) * 12 * HOUR)
        for index in range(count)
    ]


def burst(*offsets: timedelta) -> list[dict[str, Any]]:
    """Transfers of 100.00 from A to a new account each, at T minus each offset, in the
    order given (end with ``0 * HOUR``: the scored one)."""
    return [pay("A", f"R{index}", T - offset) for index, offset in enumerate(offsets)]


def day_burst(count: int) -> list[dict[str, Any]]:
    """``count`` transfers from A within a day, about two hours apart and none within the
    hour before the last, which is at T."""
    return burst(*(index * 2 * HOUR + 10 * MINUTE for index in range(count - 1, 0, -1)), 0 * HOUR)


def repeated(times: int, others: int = 0) -> list[dict[str, Any]]:
    """``others`` transfers from A to C, then ``times`` from A to B, a day apart; the
    last (A to B) at T."""
    targets = ["C"] * others + ["B"] * times
    return [pay("A", target, T - (len(targets) - 1 - i) * DAY) for i, target in enumerate(targets)]


def one(amount: str, **countries: str) -> list[dict[str, Any]]:
    """A single transfer from A to B at T."""
    return [pay("A", "B", T, amount, **countries)]


def after(*history: dict[str, Any], scored: dict[str, Any]) -> list[dict[str, Any]]:
    return [*history, scored]


# -- the cases -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A history whose last event is scored, the rule looked at, and what its line of the
    explanation must show."""

    code: str
    history: list[dict[str, Any]]
    observed: Mapping[str, Any]
    # Fragments the reason must contain, beside the values it names (checked generically).
    reason: tuple[str, ...] = ()


FIRES = [
    pytest.param(
        Case(
            "LARGE_TRANSACTION",
            one("10000.00"),
            {"event.currency": "EUR", "event.amount_minor": 1_000_000},
            ("A transfer of 10000.00 EUR (1000000 minor units)", "threshold of 1000000"),
        ),
        id="large-transaction",
    ),
    pytest.param(
        Case(
            "STRUCTURING",
            [
                pay("A", "B1", T - 7 * DAY + SECOND, "9999.99"),
                pay("A", "B2", T - 3 * DAY, "9500.00"),
                pay("A", "B3", T, "9000.00"),  # exactly 90% of the threshold
            ],
            {
                "event.currency": "EUR",
                "event.amount_minor": 900_000,
                "originator.near_threshold_count_7d": 3,
            },
            ("3 transfers within 7 days (threshold 3)", "this one is 900000 minor units"),
        ),
        id="structuring",
    ),
    pytest.param(
        Case(
            "VELOCITY_COUNT",
            burst(HOUR - SECOND, 45 * MINUTE, 30 * MINUTE, 15 * MINUTE, 0 * HOUR),
            {"originator.out_count_1h": 5, "originator.out_count_24h": 5},
            ("5 outgoing transfers within an hour (threshold 5)", "5 within a day (threshold 10)"),
        ),
        id="velocity-count-hour",
    ),
    pytest.param(
        Case(
            "VELOCITY_COUNT",
            day_burst(10),
            {"originator.out_count_1h": 1, "originator.out_count_24h": 10},
            ("1 outgoing transfers within an hour", "10 within a day (threshold 10)"),
        ),
        id="velocity-count-day",
    ),
    pytest.param(
        Case(
            "VELOCITY_SUM",
            [
                pay("A", "B1", T - 6 * DAY, "8333.33"),
                pay("A", "B2", T - 3 * DAY, "8333.33"),
                pay("A", "B3", T, "8333.34"),
            ],
            {
                "event.currency": "EUR",
                "originator.out_count_7d": 3,
                "originator.out_sum_minor_7d": 2_500_000,
            },
            ("3 outgoing transfers within 7 days (from 3)", "2500000 minor units (threshold"),
        ),
        id="velocity-sum",
    ),
    pytest.param(
        Case(
            "FAN_IN",
            fan_in(15),
            {"beneficiary.in_distinct_7d": 15},
            (
                "15 different accounts paid this account within 7 days (threshold 15)",
                "15 transfers, 150000 minor units in all",
            ),
        ),
        id="fan-in",
    ),
    pytest.param(
        Case(
            "FAN_OUT",
            fan_out(10),
            {"originator.out_distinct_7d": 10},
            (
                "This account paid 10 different accounts within 7 days (threshold 10)",
                "10 transfers, 100000 minor units in all",
            ),
        ),
        id="fan-out",
    ),
    pytest.param(
        Case(
            "RAPID_PASS_THROUGH",
            [pay("X", "A", T - 6 * HOUR, "5000.00"), pay("A", "Y", T, "4000.00")],  # 80%
            {
                "event.currency": "EUR",
                "originator.in_count_24h": 1,
                "originator.out_sum_minor_24h": 400_000,
                "originator.in_sum_minor_24h": 500_000,
            },
            ("500000 minor units came in over 1 transfer(s) and 400000 went out",),
        ),
        id="rapid-pass-through",
    ),
    pytest.param(
        Case(
            "RAPID_PASS_THROUGH",
            [pay("X", "A", T - 6 * HOUR, "5000.00"), pay("A", "Y", T, "5500.00")],  # 110%
            {
                "event.currency": "EUR",
                "originator.in_count_24h": 1,
                "originator.out_sum_minor_24h": 550_000,
                "originator.in_sum_minor_24h": 500_000,
            },
            ("500000 minor units came in over 1 transfer(s) and 550000 went out",),
        ),
        id="rapid-pass-through-at-most",
    ),
    pytest.param(
        Case(
            "REPEATED_PAIR",
            repeated(5),
            {"originator.pair_count_7d": 5},
            ("5 transfers from this account to the same beneficiary within 7 days",),
        ),
        id="repeated-pair",
    ),
    pytest.param(
        Case(
            "SPLIT_PAYMENTS",
            split(2),
            {"originator.pair_count_24h": 2},
            ("2 transfers from this account to the same beneficiary within 24 hours",),
        ),
        id="split-payments",
    ),
    pytest.param(
        Case(
            "SPLIT_PAYMENTS_RECEIVED",
            split(5, "4.99"),
            {"originator.pair_count_24h": 5},
            ("This account received 5 transfers from the same sender within 24 hours",),
        ),
        id="split-payments-received",
    ),
    pytest.param(
        Case(
            "UNUSUAL_AMOUNT_OUT",
            # Four transfers of 360.00, then 60.00: 60.00 * 5 is 20% of their sum, 1500.00.
            profile("A", pay("A", "B", T, "60.00"), sent="360.00"),
            {
                "event.currency": "EUR",
                "event.amount_minor": 6_000,
                "originator.out_count_90d": 5,
                "originator.out_sum_minor_90d": 150_000,
            },
            ("A transfer of 6000 minor units against 150000 sent over 5 transfers",),
        ),
        id="unusual-amount-out-a-fifth-of-the-average",
    ),
    pytest.param(
        Case(
            "UNUSUAL_AMOUNT_OUT",
            # Nine transfers of 100.00, then 900.00: 900.00 * 10 is 500% of 1800.00.
            profile("A", pay("A", "B", T, "900.00"), sent="100.00", times=9),
            {
                "event.currency": "EUR",
                "event.amount_minor": 90_000,
                "originator.out_count_90d": 10,
                "originator.out_sum_minor_90d": 180_000,
            },
            ("A transfer of 90000 minor units against 180000 sent over 10 transfers",),
        ),
        id="unusual-amount-out-five-times-the-average",
    ),
    pytest.param(
        Case(
            "UNUSUAL_AMOUNT_IN",
            profile("B", pay("A", "B", T, "60.00"), got="360.00"),
            {
                "event.currency": "EUR",
                "event.amount_minor": 6_000,
                "beneficiary.in_count_90d": 5,
                "beneficiary.in_sum_minor_90d": 150_000,
            },
            ("A transfer of 6000 minor units received against 150000 received over 5",),
        ),
        id="unusual-amount-in-a-fifth-of-the-average",
    ),
    pytest.param(
        Case(
            "HIGH_RISK_COUNTRY",
            one("100.00", target_country="IR"),
            {"event.beneficiary_country": "IR", "beneficiary.country": "IR"},
            ("the receiving account is in IR, its holder in IR", "(listed: KP, IR, MM)"),
        ),
        id="high-risk-country-outbound",
    ),
    pytest.param(
        Case(
            "HIGH_RISK_COUNTRY_INBOUND",
            one("100.00", origin_country="KP"),
            {"event.originator_country": "KP", "originator.country": "KP"},
            ("the sending account is in KP, its holder in KP", "(listed: KP, IR, MM)"),
        ),
        id="high-risk-country-inbound",
    ),
    pytest.param(
        Case(
            "DORMANT_REACTIVATED",
            [pay("A", "B", T - 180 * DAY), pay("A", "C", T)],
            {"originator.days_dormant": 180},
            ("after 180 days without any activity (dormant from 180 days)",),
        ),
        id="dormant-reactivated",
    ),
    pytest.param(
        Case(
            "DORMANT_REACTIVATED",
            # Received money counts as activity too: the last of it was 200 days ago.
            [pay("X", "A", T - 200 * DAY), pay("A", "C", T)],
            {"originator.days_dormant": 200},
            ("after 200 days without any activity",),
        ),
        id="dormant-reactivated-after-receiving",
    ),
    pytest.param(
        Case(
            "ROUND_AMOUNT",
            one("5000.00"),
            {"event.currency": "EUR", "event.amount_minor": 500_000},
            ("A round amount of 5000.00 EUR (500000 minor units", "from 500000"),
        ),
        id="round-amount",
    ),
    pytest.param(
        Case(
            "PEP_TRANSACTION",
            after(kyc("A", T - DAY, pep=True), scored=pay("A", "B", T, "5000.00")),
            {"originator.pep": True, "event.currency": "EUR", "event.amount_minor": 500_000},
            ("A politically exposed person sends 5000.00 EUR (500000 minor units",),
        ),
        id="pep",
    ),
    pytest.param(
        Case(
            "SANCTIONED_ORIGINATOR",
            after(kyc("A", T - DAY, sanctionsHit=True), scored=pay("A", "B", T)),
            {"originator.sanctions_hit": True},
            ("The sending account's holder is a sanctions screening hit.",),
        ),
        id="sanctioned-originator",
    ),
    pytest.param(
        Case(
            "SANCTIONED_BENEFICIARY",
            after(kyc("B", T - DAY, sanctionsHit=True), scored=pay("A", "B", T)),
            {"beneficiary.sanctions_hit": True},
            ("The receiving account's holder is a sanctions screening hit.",),
        ),
        id="sanctioned-beneficiary",
    ),
]

NEAR_MISSES = [
    pytest.param(
        Case(
            "LARGE_TRANSACTION",
            one("9999.99"),
            {"event.currency": "EUR", "event.amount_minor": 999_999},
        ),
        id="large-transaction-a-cent-below",
    ),
    pytest.param(
        Case(
            "LARGE_TRANSACTION",
            [pay("A", "B", T, "10000.00", currency="USD")],
            {"event.currency": "USD", "event.amount_minor": 1_000_000},
        ),
        id="large-transaction-in-another-currency",
    ),
    pytest.param(
        Case(
            "STRUCTURING",
            [
                pay("A", "B1", T - 7 * DAY, "9999.99"),  # on the window's edge: outside
                pay("A", "B2", T - 3 * DAY, "9500.00"),
                pay("A", "B3", T, "9000.00"),
            ],
            {
                "event.currency": "EUR",
                "event.amount_minor": 900_000,
                "originator.near_threshold_count_7d": 2,
            },
        ),
        id="structuring-one-transfer-fewer",
    ),
    pytest.param(
        Case(
            "STRUCTURING",
            [
                pay("A", "B1", T - 5 * DAY, "9999.99"),
                pay("A", "B2", T - 3 * DAY, "9500.00"),
                pay("A", "B3", T, "8999.99"),  # a cent below 90% of the threshold
            ],
            {
                "event.currency": "EUR",
                "event.amount_minor": 899_999,
                "originator.near_threshold_count_7d": 2,
            },
        ),
        id="structuring-a-cent-below-the-band",
    ),
    pytest.param(
        Case(
            "VELOCITY_COUNT",
            burst(HOUR, 45 * MINUTE, 30 * MINUTE, 15 * MINUTE, 0 * HOUR),  # the first: 1h ago
            {"originator.out_count_1h": 4, "originator.out_count_24h": 5},
        ),
        id="velocity-count-one-fewer-within-the-hour",
    ),
    pytest.param(
        Case(
            "VELOCITY_COUNT",
            day_burst(9),
            {"originator.out_count_1h": 1, "originator.out_count_24h": 9},
        ),
        id="velocity-count-one-fewer-within-the-day",
    ),
    pytest.param(
        Case(
            "VELOCITY_SUM",
            [
                pay("A", "B1", T - 6 * DAY, "8333.33"),
                pay("A", "B2", T - 3 * DAY, "8333.33"),
                pay("A", "B3", T, "8333.33"),
            ],
            {
                "event.currency": "EUR",
                "originator.out_count_7d": 3,
                "originator.out_sum_minor_7d": 2_499_999,
            },
        ),
        id="velocity-sum-a-cent-below",
    ),
    pytest.param(
        Case(
            "VELOCITY_SUM",
            [pay("A", "B1", T - 3 * DAY, "12500.00"), pay("A", "B2", T, "12500.00")],
            {
                "event.currency": "EUR",
                "originator.out_count_7d": 2,
                "originator.out_sum_minor_7d": 2_500_000,
            },
        ),
        id="velocity-sum-one-transfer-fewer",
    ),
    pytest.param(
        Case("FAN_IN", fan_in(14, transfers=15), {"beneficiary.in_distinct_7d": 14}),
        id="fan-in-one-sender-fewer",
    ),
    pytest.param(
        Case(
            "FAN_IN",
            # The first sender paid exactly 7 days before: outside the window.
            [pay("S0", "B", T - 7 * DAY), *fan_in(15)[1:]],
            {"beneficiary.in_distinct_7d": 14},
        ),
        id="fan-in-one-sender-a-week-ago",
    ),
    pytest.param(
        Case("FAN_OUT", fan_out(9, transfers=10), {"originator.out_distinct_7d": 9}),
        id="fan-out-one-recipient-fewer",
    ),
    pytest.param(
        Case(
            "RAPID_PASS_THROUGH",
            [pay("X", "A", T - 6 * HOUR, "5000.00"), pay("A", "Y", T, "3999.99")],
            {
                "event.currency": "EUR",
                "originator.in_count_24h": 1,
                "originator.out_sum_minor_24h": 399_999,
                "originator.in_sum_minor_24h": 500_000,
            },
        ),
        id="rapid-pass-through-a-cent-below-80-percent",
    ),
    pytest.param(
        Case(
            "RAPID_PASS_THROUGH",
            [pay("X", "A", T - 6 * HOUR, "5000.00"), pay("A", "Y", T, "5500.01")],
            {
                "event.currency": "EUR",
                "originator.in_count_24h": 1,
                "originator.out_sum_minor_24h": 550_001,
                "originator.in_sum_minor_24h": 500_000,
            },
        ),
        id="rapid-pass-through-a-cent-above-110-percent",
    ),
    pytest.param(
        Case(
            "RAPID_PASS_THROUGH",
            [pay("X", "A", T - 24 * HOUR, "5000.00"), pay("A", "Y", T, "4000.00")],
            {
                "event.currency": "EUR",
                "originator.in_count_24h": 0,
                "originator.out_sum_minor_24h": 400_000,
                "originator.in_sum_minor_24h": 0,
            },
        ),
        id="rapid-pass-through-money-came-in-a-day-ago",
    ),
    pytest.param(
        Case(
            "RAPID_PASS_THROUGH",
            [pay("X", "A", T - 6 * HOUR, "1000.00"), pay("A", "Y", T, "999.99")],
            {
                "event.currency": "EUR",
                "originator.in_count_24h": 1,
                "originator.out_sum_minor_24h": 99_999,
                "originator.in_sum_minor_24h": 100_000,
            },
        ),
        id="rapid-pass-through-a-cent-below-the-minimum",
    ),
    pytest.param(
        Case("REPEATED_PAIR", repeated(4, others=1), {"originator.pair_count_7d": 4}),
        id="repeated-pair-one-to-another-beneficiary",
    ),
    pytest.param(
        Case(
            "SPLIT_PAYMENTS",
            [pay("A", "B", T - 24 * HOUR), pay("A", "B", T)],  # on the 24h edge: outside
            {"originator.pair_count_24h": 1},
        ),
        id="split-payments-a-day-apart",
    ),
    pytest.param(
        Case(
            "SPLIT_PAYMENTS_RECEIVED",
            # B is paid twice within the day, but by two different senders.
            [pay("C", "B", T - HOUR), pay("A", "B", T)],
            {"originator.pair_count_24h": 1},
        ),
        id="split-payments-received-from-two-senders",
    ),
    pytest.param(
        Case(
            "UNUSUAL_AMOUNT_OUT",
            profile("A", pay("A", "B", T, "60.01"), sent="360.00"),
            {
                "event.currency": "EUR",
                "event.amount_minor": 6_001,
                "originator.out_count_90d": 5,
                "originator.out_sum_minor_90d": 150_001,
            },
        ),
        id="unusual-amount-out-a-cent-above-a-fifth",
    ),
    pytest.param(
        Case(
            "UNUSUAL_AMOUNT_OUT",
            profile("A", pay("A", "B", T, "899.99"), sent="100.00", times=9),
            {
                "event.currency": "EUR",
                "event.amount_minor": 89_999,
                "originator.out_count_90d": 10,
                "originator.out_sum_minor_90d": 179_999,
            },
        ),
        id="unusual-amount-out-a-cent-below-five-times",
    ),
    pytest.param(
        Case(
            "UNUSUAL_AMOUNT_OUT",
            # What A sent 90 days ago is out of its profile: it has no profile yet.
            [pay("A", "C", T - 90 * DAY, "360.00"), pay("A", "B", T, "1.00")],
            {
                "event.currency": "EUR",
                "event.amount_minor": 100,
                "originator.out_count_90d": 1,
                "originator.out_sum_minor_90d": 100,
            },
        ),
        id="unusual-amount-out-no-profile-within-90-days",
    ),
    pytest.param(
        Case(
            "UNUSUAL_AMOUNT_IN",
            profile("B", pay("A", "B", T, "60.01"), got="360.00"),
            {
                "event.currency": "EUR",
                "event.amount_minor": 6_001,
                "beneficiary.in_count_90d": 5,
                "beneficiary.in_sum_minor_90d": 150_001,
            },
        ),
        id="unusual-amount-in-a-cent-above-a-fifth",
    ),
    pytest.param(
        Case(
            "HIGH_RISK_COUNTRY",
            one("100.00", target_country="KR"),
            {"event.beneficiary_country": "KR", "beneficiary.country": "KR"},
        ),
        id="high-risk-country-outbound-not-listed",
    ),
    pytest.param(
        Case(
            "HIGH_RISK_COUNTRY",
            # Money from a listed country is the receiver's concern, not the sender's.
            one("100.00", origin_country="IR"),
            {"event.beneficiary_country": "NL", "beneficiary.country": "NL"},
        ),
        id="high-risk-country-outbound-money-comes-from-there",
    ),
    pytest.param(
        Case(
            "HIGH_RISK_COUNTRY_INBOUND",
            one("100.00", origin_country="KR"),
            {"event.originator_country": "KR", "originator.country": "KR"},
        ),
        id="high-risk-country-inbound-not-listed",
    ),
    pytest.param(
        Case(
            "DORMANT_REACTIVATED",
            [pay("A", "B", T - 179 * DAY), pay("A", "C", T)],
            {"originator.days_dormant": 179},
        ),
        id="dormant-one-day-less",
    ),
    pytest.param(
        Case(
            "DORMANT_REACTIVATED",
            [pay("A", "B", T - 180 * DAY + SECOND), pay("A", "C", T)],
            {"originator.days_dormant": 179},
        ),
        id="dormant-one-second-less",
    ),
    pytest.param(
        Case("DORMANT_REACTIVATED", one("100.00"), {"originator.days_dormant": -1}),
        id="dormant-a-new-account",
    ),
    pytest.param(
        Case(
            "ROUND_AMOUNT",
            one("4000.00"),
            {"event.currency": "EUR", "event.amount_minor": 400_000},
        ),
        id="round-amount-below-the-minimum",
    ),
    pytest.param(
        Case(
            "ROUND_AMOUNT",
            one("5000.01"),
            {"event.currency": "EUR", "event.amount_minor": 500_001},
        ),
        id="round-amount-a-cent-off",
    ),
    pytest.param(
        Case(
            "PEP_TRANSACTION",
            after(kyc("A", T - DAY, pep=True), scored=pay("A", "B", T, "4999.99")),
            {"originator.pep": True, "event.currency": "EUR", "event.amount_minor": 499_999},
        ),
        id="pep-a-cent-below",
    ),
    pytest.param(
        Case(
            "PEP_TRANSACTION",
            after(kyc("A", T - DAY, pep=False), scored=pay("A", "B", T, "5000.00")),
            {"originator.pep": False, "event.currency": "EUR", "event.amount_minor": 500_000},
        ),
        id="pep-not-exposed",
    ),
    pytest.param(
        Case(
            "PEP_TRANSACTION",
            # The beneficiary is the exposed person: the rule is about who sends.
            after(kyc("B", T - DAY, pep=True), scored=pay("A", "B", T, "5000.00")),
            {"originator.pep": False, "event.currency": "EUR", "event.amount_minor": 500_000},
        ),
        id="pep-receives",
    ),
    pytest.param(
        Case(
            "SANCTIONED_ORIGINATOR",
            after(kyc("B", T - DAY, sanctionsHit=True), scored=pay("A", "B", T)),
            {"originator.sanctions_hit": False},
        ),
        id="sanctioned-originator-only-the-beneficiary-is",
    ),
    pytest.param(
        Case(
            "SANCTIONED_ORIGINATOR",
            after(kyc("A", T - DAY, sanctionsHit=False), scored=pay("A", "B", T)),
            {"originator.sanctions_hit": False},
        ),
        id="sanctioned-originator-screened-clear",
    ),
    pytest.param(
        Case(
            "SANCTIONED_BENEFICIARY",
            after(kyc("A", T - DAY, sanctionsHit=True), scored=pay("A", "B", T)),
            {"beneficiary.sanctions_hit": False},
        ),
        id="sanctioned-beneficiary-only-the-originator-is",
    ),
]


# -- the real path ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    event_id: uuid.UUID
    score: int | None
    alerted: int
    explanation: Mapping[str, Any]

    def line(self, code: str) -> Mapping[str, Any]:
        lines: list[Mapping[str, Any]] = self.explanation["rules"]
        (line,) = [rule for rule in lines if rule["code"] == code]
        return line


async def score_history(
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
    history: list[dict[str, Any]],
) -> Scored:
    """Activate the default ruleset, ingest the history, score its last event and read
    the assessment back as stored."""
    scorers = CachedScorers()
    await install_ruleset(uow_factory, scorers, tenant, DEFAULT_RULESET, "test", activate=True)
    caller = Caller(tenant, "core-banking", "test", f"corr-{uuid.uuid4().hex[:12]}")
    results = await ingest_events(uow_factory, caller, history, now=NOW)
    assert [result.outcome for result in results] == [Outcome.ACCEPTED] * len(history)
    event_id = results[-1].event_id
    assert event_id is not None

    result = await score_event(uow_factory, scorers, tenant, event_id)
    assert result.outcome is ScoreOutcome.ASSESSED

    async with owner_engine.connect() as connection:
        explanation = await connection.scalar(
            text("SELECT explanation FROM assessments WHERE tenant_id = :t AND event_id = :e"),
            {"t": tenant, "e": event_id},
        )
    assert explanation is not None
    return Scored(event_id, result.score, result.alerted, explanation)


def shown(value: Any) -> str:
    """A value as a reason text shows it."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(shown(item) for item in value)
    return str(value)


@pytest.mark.parametrize("case", FIRES)
async def test_the_typology_fires_with_its_figures_thresholds_and_reason(
    case: Case, uow_factory: UnitOfWorkFactory, owner_engine: AsyncEngine, tenant: uuid.UUID
) -> None:
    rule = RULES[case.code]

    scored = await score_history(uow_factory, owner_engine, tenant, case.history)

    line = scored.line(case.code)
    assert line["fired"] is True, line
    assert line["error"] is None
    assert line["points"] == rule["points"]
    assert line["concerns"] == rule["concerns"]
    assert line["typology"] == rule["typology"]
    assert line["observed"] == case.observed
    assert line["thresholds"] == rule.get("params", {})
    reason = line["reason"]
    for fragment in case.reason:
        assert fragment in reason, reason
    # Every figure and threshold the rule's reason names is there, as observed.
    for name, value in line["thresholds"].items():
        if f"{{params.{name}}}" in rule["reason"]:
            assert shown(value) in reason, (name, reason)
    for path, value in line["observed"].items():
        if f"{{{path}}}" in rule["reason"]:
            assert shown(value) in reason, (path, reason)
    assert scored.explanation["score"] == scored.score
    assert scored.score is not None
    assert scored.score >= rule["points"]


@pytest.mark.parametrize("case", NEAR_MISSES)
async def test_the_typology_stays_quiet_on_a_near_miss(
    case: Case, uow_factory: UnitOfWorkFactory, owner_engine: AsyncEngine, tenant: uuid.UUID
) -> None:
    scored = await score_history(uow_factory, owner_engine, tenant, case.history)

    line = scored.line(case.code)
    assert line["fired"] is False, line
    assert line["error"] is None
    assert (line["points"], line["reason"]) == (0, None)
    assert line["observed"] == case.observed
    assert line["thresholds"] == RULES[case.code].get("params", {})


# -- alerts and cases --------------------------------------------------------------------------


ALERTS = [
    pytest.param(fan_in(15), "B", "fan_in", 50, id="fan-in-names-the-beneficiary"),
    pytest.param(fan_out(10), "A", "fan_out", 50, id="fan-out-names-the-originator"),
    pytest.param(
        after(kyc("A", T - DAY, sanctionsHit=True), scored=pay("A", "B", T)),
        "A",
        "sanctions",
        100,
        id="sanctioned-originator-names-the-originator",
    ),
    pytest.param(
        after(kyc("B", T - DAY, sanctionsHit=True), scored=pay("A", "B", T)),
        "B",
        "sanctions",
        100,
        id="sanctioned-beneficiary-names-the-beneficiary",
    ),
    pytest.param(
        one("100.00", origin_country="MM"),
        "B",
        "high_risk_country",
        50,
        id="money-from-a-high-risk-country-names-the-beneficiary",
    ),
]


# What scoring leaves when it raises one alert, which opens a case.
ONE_ALERT_EFFECTS = Effects(
    assessments=1,
    alerts=1,
    cases=1,
    audit={"risk.assessed": 1, "alert.raised": 1, "case.opened": 1},
    outbox={"risk.assessed": 1, "case.opened": 1},
)


@pytest.mark.parametrize(("history", "account", "typology", "score"), ALERTS)
async def test_an_alert_and_a_case_are_opened_on_the_account_the_typology_concerns(
    history: list[dict[str, Any]],
    account: str,
    typology: str,
    score: int,
    uow_factory: UnitOfWorkFactory,
    owner_engine: AsyncEngine,
    tenant: uuid.UUID,
) -> None:
    scored = await score_history(uow_factory, owner_engine, tenant, history)

    assert (scored.score, scored.alerted) == (score, 1)
    assert scored.explanation["alert"] is True
    assert await effects(owner_engine, tenant) == ONE_ALERT_EFFECTS
    async with owner_engine.connect() as connection:
        subject_id = await connection.scalar(
            text(
                "SELECT subject_id FROM subjects WHERE tenant_id = :t"
                " AND kind = 'account' AND external_ref = :ref"
            ),
            {"t": tenant, "ref": account},
        )
        alert = (
            await connection.execute(
                text(
                    "SELECT subject_id, case_id, event_id, score, typologies FROM alerts"
                    " WHERE tenant_id = :t"
                ),
                {"t": tenant},
            )
        ).one()
        case = (
            await connection.execute(
                text("SELECT case_id, subject_id, status FROM cases WHERE tenant_id = :t"),
                {"t": tenant},
            )
        ).one()
    assert subject_id is not None
    assert alert.subject_id == subject_id
    assert alert.event_id == scored.event_id
    assert alert.score == score
    assert list(alert.typologies) == [typology]
    assert (case.case_id, case.subject_id) == (alert.case_id, subject_id)


async def test_split_payments_open_a_case_on_the_sender_and_one_on_the_receiver(
    uow_factory: UnitOfWorkFactory, owner_engine: AsyncEngine, tenant: uuid.UUID
) -> None:
    scored = await score_history(uow_factory, owner_engine, tenant, split(3))

    assert (scored.score, scored.alerted) == (100, 2)
    async with owner_engine.connect() as connection:
        named = (
            await connection.execute(
                text(
                    "SELECT s.external_ref, a.typologies FROM alerts a JOIN subjects s"
                    " ON s.tenant_id = a.tenant_id AND s.subject_id = a.subject_id"
                    " WHERE a.tenant_id = :t ORDER BY s.external_ref"
                ),
                {"t": tenant},
            )
        ).all()
        cases = await connection.scalar(
            text("SELECT count(DISTINCT subject_id) FROM cases WHERE tenant_id = :t"),
            {"t": tenant},
        )
    assert [(ref, list(typologies)) for ref, typologies in named] == [
        ("A", ["split_payments"]),
        ("B", ["split_payments"]),
    ]
    assert cases == 2
