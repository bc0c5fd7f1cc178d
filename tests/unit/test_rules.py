"""Rulesets: what validation refuses, and how a compiled ruleset scores and explains."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest

from adapters.cel_rules import CelCompiler
from domain.default_ruleset import DEFAULT_RULESET
from domain.rules import (
    Band,
    CompiledRuleset,
    Evaluation,
    InvalidRuleset,
    Party,
    RuleOutcome,
    compile_ruleset,
    parse_ruleset,
)
from domain.scoring import (
    HISTORY_FIELDS,
    FeatureNeeds,
    Features,
    StoredEvent,
    build_context,
    sample_contexts,
)


def rule(code: str = "LARGE", **changes: Any) -> dict[str, Any]:
    return {
        "code": code,
        "typology": "large_transaction",
        "concerns": "originator",
        "condition": "event.amount_minor >= params.threshold_minor",
        "points": 30,
        "params": {"threshold_minor": 1_000_000},
        "reason": "{event.amount_minor} reaches {params.threshold_minor}",
    } | changes


def document(*rules: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {
        "name": "test",
        "alertThreshold": 50,
        "bands": {"medium": 25, "high": 50, "critical": 75},
        "rules": list(rules) or [rule()],
    } | changes


def compiled(doc: dict[str, Any]) -> CompiledRuleset:
    return compile_ruleset(parse_ruleset(doc), CelCompiler(), sample_contexts())


def context(amount: str = "125.00", **originator: int) -> dict[str, Any]:
    event = StoredEvent(
        event_id=uuid.uuid4(),
        event_type="transaction",
        occurred_at=datetime(2026, 3, 2, 10, 15, tzinfo=UTC),
        subject_id=uuid.uuid4(),
        counterparty_id=uuid.uuid4(),
        amount=Decimal(amount),
        currency="EUR",
        payload={"data": {"originator": {"country": "NL"}, "beneficiary": {"country": "BE"}}},
    )
    sender = Features(dict(Features.empty().values) | originator)
    return build_context(event, sender, Features.empty())


# -- the shape of a document ------------------------------------------------------------


def _with_unknown_top_level_field(doc: dict[str, Any]) -> None:
    doc["weights"] = {}


def _with_duplicate_code(doc: dict[str, Any]) -> None:
    doc["rules"].append(rule())


def _with_bands_out_of_order(doc: dict[str, Any]) -> None:
    doc["bands"] = {"medium": 50, "high": 25, "critical": 75}


def _with_float_param(doc: dict[str, Any]) -> None:
    doc["rules"][0]["params"]["threshold_minor"] = 10000.0


def _with_float_in_a_list_param(doc: dict[str, Any]) -> None:
    doc["rules"][0]["params"]["levels"] = [1, 2.5]


def _with_unknown_placeholder(doc: dict[str, Any]) -> None:
    doc["rules"][0]["reason"] = "seen {event.amount_minor}, limit {params.limit}"


def _with_unknown_party(doc: dict[str, Any]) -> None:
    doc["rules"][0]["concerns"] = "bank"


def _with_points_above_100(doc: dict[str, Any]) -> None:
    doc["rules"][0]["points"] = 101


def _with_no_rules(doc: dict[str, Any]) -> None:
    doc["rules"] = []


@pytest.mark.parametrize(
    ("spoil", "path", "message"),
    [
        (_with_unknown_top_level_field, "weights", "unknown field"),
        (_with_duplicate_code, "rules[1].code", "LARGE appears twice"),
        (_with_bands_out_of_order, "bands", "medium < high < critical"),
        (_with_float_param, "rules[0].params.threshold_minor", "parameters are integers"),
        (_with_float_in_a_list_param, "rules[0].params.levels", "parameters are integers"),
        (_with_unknown_placeholder, "rules[0].reason", "unknown placeholder {params.limit}"),
        (_with_unknown_party, "rules[0].concerns", "originator or beneficiary"),
        (_with_points_above_100, "rules[0].points", "an integer from 0 to 100"),
        (_with_no_rules, "rules", "a list of 1 to 100 rules"),
    ],
)
def test_a_malformed_document_is_refused(spoil: Any, path: str, message: str) -> None:
    doc = document()
    spoil(doc)

    with pytest.raises(InvalidRuleset) as refused:
        parse_ruleset(doc)

    assert refused.value.path == path
    assert refused.value.message.startswith(message)


@pytest.mark.parametrize(
    ("condition", "unknown", "position"),
    [
        ("event.amount_minor > 0 && originator.out_count_2h > 1", "originator.out_count_2h", 27),
        ("event.type == 'transaction' && event.typ == 'x'", "event.typ", 32),
        ("event.channel != 'params.nope' && params.nope > 0", "params.nope", 35),
    ],
)
def test_an_unknown_field_is_refused_with_its_position(
    condition: str, unknown: str, position: int
) -> None:
    with pytest.raises(InvalidRuleset) as refused:
        parse_ruleset(document(rule(condition=condition)))

    assert refused.value.path == "rules[0].condition"
    assert refused.value.message == f"unknown field {unknown}"
    assert refused.value.position == position
    assert condition[position - 1 :].startswith(unknown)


# -- compiling and the dry run ----------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "position", "message"),
    [
        ("event.amount_minor >= ", 23, "Syntax error: mismatched input '<EOF>'"),
        ("event.amount_minor > 1 )", 24, "Syntax error: extraneous input ')'"),
        # On the second line: the position counts from the start of the condition.
        ("event.amount_minor > 1 &&\n  event.hour > (", 43, "Syntax error: mismatched input"),
    ],
)
def test_a_syntax_error_is_refused_with_its_column(
    condition: str, position: int, message: str
) -> None:
    with pytest.raises(InvalidRuleset) as refused:
        compiled(document(rule(condition=condition)))

    assert refused.value.path == "rules[0].condition"
    assert refused.value.position == position
    assert refused.value.message.startswith(message)
    assert f"at column {position}" in str(refused.value)


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (
            "1 / (originator.out_count_24h - originator.out_count_24h) > 0",
            "fails at run time: division by zero",
        ),
        ("event.currency > 1", "fails at run time: No such overload"),
        (
            "event.amount_minor + params.threshold_minor",
            "fails at run time: the condition gave int",
        ),
        ("threshold > 1", "fails at run time: Undefined variable or function: 'threshold'"),
        ("originator['out_count_2h'] > 1", "fails at run time: no field 'out_count_2h'"),
    ],
)
def test_a_rule_that_fails_at_run_time_is_refused_at_validation(
    condition: str, message: str
) -> None:
    doc = document(rule("FIRST", condition="true"), rule(condition=condition))

    with pytest.raises(InvalidRuleset) as refused:
        compiled(doc)

    assert refused.value.path == "rules[1].condition"
    assert refused.value.message.startswith(message)


@pytest.mark.parametrize(
    ("condition", "position"),
    [
        ("event.amount_minor >= 9999.99", 23),
        ("event.amount_minor >= 1e6", 23),
        ("double(event.amount_minor) >= 10000", 1),
    ],
)
def test_a_binary_float_in_a_condition_is_refused(condition: str, position: int) -> None:
    with pytest.raises(InvalidRuleset) as refused:
        compiled(document(rule(condition=condition)))

    assert refused.value.position == position
    assert "minor units" in refused.value.message


def test_a_decimal_inside_a_string_is_not_a_float() -> None:
    ruleset = compiled(document(rule(condition="event.amount == '10000.00'")))

    assert ruleset.evaluate(context("10000.00")).outcomes[0].fired


# -- evaluating --------------------------------------------------------------------------


def test_a_rule_failing_on_one_event_is_recorded_and_the_others_still_score() -> None:
    # Non-zero on both sample contexts (-1 and 7), so the ruleset validates; zero for an
    # account whose previous activity was earlier the same day.
    fragile = rule(
        "PER_DAY",
        condition="event.amount_minor / originator.days_dormant > params.threshold_minor",
        reason="{event.amount_minor} per day",
    )
    ruleset = compiled(document(fragile, rule(params={"threshold_minor": 1})))

    evaluation = ruleset.evaluate(context("125.00", days_dormant=0))

    failed, scored = evaluation.outcomes
    assert (failed.code, failed.fired, failed.points, failed.reason) == ("PER_DAY", False, 0, None)
    assert failed.error == "division by zero in CEL expression"
    assert failed.observed == {"event.amount_minor": 12_500, "originator.days_dormant": 0}
    assert failed.thresholds == {"threshold_minor": 1_000_000}
    assert (scored.fired, scored.points, scored.error) == (True, 30, None)
    assert evaluation.score == 30


def test_the_score_is_capped_at_100() -> None:
    rules = [rule(code, condition="true", points=40) for code in ("ONE", "TWO", "THREE")]

    evaluation = compiled(document(*rules)).evaluate(context())

    assert [o.points for o in evaluation.outcomes] == [40, 40, 40]
    assert (evaluation.score, evaluation.band, evaluation.alert) == (100, Band.CRITICAL, True)


@pytest.mark.parametrize(
    ("points", "band", "alert"),
    [
        (0, Band.LOW, False),
        (24, Band.LOW, False),
        (25, Band.MEDIUM, False),
        (49, Band.MEDIUM, False),
        (50, Band.HIGH, True),
        (74, Band.HIGH, True),
        (75, Band.CRITICAL, True),
        (100, Band.CRITICAL, True),
    ],
)
def test_band_and_alert_boundaries(points: int, band: Band, alert: bool) -> None:
    evaluation = compiled(document(rule(condition="true", points=points))).evaluate(context())

    assert (evaluation.score, evaluation.band, evaluation.alert) == (points, band, alert)


@pytest.mark.parametrize(
    ("amount", "threshold_minor", "fired"),
    [
        ("9999.99", 1_000_000, False),
        ("10000.00", 1_000_000, True),
        # 2**53 + 1 minor units: a binary float cannot tell these apart.
        ("90071992547409.92", 9_007_199_254_740_993, False),
        ("90071992547409.93", 9_007_199_254_740_993, True),
    ],
)
def test_money_is_compared_exactly_in_minor_units(
    amount: str, threshold_minor: int, fired: bool
) -> None:
    doc = document(rule(params={"threshold_minor": threshold_minor}))
    ctx = context(amount)

    (outcome,) = compiled(doc).evaluate(ctx).outcomes

    assert outcome.fired is fired
    minor = int(Decimal(amount) * 100)
    assert outcome.observed == {"event.amount_minor": minor}
    assert type(ctx["event"]["amount_minor"]) is int
    assert outcome.reason == (f"{minor} reaches {threshold_minor}" if fired else None)


def test_the_document_is_not_changed_by_parsing() -> None:
    doc = document()
    before = copy.deepcopy(doc)

    compiled(doc)

    assert doc == before


def _outcome(concerns: Party, points: int) -> RuleOutcome:
    return RuleOutcome("R", "t", concerns, points > 0, points, {}, {}, None)


@pytest.mark.parametrize(
    ("originator", "beneficiary", "named"),
    [
        (10, 50, [Party.BENEFICIARY]),
        (50, 50, [Party.ORIGINATOR, Party.BENEFICIARY]),
        (30, 25, [Party.ORIGINATOR]),
        (0, 0, []),
    ],
)
def test_an_alert_names_the_accounts_whose_own_rules_reach_the_threshold(
    originator: int, beneficiary: int, named: list[Party]
) -> None:
    outcomes = (_outcome(Party.ORIGINATOR, originator), _outcome(Party.BENEFICIARY, beneficiary))
    score = originator + beneficiary
    evaluation = Evaluation(score, Band.LOW, outcomes, score >= 50, alert_threshold=50)

    assert evaluation.concerned() == named


# -- what a ruleset reads ----------------------------------------------------------------


def test_a_ruleset_reads_what_its_conditions_explanations_and_reasons_name() -> None:
    version = compiled(
        document(
            rule(
                "BURST",
                condition="originator.out_count_1h >= params.n",
                params={"n": 3},
                reason="{originator.out_count_1h} transfers, {beneficiary.in_count_7d} received",
            ),
            rule("WIDE", condition="beneficiary.in_distinct_7d > 9 && event.cross_border"),
        )
    )
    assert dict(version.reads) == {
        "originator": frozenset({"out_count_1h"}),
        "beneficiary": frozenset({"in_count_7d", "in_distinct_7d"}),
        "event": frozenset({"cross_border", "amount_minor"}),
    }
    needs = FeatureNeeds.of(version.reads)
    assert needs.originator == {"out_count_1h"}
    assert needs.beneficiary == {"in_count_7d", "in_distinct_7d"}


@pytest.mark.parametrize(
    "condition",
    [
        "size(originator) > 3",
        "originator['out_count_1h'] > 3",
    ],
)
def test_a_rule_that_reads_a_party_as_a_whole_needs_all_its_features(condition: str) -> None:
    version = compiled(document(rule("WHOLE", condition=condition, reason="whole")))
    assert version.reads["originator"] is None
    needs = FeatureNeeds.of(version.reads)
    assert needs.originator == HISTORY_FIELDS
    assert needs.beneficiary == frozenset()


def test_a_context_of_only_the_needed_features_scores_as_the_whole_one() -> None:
    # Every rule of the default ruleset sees the same figures either way.
    version = compiled(DEFAULT_RULESET)
    needs = FeatureNeeds.of(version.reads)
    assert needs.originator < HISTORY_FIELDS
    full = context("9500.00", out_count_1h=6, near_threshold_count_7d=3, out_count_24h=11)
    trimmed = {
        **full,
        "originator": {
            k: v
            for k, v in full["originator"].items()
            if k not in HISTORY_FIELDS or k in needs.originator
        },
        "beneficiary": {
            k: v
            for k, v in full["beneficiary"].items()
            if k not in HISTORY_FIELDS or k in needs.beneficiary
        },
    }
    assert version.evaluate(trimmed) == version.evaluate(full)
    assert version.evaluate(full).score > 0


def test_an_explanation_reads_the_same_from_any_mapping() -> None:
    # Plain dicts take a quicker path; any other mapping must show the same values.
    version = compiled(DEFAULT_RULESET)
    plain = context("9500.00", out_count_1h=6, near_threshold_count_7d=3)
    wrapped = {root: MappingProxyType(values) for root, values in plain.items()}
    assert version.evaluate(wrapped) == version.evaluate(plain)
    observed = {
        path: value
        for outcome in version.evaluate(plain).outcomes
        for path, value in outcome.observed.items()
    }
    assert observed["originator.out_count_1h"] == 6
    assert observed["event.amount_minor"] == 950_000
