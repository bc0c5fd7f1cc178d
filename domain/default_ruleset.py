"""The default ruleset: the common money-laundering typologies, one rule each.

Every threshold is a parameter of its rule, so an explanation shows the limit beside
the value observed, and a tenant tunes a copy of this document rather than code. Amounts
are in integer minor units of the rule's currency (1000000 is EUR 10,000.00); a rule
about amounts applies to transfers in that currency only, as a threshold in euros says
nothing about an amount in yen. Counts and sums include the transfer being scored.

What each rule looks for, as a compliance officer would put it:

LARGE_TRANSACTION (the sender)
    One transfer at or above the reporting threshold. Not suspicious in itself, but it
    is what the money has to pass through when it moves in one piece.
STRUCTURING (the sender)
    Smurfing: this transfer is just below the reporting threshold (at least 90% of it)
    and it is one of several such transfers by the same account within a week, as if
    the amounts were chosen to stay under the limit.
VELOCITY_COUNT (the sender)
    A burst of outgoing transfers: many within an hour, or within a day.
VELOCITY_SUM (the sender)
    Several outgoing transfers within a week that add up to a large total.
FAN_IN (the receiver)
    Many different accounts pay into one account within a week: a collection account,
    a mule gathering the proceeds of many victims or many placements.
FAN_OUT (the sender)
    One account pays many different accounts within a week: layering, or paying out a
    network of mules.
RAPID_PASS_THROUGH (the sender)
    Money comes in and, within a day, about as much goes out again: the account is a
    transit point rather than where the money is kept.
REPEATED_PAIR (the sender)
    The same account pays the same beneficiary again and again within a week.
SPLIT_PAYMENTS (the sender) and SPLIT_PAYMENTS_RECEIVED (the receiver)
    One payment cut into pieces: the same account pays the same beneficiary more than
    once within a day. Whoever splits does it to stay under a limit or out of sight, and
    whoever collects the pieces is the other half of the scheme, so both are named.
UNUSUAL_AMOUNT_OUT (the sender) and UNUSUAL_AMOUNT_IN (the receiver)
    A transfer out of line with the account's own profile: far below, or far above, the
    average of what it sent (or received) over 90 days. Accounts used for laundering
    move amounts that have nothing to do with their holder's usual payments: small test
    and split payments, or sums passed along a chain. The profile needs a few transfers
    before it says anything.
HIGH_RISK_COUNTRY (the sender) and HIGH_RISK_COUNTRY_INBOUND (the receiver)
    Money sent to, or received from, a jurisdiction on the FATF list of high-risk
    jurisdictions subject to a call for action. The list is the tenant's to keep
    current; the default holds the three jurisdictions on it when this was written.
DORMANT_REACTIVATED (the sender)
    An account with no activity for six months or more suddenly sends money.
ROUND_AMOUNT (the sender)
    A large transfer in whole thousands: a weak signal alone, telling with others.
PEP_TRANSACTION (the sender)
    A politically exposed person sends a significant amount.
SANCTIONED_ORIGINATOR (the sender) and SANCTIONED_BENEFICIARY (the receiver)
    A party to the transfer is a hit of the sanctions screening.

Points: a typology that is suspicious by itself scores 50, enough for an alert; an
indicator scores less and raises an alert only together with others; a sanctions hit
goes straight to critical. Each rule names the account it concerns, so a transfer can
raise an alert on the receiver (fan-in) without accusing the sender.
"""

from __future__ import annotations

from typing import Any

CURRENCY = "EUR"
REPORTING_THRESHOLD_MINOR = 1_000_000
NEAR_THRESHOLD_RATIO_PERCENT = 90
# FATF, high-risk jurisdictions subject to a call for action: North Korea, Iran, Myanmar.
HIGH_RISK_COUNTRIES = ("KP", "IR", "MM")


def _unusual_amount(code: str, party: str, direction: str, verb: str) -> dict[str, Any]:
    """An amount out of line with what ``party`` ``verb`` over 90 days, this one included:
    at most ``below_average_percent`` or at least ``above_average_percent`` of the
    average, compared as ``amount * count * 100`` against ``sum * percent``."""
    count, total = f"{party}.{direction}_count_90d", f"{party}.{direction}_sum_minor_90d"
    received = " received" if direction == "in" else ""
    scaled = f"event.amount_minor * {count} * 100"
    return {
        "code": code,
        "typology": "unusual_amount",
        "concerns": party,
        "condition": (
            f"event.currency == params.currency && {count} >= params.min_history"
            f" && ({scaled} <= {total} * params.below_average_percent"
            f" || {scaled} >= {total} * params.above_average_percent)"
        ),
        "points": 50,
        "params": {
            "currency": CURRENCY,
            "min_history": 2,
            "below_average_percent": 20,
            "above_average_percent": 500,
        },
        "reason": (
            f"A transfer of {{event.amount_minor}} minor units{received} against {{{total}}}"
            f" {verb} over {{{count}}} transfers in 90 days (this one included): below"
            " {params.below_average_percent}% or from {params.above_average_percent}%"
            " of the account's average."
        ),
    }


