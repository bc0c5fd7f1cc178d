"""The default ruleset: each typology fires on a crafted history, at its threshold, and
stays quiet one unit below it, with the values of its explanation right."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from adapters.cel_rules import CachedScorers, RulesScorecard
from domain.default_ruleset import DEFAULT_RULESET
from domain.rules import Band, Party, RuleOutcome, parse_ruleset
from domain.scoring import Features, StoredEvent, StoredRuleset, build_context

TENANT = uuid.UUID("018f0000-0000-7000-8000-00000000000a")
RULES = {rule["code"]: rule for rule in DEFAULT_RULESET["rules"]}

# An ordinary customer paying an ordinary payee: each counts the transfer being scored.
ORDINARY_SENDER = {
    "days_dormant": 2,
    "out_count_1h": 1,
    "out_count_24h": 1,
    "out_count_7d": 2,
    "out_count_30d": 6,
    "out_sum_minor_1h": 25_000,
    "out_sum_minor_24h": 25_000,
    "out_sum_minor_7d": 40_000,
    "out_sum_minor_30d": 180_000,
    "out_distinct_1h": 1,
    "out_distinct_24h": 1,
    "out_distinct_7d": 2,
    "out_distinct_30d": 4,
    "in_count_30d": 1,
    "in_sum_minor_30d": 300_000,
    "in_distinct_30d": 1,
    "pair_count_1h": 1,
    "pair_count_24h": 1,
    "pair_count_7d": 1,
    "pair_count_30d": 2,
    # Its profile: fifteen transfers in 90 days, EUR 300.00 on average.
    "out_count_90d": 15,
    "out_sum_minor_90d": 450_000,
}
ORDINARY_RECEIVER = {
    "days_dormant": 1,
    "in_count_1h": 1,
    "in_count_24h": 1,
    "in_count_7d": 2,
    "in_count_30d": 5,
    "in_sum_minor_1h": 25_000,
    "in_sum_minor_24h": 25_000,
    "in_sum_minor_7d": 60_000,
    "in_sum_minor_30d": 150_000,
    "in_distinct_1h": 1,
    "in_distinct_24h": 1,
    "in_distinct_7d": 2,
    "in_distinct_30d": 3,
    "pair_count_1h": 1,
    "pair_count_24h": 1,
    "pair_count_7d": 1,
    "pair_count_30d": 2,
    # Its profile: twelve transfers received in 90 days, EUR 300.00 on average.
    "in_count_90d": 12,
    "in_sum_minor_90d": 360_000,
}


def features(ordinary: Mapping[str, int], changes: Mapping[str, int] | None) -> Features:
    values = dict(Features.empty().values)
    unknown = set(changes or {}) - set(values)
    assert not unknown, f"not a feature: {unknown}"
    return Features(values | dict(ordinary) | dict(changes or {}))


def context(
    *,
    amount: str = "250.00",
    currency: str = "EUR",
    origin: str = "NL",
    target: str = "NL",
    sender: Mapping[str, int] | None = None,
    receiver: Mapping[str, int] | None = None,
    sender_attributes: Mapping[str, Any] | None = None,
    receiver_attributes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    event = StoredEvent(
        event_id=uuid.uuid4(),
        event_type="transaction",
        occurred_at=datetime(2026, 3, 2, 10, 15, tzinfo=UTC),
        subject_id=uuid.uuid4(),
        counterparty_id=uuid.uuid4(),
        amount=Decimal(amount),
        currency=currency,
        payload={
            "data": {
                "originator": {"country": origin},
                "beneficiary": {"country": target},
                "channel": "sepa",
            }
        },
        subject_attributes=dict(sender_attributes or {}),
        counterparty_attributes=dict(receiver_attributes or {}),
    )
    return build_context(
        event, features(ORDINARY_SENDER, sender), features(ORDINARY_RECEIVER, receiver)
    )


@pytest.fixture(scope="module")
def scorer() -> RulesScorecard:
    stored = StoredRuleset(1, DEFAULT_RULESET, b"default")
    return CachedScorers().scorer_for(TENANT, stored)


def outcome(scorer: RulesScorecard, code: str, ctx: Mapping[str, Any]) -> RuleOutcome:
    evaluation = scorer.assess(ctx)
    assert all(o.error is None for o in evaluation.outcomes), evaluation.outcomes
    (found,) = (o for o in evaluation.outcomes if o.code == code)
    return found


FIRES = [
    pytest.param(
        "LARGE_TRANSACTION",
        {"amount": "10000.00"},
        {"event.currency": "EUR", "event.amount_minor": 1_000_000},
        "A transfer of 10000.00 EUR (1000000 minor units) reaches the large-transaction"
        " threshold of 1000000.",
        id="large-at-threshold",
    ),
    pytest.param(
        "STRUCTURING",
        {"amount": "9000.00", "sender": {"near_threshold_count_7d": 3}},
        {
            "event.currency": "EUR",
            "event.amount_minor": 900_000,
            "originator.near_threshold_count_7d": 3,
        },
        "3 transfers within 7 days (threshold 3) just below the reporting threshold of"
        " 1000000, at 90% of it or more; this one is 900000 minor units.",
        id="structuring-bottom-of-band",
    ),
    pytest.param(
        "STRUCTURING",
        {"amount": "9999.99", "sender": {"near_threshold_count_7d": 4}},
        {
            "event.currency": "EUR",
            "event.amount_minor": 999_999,
            "originator.near_threshold_count_7d": 4,
        },
        "4 transfers within 7 days (threshold 3) just below the reporting threshold of"
        " 1000000, at 90% of it or more; this one is 999999 minor units.",
        id="structuring-one-cent-below-threshold",
    ),
    pytest.param(
        "VELOCITY_COUNT",
        {"sender": {"out_count_1h": 5, "out_count_24h": 5}},
        {"originator.out_count_1h": 5, "originator.out_count_24h": 5},
        "5 outgoing transfers within an hour (threshold 5), 5 within a day (threshold 10).",
        id="velocity-count-hour",
    ),
    pytest.param(
        "VELOCITY_COUNT",
        {"sender": {"out_count_1h": 1, "out_count_24h": 10}},
        {"originator.out_count_1h": 1, "originator.out_count_24h": 10},
        "1 outgoing transfers within an hour (threshold 5), 10 within a day (threshold 10).",
        id="velocity-count-day",
    ),
    pytest.param(
        "VELOCITY_SUM",
        {"sender": {"out_count_7d": 3, "out_sum_minor_7d": 2_500_000}},
        {
            "event.currency": "EUR",
            "originator.out_count_7d": 3,
            "originator.out_sum_minor_7d": 2_500_000,
        },
        "3 outgoing transfers within 7 days (from 3) add up to 2500000 minor units"
        " (threshold 2500000).",
        id="velocity-sum",
    ),
    pytest.param(
        "FAN_IN",
        {"receiver": {"in_distinct_7d": 15, "in_count_7d": 17, "in_sum_minor_7d": 300_000}},
        {"beneficiary.in_distinct_7d": 15},
        "15 different accounts paid this account within 7 days (threshold 15): 17 transfers,"
        " 300000 minor units in all.",
        id="fan-in",
    ),
    pytest.param(
        "FAN_OUT",
        {"sender": {"out_distinct_7d": 10, "out_count_7d": 10, "out_sum_minor_7d": 250_000}},
        {"originator.out_distinct_7d": 10},
        "This account paid 10 different accounts within 7 days (threshold 10): 10 transfers,"
        " 250000 minor units in all.",
        id="fan-out",
    ),
    pytest.param(
        "RAPID_PASS_THROUGH",
        {
            "amount": "4000.00",
            "sender": {
                "in_count_24h": 1,
                "in_sum_minor_24h": 500_000,
                "out_sum_minor_24h": 400_000,
            },
        },
        {
            "event.currency": "EUR",
            "originator.in_count_24h": 1,
            "originator.in_sum_minor_24h": 500_000,
            "originator.out_sum_minor_24h": 400_000,
        },
        "Within 24 hours 500000 minor units came in over 1 transfer(s) and 400000 went out:"
        " between 80% and 110% of what came in, and at least 100000.",
        id="pass-through-80-percent",
    ),
    pytest.param(
        "RAPID_PASS_THROUGH",
        {
            "amount": "5500.00",
            "sender": {
                "in_count_24h": 2,
                "in_sum_minor_24h": 500_000,
                "out_sum_minor_24h": 550_000,
            },
        },
        {
            "event.currency": "EUR",
            "originator.in_count_24h": 2,
            "originator.in_sum_minor_24h": 500_000,
            "originator.out_sum_minor_24h": 550_000,
        },
        "Within 24 hours 500000 minor units came in over 2 transfer(s) and 550000 went out:"
        " between 80% and 110% of what came in, and at least 100000.",
        id="pass-through-110-percent",
    ),
    pytest.param(
        "REPEATED_PAIR",
        {"sender": {"pair_count_7d": 5}},
        {"originator.pair_count_7d": 5},
        "5 transfers from this account to the same beneficiary within 7 days (threshold 5).",
        id="repeated-pair",
    ),
    pytest.param(
        "SPLIT_PAYMENTS",
        {"sender": {"pair_count_24h": 2}},
        {"originator.pair_count_24h": 2},
        "2 transfers from this account to the same beneficiary within 24 hours (threshold 2):"
        " one payment split into pieces.",
        id="split-payments",
    ),
    pytest.param(
        "SPLIT_PAYMENTS_RECEIVED",
        {"sender": {"pair_count_24h": 2}},
        {"originator.pair_count_24h": 2},
        "This account received 2 transfers from the same sender within 24 hours (threshold 2):"
        " it collects a payment split into pieces.",
        id="split-payments-received",
    ),
    pytest.param(
        "UNUSUAL_AMOUNT_OUT",
        {"amount": "60.00"},
        {
            "event.currency": "EUR",
            "event.amount_minor": 6_000,
            "originator.out_count_90d": 15,
            "originator.out_sum_minor_90d": 450_000,
        },
        "A transfer of 6000 minor units against 450000 sent over 15 transfers in 90 days"
        " (this one included): below 20% or from 500% of the account's average.",
        id="unusual-amount-out-a-fifth-of-the-average",
    ),
    pytest.param(
        "UNUSUAL_AMOUNT_OUT",
        {"amount": "1500.00"},
        {
            "event.currency": "EUR",
            "event.amount_minor": 150_000,
            "originator.out_count_90d": 15,
            "originator.out_sum_minor_90d": 450_000,
        },
        "A transfer of 150000 minor units against 450000 sent over 15 transfers in 90 days"
        " (this one included): below 20% or from 500% of the account's average.",
        id="unusual-amount-out-five-times-the-average",
    ),
    pytest.param(
        "UNUSUAL_AMOUNT_IN",
        {"amount": "60.00"},
        {
            "event.currency": "EUR",
            "event.amount_minor": 6_000,
            "beneficiary.in_count_90d": 12,
            "beneficiary.in_sum_minor_90d": 360_000,
        },
        "A transfer of 6000 minor units received against 360000 received over 12 transfers"
        " in 90 days (this one included): below 20% or from 500% of the account's average.",
        id="unusual-amount-in-a-fifth-of-the-average",
    ),
    pytest.param(
        "UNUSUAL_AMOUNT_IN",
        {"amount": "1500.00"},
        {
            "event.currency": "EUR",
            "event.amount_minor": 150_000,
            "beneficiary.in_count_90d": 12,
            "beneficiary.in_sum_minor_90d": 360_000,
        },
        "A transfer of 150000 minor units received against 360000 received over 12 transfers"
        " in 90 days (this one included): below 20% or from 500% of the account's average.",
        id="unusual-amount-in-five-times-the-average",
    ),
    pytest.param(
        "HIGH_RISK_COUNTRY",
        {"target": "IR"},
        {"event.beneficiary_country": "IR", "beneficiary.country": "IR"},
        "Money sent to a high-risk jurisdiction: the receiving account is in IR, its holder"
        " in IR (listed: KP, IR, MM).",
        id="high-risk-destination",
    ),
    pytest.param(
        "HIGH_RISK_COUNTRY",
        {"target": "DE", "receiver_attributes": {"country": "KP"}},
        {"event.beneficiary_country": "DE", "beneficiary.country": "KP"},
        "Money sent to a high-risk jurisdiction: the receiving account is in DE, its holder"
        " in KP (listed: KP, IR, MM).",
        id="high-risk-payee",
    ),
    pytest.param(
        "HIGH_RISK_COUNTRY_INBOUND",
        {"origin": "MM"},
        {"event.originator_country": "MM", "originator.country": "MM"},
        "Money received from a high-risk jurisdiction: the sending account is in MM, its"
        " holder in MM (listed: KP, IR, MM).",
        id="high-risk-origin",
    ),
    pytest.param(
        "DORMANT_REACTIVATED",
        {"sender": {"days_dormant": 180}},
        {"originator.days_dormant": 180},
        "The account sends money after 180 days without any activity (dormant from 180 days).",
        id="dormant",
    ),
    pytest.param(
        "ROUND_AMOUNT",
        {"amount": "5000.00"},
        {"event.currency": "EUR", "event.amount_minor": 500_000},
        "A round amount of 5000.00 EUR (500000 minor units, a multiple of 100000, from 500000).",
        id="round-amount",
    ),
    pytest.param(
        "PEP_TRANSACTION",
        {"amount": "5000.00", "sender_attributes": {"pep": True}},
        {"originator.pep": True, "event.currency": "EUR", "event.amount_minor": 500_000},
        "A politically exposed person sends 5000.00 EUR (500000 minor units, from 500000).",
        id="pep",
    ),
    pytest.param(
        "SANCTIONED_ORIGINATOR",
        {"sender_attributes": {"sanctionsHit": True}},
        {"originator.sanctions_hit": True},
        "The sending account's holder is a sanctions screening hit.",
        id="sanctioned-sender",
    ),
    pytest.param(
        "SANCTIONED_BENEFICIARY",
        {"receiver_attributes": {"sanctionsHit": True}},
        {"beneficiary.sanctions_hit": True},
        "The receiving account's holder is a sanctions screening hit.",
        id="sanctioned-payee",
    ),
]

QUIET = [
    pytest.param("LARGE_TRANSACTION", {"amount": "9999.99"}, id="large-one-cent-below"),
    pytest.param(
        "LARGE_TRANSACTION", {"amount": "10000.00", "currency": "USD"}, id="large-other-currency"
    ),
    pytest.param(
        "STRUCTURING",
        {"amount": "8999.99", "sender": {"near_threshold_count_7d": 3}},
        id="structuring-below-band",
    ),
    pytest.param(
        "STRUCTURING",
        {"amount": "9000.00", "sender": {"near_threshold_count_7d": 2}},
        id="structuring-too-few",
    ),
    pytest.param(
        "STRUCTURING",
        {"amount": "10000.00", "sender": {"near_threshold_count_7d": 3}},
        id="structuring-at-threshold-is-not-below",
    ),
    pytest.param(
        "VELOCITY_COUNT",
        {"sender": {"out_count_1h": 4, "out_count_24h": 9}},
        id="velocity-count",
    ),
    pytest.param(
        "VELOCITY_SUM",
        {"sender": {"out_count_7d": 3, "out_sum_minor_7d": 2_499_999}},
        id="velocity-sum-one-cent-below",
    ),
    pytest.param(
        "VELOCITY_SUM",
        {"sender": {"out_count_7d": 2, "out_sum_minor_7d": 2_500_000}},
        id="velocity-sum-too-few",
    ),
    pytest.param("FAN_IN", {"receiver": {"in_distinct_7d": 14}}, id="fan-in"),
    pytest.param("FAN_OUT", {"sender": {"out_distinct_7d": 9}}, id="fan-out"),
    pytest.param(
        "RAPID_PASS_THROUGH",
        {"sender": {"in_count_24h": 1, "in_sum_minor_24h": 500_000, "out_sum_minor_24h": 399_999}},
        id="pass-through-under-80-percent",
    ),
    pytest.param(
        "RAPID_PASS_THROUGH",
        {"sender": {"in_count_24h": 1, "in_sum_minor_24h": 500_000, "out_sum_minor_24h": 550_001}},
        id="pass-through-over-110-percent",
    ),
    pytest.param(
        "RAPID_PASS_THROUGH",
        {"sender": {"in_count_24h": 1, "in_sum_minor_24h": 100_000, "out_sum_minor_24h": 99_999}},
        id="pass-through-below-minimum",
    ),
    pytest.param(
        "RAPID_PASS_THROUGH",
        {"sender": {"in_count_24h": 0, "in_sum_minor_24h": 0, "out_sum_minor_24h": 400_000}},
        id="pass-through-nothing-came-in",
    ),
    pytest.param("REPEATED_PAIR", {"sender": {"pair_count_7d": 4}}, id="repeated-pair"),
    pytest.param("SPLIT_PAYMENTS", {"sender": {"pair_count_24h": 1}}, id="split-payments"),
    pytest.param(
        "SPLIT_PAYMENTS_RECEIVED", {"sender": {"pair_count_24h": 1}}, id="split-payments-received"
    ),
    pytest.param("UNUSUAL_AMOUNT_OUT", {"amount": "60.01"}, id="unusual-amount-out-a-cent-above"),
    pytest.param("UNUSUAL_AMOUNT_OUT", {"amount": "1499.99"}, id="unusual-amount-out-a-cent-below"),
    pytest.param(
        "UNUSUAL_AMOUNT_OUT",
        {"amount": "1.00", "sender": {"out_count_90d": 1, "out_sum_minor_90d": 100}},
        id="unusual-amount-out-no-profile-yet",
    ),
    pytest.param(
        "UNUSUAL_AMOUNT_OUT",
        {"amount": "60.00", "currency": "USD"},
        id="unusual-amount-out-other-currency",
    ),
    pytest.param(
        "UNUSUAL_AMOUNT_IN",
        {"amount": "60.01"},
        id="unusual-amount-in-a-cent-above",
    ),
    pytest.param(
        "UNUSUAL_AMOUNT_IN",
        {"amount": "1499.99"},
        id="unusual-amount-in-a-cent-below",
    ),
    pytest.param(
        "UNUSUAL_AMOUNT_IN",
        {"amount": "1.00", "receiver": {"in_count_90d": 1, "in_sum_minor_90d": 100}},
        id="unusual-amount-in-no-profile-yet",
    ),
    pytest.param(
        "HIGH_RISK_COUNTRY",
        {"target": "AE", "receiver_attributes": {"country": "AE"}},
        id="high-risk-unlisted",
    ),
    pytest.param("HIGH_RISK_COUNTRY_INBOUND", {"origin": "KR"}, id="high-risk-inbound-unlisted"),
    pytest.param("DORMANT_REACTIVATED", {"sender": {"days_dormant": 179}}, id="dormant-179"),
    pytest.param(
        "DORMANT_REACTIVATED", {"sender": {"days_dormant": -1}}, id="dormant-first-activity"
    ),
    pytest.param("ROUND_AMOUNT", {"amount": "5000.01"}, id="round-not-a-multiple"),
    pytest.param("ROUND_AMOUNT", {"amount": "4000.00"}, id="round-below-minimum"),
    pytest.param(
        "PEP_TRANSACTION",
        {"amount": "4999.99", "sender_attributes": {"pep": True}},
        id="pep-one-cent-below",
    ),
    pytest.param(
        "PEP_TRANSACTION",
        {"amount": "5000.00", "sender_attributes": {"pep": False}},
        id="pep-not-a-pep",
    ),
    pytest.param(
        "SANCTIONED_ORIGINATOR",
        {"sender_attributes": {"sanctionsHit": False}},
        id="sanctioned-sender",
    ),
    pytest.param(
        "SANCTIONED_BENEFICIARY",
        {"receiver_attributes": {"sanctionsHit": False}},
        id="sanctioned-payee",
    ),
]


@pytest.mark.parametrize(("code", "crafted", "observed", "reason"), FIRES)
def test_a_typology_fires_on_its_crafted_history(
    scorer: RulesScorecard,
    code: str,
    crafted: dict[str, Any],
    observed: dict[str, Any],
    reason: str,
) -> None:
    rule = RULES[code]

    found = outcome(scorer, code, context(**crafted))

    assert found.fired
    assert found.points == rule["points"]
    assert found.observed == observed
    assert found.thresholds == rule.get("params", {})
    assert found.reason == reason
    assert found.concerns is Party(rule["concerns"])


@pytest.mark.parametrize(("code", "crafted"), QUIET)
def test_a_near_miss_stays_quiet(
    scorer: RulesScorecard, code: str, crafted: dict[str, Any]
) -> None:
    found = outcome(scorer, code, context(**crafted))

    assert not found.fired
    assert (found.points, found.reason, found.error) == (0, None, None)


def test_every_rule_has_a_crafted_history_and_a_near_miss() -> None:
    fired = {param.values[0] for param in FIRES}
    quiet = {param.values[0] for param in QUIET}

    assert fired == quiet == set(RULES)


def test_an_ordinary_transfer_fires_nothing(scorer: RulesScorecard) -> None:
    evaluation = scorer.assess(context())

    assert [o.code for o in evaluation.outcomes if o.fired or o.error] == []
    assert (evaluation.score, evaluation.band, evaluation.alert) == (0, Band.LOW, False)


def test_fan_in_raises_an_alert_on_the_receiver_only(scorer: RulesScorecard) -> None:
    crafted = context(receiver={"in_distinct_7d": 16, "in_count_7d": 16})

    evaluation = scorer.assess(crafted)

    assert evaluation.alert
    assert evaluation.concerned() == [Party.BENEFICIARY]


def test_indicators_alone_do_not_alert_but_together_they_do(scorer: RulesScorecard) -> None:
    # Dormant for 400 days: nothing in its 90-day profile but the transfer itself.
    woken = {"days_dormant": 400, "out_count_90d": 1, "out_sum_minor_90d": 1_000_000}
    alone = scorer.assess(context(amount="10000.00", currency="USD", sender=woken))
    together = scorer.assess(context(amount="10000.00", sender=woken, receiver={"in_count_90d": 1}))

    assert [o.code for o in alone.outcomes if o.fired] == ["DORMANT_REACTIVATED"]
    assert not alone.alert
    assert [o.code for o in together.outcomes if o.fired] == [
        "LARGE_TRANSACTION",
        "DORMANT_REACTIVATED",
        "ROUND_AMOUNT",
    ]
    assert (together.score, together.band, together.alert) == (70, Band.HIGH, True)


def test_split_payments_raise_an_alert_on_both_accounts(scorer: RulesScorecard) -> None:
    evaluation = scorer.assess(context(sender={"pair_count_24h": 3}))

    assert [o.code for o in evaluation.outcomes if o.fired] == [
        "SPLIT_PAYMENTS",
        "SPLIT_PAYMENTS_RECEIVED",
    ]
    assert evaluation.concerned() == [Party.ORIGINATOR, Party.BENEFICIARY]


def test_an_unusual_amount_names_only_the_account_it_is_unusual_for(
    scorer: RulesScorecard,
) -> None:
    # EUR 50.00 is a sixth of what the sender usually sends, but what the receiver gets.
    evaluation = scorer.assess(
        context(amount="50.00", receiver={"in_count_90d": 4, "in_sum_minor_90d": 20_000})
    )

    assert [o.code for o in evaluation.outcomes if o.fired] == ["UNUSUAL_AMOUNT_OUT"]
    assert evaluation.concerned() == [Party.ORIGINATOR]


def test_a_sanctions_hit_is_critical(scorer: RulesScorecard) -> None:
    evaluation = scorer.assess(context(receiver_attributes={"sanctionsHit": True}))

    assert (evaluation.score, evaluation.band, evaluation.alert) == (100, Band.CRITICAL, True)
    assert evaluation.concerned() == [Party.BENEFICIARY]


def test_the_document_is_plain_json_without_floats() -> None:
    def walk(value: Any) -> None:
        assert not isinstance(value, float)
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(DEFAULT_RULESET)
    assert json.loads(json.dumps(DEFAULT_RULESET)) == DEFAULT_RULESET


def test_every_threshold_is_a_parameter() -> None:
    # The only number a condition may spell out is 100, which turns a percentage into
    # integer arithmetic, or 0 for "a multiple of"; every limit is a parameter, so the
    # explanation shows it and a tenant can tune it.
    for rule in DEFAULT_RULESET["rules"]:
        literals = set(re.findall(r"\b\d+\b", rule["condition"]))
        assert literals <= {"100", "0"}, rule["code"]


def test_structuring_uses_the_ruleset_reporting_threshold() -> None:
    ruleset = parse_ruleset(DEFAULT_RULESET)
    params = RULES["STRUCTURING"]["params"]

    assert params["reporting_threshold_minor"] == ruleset.reporting_threshold_minor
    assert params["near_threshold_ratio_percent"] == ruleset.near_threshold_ratio_percent
    assert RULES["LARGE_TRANSACTION"]["params"]["threshold_minor"] == (
        ruleset.reporting_threshold_minor
    )