DEFAULT_RULESET: dict[str, Any] = {
    "name": "default",
    "alertThreshold": 50,
    "bands": {"medium": 25, "high": 50, "critical": 75},
    "reportingThresholdMinor": REPORTING_THRESHOLD_MINOR,
    "nearThresholdRatioPercent": NEAR_THRESHOLD_RATIO_PERCENT,
    "rules": [
        {
            "code": "LARGE_TRANSACTION",
            "typology": "large_transaction",
            "concerns": "originator",
            "condition": (
                "event.currency == params.currency && event.amount_minor >= params.threshold_minor"
            ),
            "points": 30,
            "params": {"currency": CURRENCY, "threshold_minor": REPORTING_THRESHOLD_MINOR},
            "reason": (
                "A transfer of {event.amount} {event.currency} ({event.amount_minor} minor"
                " units) reaches the large-transaction threshold of {params.threshold_minor}."
            ),
        },
        {
            "code": "STRUCTURING",
            "typology": "structuring",
            "concerns": "originator",
            "condition": (
                "event.currency == params.currency"
                " && event.amount_minor < params.reporting_threshold_minor"
                " && event.amount_minor * 100"
                " >= params.reporting_threshold_minor * params.near_threshold_ratio_percent"
                " && originator.near_threshold_count_7d >= params.min_count_7d"
            ),
            "points": 50,
            "params": {
                "currency": CURRENCY,
                "reporting_threshold_minor": REPORTING_THRESHOLD_MINOR,
                "near_threshold_ratio_percent": NEAR_THRESHOLD_RATIO_PERCENT,
                "min_count_7d": 3,
            },
            "reason": (
                "{originator.near_threshold_count_7d} transfers within 7 days (threshold"
                " {params.min_count_7d}) just below the reporting threshold of"
                " {params.reporting_threshold_minor}, at {params.near_threshold_ratio_percent}%"
                " of it or more; this one is {event.amount_minor} minor units."
            ),
        },
        {
            "code": "VELOCITY_COUNT",
            "typology": "velocity",
            "concerns": "originator",
            "condition": (
                "originator.out_count_1h >= params.min_count_1h"
                " || originator.out_count_24h >= params.min_count_24h"
            ),
            "points": 30,
            "params": {"min_count_1h": 5, "min_count_24h": 10},
            "reason": (
                "{originator.out_count_1h} outgoing transfers within an hour (threshold"
                " {params.min_count_1h}), {originator.out_count_24h} within a day (threshold"
                " {params.min_count_24h})."
            ),
        },
        {
            "code": "VELOCITY_SUM",
            "typology": "velocity",
            "concerns": "originator",
            "condition": (
                "event.currency == params.currency"
                " && originator.out_count_7d >= params.min_count_7d"
                " && originator.out_sum_minor_7d >= params.min_sum_minor_7d"
            ),
            "points": 30,
            "params": {"currency": CURRENCY, "min_count_7d": 3, "min_sum_minor_7d": 2_500_000},
            "reason": (
                "{originator.out_count_7d} outgoing transfers within 7 days (from"
                " {params.min_count_7d}) add up to {originator.out_sum_minor_7d} minor units"
                " (threshold {params.min_sum_minor_7d})."
            ),
        },
        {
            "code": "FAN_IN",
            "typology": "fan_in",
            "concerns": "beneficiary",
            "condition": "beneficiary.in_distinct_7d >= params.min_senders_7d",
            "points": 50,
            "params": {"min_senders_7d": 15},
            "reason": (
                "{beneficiary.in_distinct_7d} different accounts paid this account within"
                " 7 days (threshold {params.min_senders_7d}): {beneficiary.in_count_7d}"
                " transfers, {beneficiary.in_sum_minor_7d} minor units in all."
            ),
        },
        {
            "code": "FAN_OUT",
            "typology": "fan_out",
            "concerns": "originator",
            "condition": "originator.out_distinct_7d >= params.min_recipients_7d",
            "points": 50,
            "params": {"min_recipients_7d": 10},
            "reason": (
                "This account paid {originator.out_distinct_7d} different accounts within"
                " 7 days (threshold {params.min_recipients_7d}): {originator.out_count_7d}"
                " transfers, {originator.out_sum_minor_7d} minor units in all."
            ),
        },
        {
            "code": "RAPID_PASS_THROUGH",
            "typology": "pass_through",
            "concerns": "originator",
            "condition": (
                "event.currency == params.currency"
                " && originator.in_count_24h >= params.min_in_count_24h"
                " && originator.out_sum_minor_24h >= params.min_out_sum_minor_24h"
                " && originator.out_sum_minor_24h * 100"
                " >= originator.in_sum_minor_24h * params.min_out_of_in_percent"
                " && originator.out_sum_minor_24h * 100"
                " <= originator.in_sum_minor_24h * params.max_out_of_in_percent"
            ),
            "points": 50,
            "params": {
                "currency": CURRENCY,
                "min_in_count_24h": 1,
                "min_out_sum_minor_24h": 100_000,
                "min_out_of_in_percent": 80,
                "max_out_of_in_percent": 110,
            },
            "reason": (
                "Within 24 hours {originator.in_sum_minor_24h} minor units came in over"
                " {originator.in_count_24h} transfer(s) and {originator.out_sum_minor_24h} went"
                " out: between {params.min_out_of_in_percent}% and"
                " {params.max_out_of_in_percent}% of what came in, and at least"
                " {params.min_out_sum_minor_24h}."
            ),
        },
        {
            "code": "REPEATED_PAIR",
            "typology": "repeated_pair",
            "concerns": "originator",
            "condition": "originator.pair_count_7d >= params.min_transfers_7d",
            "points": 25,
            "params": {"min_transfers_7d": 5},
            "reason": (
                "{originator.pair_count_7d} transfers from this account to the same"
                " beneficiary within 7 days (threshold {params.min_transfers_7d})."
            ),
        },
        {
            "code": "SPLIT_PAYMENTS",
            "typology": "split_payments",
            "concerns": "originator",
            "condition": "originator.pair_count_24h >= params.min_transfers_24h",
            "points": 50,
            "params": {"min_transfers_24h": 2},
            "reason": (
                "{originator.pair_count_24h} transfers from this account to the same"
                " beneficiary within 24 hours (threshold {params.min_transfers_24h}):"
                " one payment split into pieces."
            ),
        },
        {
            "code": "SPLIT_PAYMENTS_RECEIVED",
            "typology": "split_payments",
            "concerns": "beneficiary",
            "condition": "originator.pair_count_24h >= params.min_transfers_24h",
            "points": 50,
            "params": {"min_transfers_24h": 2},
            "reason": (
                "This account received {originator.pair_count_24h} transfers from the same"
                " sender within 24 hours (threshold {params.min_transfers_24h}): it collects"
                " a payment split into pieces."
            ),
        },
        _unusual_amount("UNUSUAL_AMOUNT_OUT", "originator", "out", "sent"),
        _unusual_amount("UNUSUAL_AMOUNT_IN", "beneficiary", "in", "received"),
        {
            "code": "HIGH_RISK_COUNTRY",
            "typology": "high_risk_country",
            "concerns": "originator",
            "condition": (
                "event.beneficiary_country in params.countries"
                " || beneficiary.country in params.countries"
            ),
            "points": 50,
            "params": {"countries": list(HIGH_RISK_COUNTRIES)},
            "reason": (
                "Money sent to a high-risk jurisdiction: the receiving account is in"
                " {event.beneficiary_country}, its holder in {beneficiary.country}"
                " (listed: {params.countries})."
            ),
        },
        {
            "code": "HIGH_RISK_COUNTRY_INBOUND",
            "typology": "high_risk_country",
            "concerns": "beneficiary",
            "condition": (
                "event.originator_country in params.countries"
                " || originator.country in params.countries"
            ),
            "points": 50,
            "params": {"countries": list(HIGH_RISK_COUNTRIES)},
            "reason": (
                "Money received from a high-risk jurisdiction: the sending account is in"
                " {event.originator_country}, its holder in {originator.country}"
                " (listed: {params.countries})."
            ),
        },
        {
            "code": "DORMANT_REACTIVATED",
            "typology": "dormant_account",
            "concerns": "originator",
            "condition": "originator.days_dormant >= params.min_dormant_days",
            "points": 30,
            "params": {"min_dormant_days": 180},
            "reason": (
                "The account sends money after {originator.days_dormant} days without any"
                " activity (dormant from {params.min_dormant_days} days)."
            ),
        },
        {
            "code": "ROUND_AMOUNT",
            "typology": "round_amount",
            "concerns": "originator",
            "condition": (
                "event.currency == params.currency"
                " && event.amount_minor >= params.min_amount_minor"
                " && event.amount_minor % params.round_unit_minor == 0"
            ),
            "points": 10,
            "params": {
                "currency": CURRENCY,
                "min_amount_minor": 500_000,
                "round_unit_minor": 100_000,
            },
            "reason": (
                "A round amount of {event.amount} {event.currency} ({event.amount_minor}"
                " minor units, a multiple of {params.round_unit_minor}, from"
                " {params.min_amount_minor})."
            ),
        },
        {
            "code": "PEP_TRANSACTION",
            "typology": "pep",
            "concerns": "originator",
            "condition": (
                "originator.pep && event.currency == params.currency"
                " && event.amount_minor >= params.min_amount_minor"
            ),
            "points": 25,
            "params": {"currency": CURRENCY, "min_amount_minor": 500_000},
            "reason": (
                "A politically exposed person sends {event.amount} {event.currency}"
                " ({event.amount_minor} minor units, from {params.min_amount_minor})."
            ),
        },
        {
            "code": "SANCTIONED_ORIGINATOR",
            "typology": "sanctions",
            "concerns": "originator",
            "condition": "originator.sanctions_hit",
            "points": 100,
            "reason": "The sending account's holder is a sanctions screening hit.",
        },
        {
            "code": "SANCTIONED_BENEFICIARY",
            "typology": "sanctions",
            "concerns": "beneficiary",
            "condition": "beneficiary.sanctions_hit",
            "points": 100,
            "reason": "The receiving account's holder is a sanctions screening hit.",
        },
    ],
}
