"""Rulesets: versioned, immutable documents of explainable rules.

A rule is a condition in the Common Expression Language over the evaluation context
(:data:`CONTEXT_FIELDS`), the points it adds when it fires, a reason code and a reason
text whose ``{placeholders}`` name context fields or the rule's parameters. The score
is the sum of the points of the rules that fired, capped at 100; bands and the alert
threshold come from the ruleset.

Conditions are compiled by a :class:`ConditionCompiler` (an adapter); the domain only
knows that a compiled condition answers true or false for a context, or fails.
Money in conditions is compared exactly, in integer minor units (``amount_minor``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

MAX_RULES = 100
MAX_CONDITION_LENGTH = 2000
MAX_REASON_LENGTH = 500
MAX_SCORE = 100

_CODE = re.compile(r"[A-Z][A-Z0-9_]{1,63}")
_PLACEHOLDER = re.compile(r"\{([a-z_]+(?:\.[a-z_0-9]+)*)\}")
# A dotted path into the context, outside string literals: `originator.out_count_24h`.
_PATH = re.compile(r"\b(event|originator|beneficiary|params)\.([A-Za-z_][A-Za-z0-9_]*)")
_STRINGS = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")

WINDOWS = ("1h", "24h", "7d", "30d", "90d")


def _party_fields() -> frozenset[str]:
    names = {"country", "risk_rating", "pep", "sanctions_hit", "days_dormant"}
    for window in WINDOWS:
        for direction in ("out", "in"):
            names |= {f"{direction}_count_{window}", f"{direction}_sum_minor_{window}"}
            names.add(f"{direction}_distinct_{window}")
        names |= {f"pair_count_{window}", f"near_threshold_count_{window}"}
    return frozenset(names)


CONTEXT_FIELDS: Mapping[str, frozenset[str]] = {
    "event": frozenset(
        {
            "type",
            "amount",
            "amount_minor",
            "currency",
            "channel",
            "originator_country",
            "beneficiary_country",
            "cross_border",
            "hour",
        }
    ),
    "originator": _party_fields(),
    "beneficiary": _party_fields(),
}


class Band(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Band).index(self)


class Party(StrEnum):
    ORIGINATOR = "originator"
    BENEFICIARY = "beneficiary"


class InvalidRuleset(Exception):
    """A ruleset that cannot be activated; ``path`` points into the document and
    ``position`` (1-based column) into a condition when the fault is there."""

    code = "INVALID_RULESET"

    def __init__(self, path: str, message: str, position: int | None = None) -> None:
        where = f" at column {position}" if position else ""
        super().__init__(f"{path}: {message}{where}")
        self.path = path
        self.message = message
        self.position = position


class RuleFailed(Exception):
    """A condition that could not be evaluated for one context (a type error, a
    division by zero): recorded in that explanation, never fatal to the scoring."""


class CompiledCondition(Protocol):
    @property
    def reads(self) -> Mapping[str, frozenset[str] | None]:
        """For each context root the condition may read, the fields it selects, or None
        when it may read any field of that root."""
        ...

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        """True or False, or raise :class:`RuleFailed`."""
        ...


class ConditionCompiler(Protocol):
    def compile(self, source: str) -> CompiledCondition:
        """Compile once; raise :class:`InvalidRuleset` (path "condition") on a syntax error."""
        ...


@dataclass(frozen=True, slots=True)
class Rule:
    code: str
    typology: str
    concerns: Party
    condition: str
    points: int
    reason: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def referenced_fields(self) -> list[str]:
        """The context fields the condition reads, in order of first use."""
        seen: dict[str, None] = {}
        for variable, name in _PATH.findall(_STRINGS.sub("''", self.condition)):
            seen[f"{variable}.{name}"] = None
        return list(seen)


@dataclass(frozen=True, slots=True)
class Ruleset:
    name: str
    alert_threshold: int
    bands: Mapping[Band, int]
    rules: tuple[Rule, ...]
    # Features that depend on the ruleset: the reporting threshold that structuring
    # stays just below, and how far below still counts as "just".
    reporting_threshold_minor: int = 1_000_000
    near_threshold_ratio_percent: int = 90

    def band_for(self, score: int) -> Band:
        band = Band.LOW
        for candidate in (Band.MEDIUM, Band.HIGH, Band.CRITICAL):
            if score >= self.bands[candidate]:
                band = candidate
        return band


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """One line of an explanation: what the rule saw, and what it concluded."""

    code: str
    typology: str
    concerns: Party
    fired: bool
    points: int
    observed: Mapping[str, Any]
    thresholds: Mapping[str, Any]
    reason: str | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Evaluation:
    score: int
    band: Band
    outcomes: tuple[RuleOutcome, ...]
    alert: bool
    alert_threshold: int = MAX_SCORE

    def concerned(self) -> list[Party]:
        """The accounts an alert names: each whose own rules reach the alert threshold,
        so that a weak signal on one side does not put that account under review; when
        only the sum of both sides reaches it, the side with the most points."""
        if not self.alert:
            return []
        points: dict[Party, int] = {}
        for outcome in self.outcomes:
            if outcome.fired:
                points[outcome.concerns] = points.get(outcome.concerns, 0) + outcome.points
        named = [party for party, total in points.items() if total >= self.alert_threshold]
        if not named and points:
            named = [max(points, key=lambda party: points[party])]
        return named


# -- reading a ruleset document ---------------------------------------------------------


def parse_ruleset(document: Mapping[str, Any]) -> Ruleset:
    """Check a ruleset document's shape; conditions are checked by :func:`compile_ruleset`."""
    _known(
        document,
        "",
        {
            "name",
            "alertThreshold",
            "bands",
            "rules",
            "reportingThresholdMinor",
            "nearThresholdRatioPercent",
        },
    )
    name = document.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        raise InvalidRuleset("name", "a name of 1 to 100 characters is required")
    threshold = _int(document, "alertThreshold", 1, MAX_SCORE)
    bands = _bands(document.get("bands"))
    rules_raw = document.get("rules")
    if not isinstance(rules_raw, list) or not 1 <= len(rules_raw) <= MAX_RULES:
        raise InvalidRuleset("rules", f"a list of 1 to {MAX_RULES} rules is required")
    rules = tuple(_rule(raw, f"rules[{i}]") for i, raw in enumerate(rules_raw))
    codes = [rule.code for rule in rules]
    for index, code in enumerate(codes):
        if code in codes[:index]:
            raise InvalidRuleset(f"rules[{index}].code", f"{code} appears twice")
    return Ruleset(
        name=name,
        alert_threshold=threshold,
        bands=bands,
        rules=rules,
        reporting_threshold_minor=_int(
            document, "reportingThresholdMinor", 1, 10**15, default=1_000_000
        ),
        near_threshold_ratio_percent=_int(
            document, "nearThresholdRatioPercent", 50, 99, default=90
        ),
    )


def _rule(raw: object, path: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise InvalidRuleset(path, "a rule is an object")
    _known(raw, path, {"code", "typology", "concerns", "condition", "points", "reason", "params"})
    code = raw.get("code")
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise InvalidRuleset(f"{path}.code", "an upper-case code such as LARGE_TRANSACTION")
    typology = raw.get("typology")
    if not isinstance(typology, str) or not 1 <= len(typology) <= 64:
        raise InvalidRuleset(f"{path}.typology", "a typology name is required")
    try:
        concerns = Party(raw.get("concerns", "originator"))
    except ValueError:
        raise InvalidRuleset(f"{path}.concerns", "originator or beneficiary") from None
    condition = raw.get("condition")
    if not isinstance(condition, str) or not 1 <= len(condition) <= MAX_CONDITION_LENGTH:
        raise InvalidRuleset(f"{path}.condition", "a CEL condition is required")
    points = _int(raw, "points", 0, MAX_SCORE, path=path)
    reason = raw.get("reason")
    if not isinstance(reason, str) or not 1 <= len(reason) <= MAX_REASON_LENGTH:
        raise InvalidRuleset(f"{path}.reason", "a reason text is required")
    params = raw.get("params", {})
    if not isinstance(params, Mapping) or not all(
        isinstance(k, str) and re.fullmatch(r"[a-z][a-z0-9_]{0,40}", k) for k in params
    ):
        raise InvalidRuleset(f"{path}.params", "an object of lower_case names")
    _check_params(params, f"{path}.params")
    rule = Rule(code, typology, concerns, condition, points, reason, dict(params))
    _check_references(rule, path)
    return rule


def _check_params(params: Mapping[str, Any], path: str) -> None:
    for name, value in params.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, float) or not isinstance(item, int | str | bool):
                raise InvalidRuleset(
                    f"{path}.{name}", "parameters are integers, strings, booleans or lists of them"
                )


def _check_references(rule: Rule, path: str) -> None:
    for reference in rule.referenced_fields():
        variable, name = reference.split(".", 1)
        known = set(rule.params) if variable == "params" else CONTEXT_FIELDS[variable]
        if name not in known:
            raise InvalidRuleset(
                f"{path}.condition", f"unknown field {reference}", _position(rule, reference)
            )
    for placeholder in _PLACEHOLDER.findall(rule.reason):
        variable, _, name = placeholder.partition(".")
        known = set(rule.params) if variable == "params" else CONTEXT_FIELDS.get(variable, set())
        if name not in known:
            raise InvalidRuleset(f"{path}.reason", f"unknown placeholder {{{placeholder}}}")


def _position(rule: Rule, reference: str) -> int | None:
    """Where a reference is used, outside string literals and not as the start of a
    longer name (``event.typ`` is not found in ``event.type``)."""
    blanked = _STRINGS.sub(lambda match: " " * len(match.group()), rule.condition)
    found = re.search(rf"\b{re.escape(reference)}\b", blanked)
    return found.start() + 1 if found else None


def _bands(raw: object) -> dict[Band, int]:
    if not isinstance(raw, Mapping):
        raise InvalidRuleset("bands", "give the lowest score of medium, high and critical")
    _known(raw, "bands", {"medium", "high", "critical"})
    bands = {Band.LOW: 0}
    for band in (Band.MEDIUM, Band.HIGH, Band.CRITICAL):
        bands[band] = _int(raw, band.value, 1, MAX_SCORE, path="bands")
    if not bands[Band.MEDIUM] < bands[Band.HIGH] < bands[Band.CRITICAL]:
        raise InvalidRuleset("bands", "medium < high < critical")
    return bands


def _known(raw: Mapping[str, Any], path: str, allowed: set[str]) -> None:
    for key in raw:
        if key not in allowed:
            raise InvalidRuleset(f"{path}.{key}" if path else str(key), "unknown field")


def _int(
    raw: Mapping[str, Any],
    name: str,
    low: int,
    high: int,
    *,
    path: str = "",
    default: int | None = None,
) -> int:
    value = raw.get(name, default)
    where = f"{path}.{name}" if path else name
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRuleset(where, f"an integer from {low} to {high}")
    return value


# -- evaluating ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompiledRuleset:
    ruleset: Ruleset
    conditions: tuple[CompiledCondition, ...]
    # Per rule, the context fields its explanation shows: worked out once, not per event.
    observed: tuple[tuple[str, ...], ...] = ()
    # For each context root, every field a rule may read from it (its condition, what its
    # explanation shows, its reason's placeholders), or None when a rule may read any.
    reads: Mapping[str, frozenset[str] | None] = field(default_factory=dict)
    # The same paths split once into (path, root, field), as each evaluation reads them.
    _observed_parts: tuple[tuple[tuple[str, str, str], ...], ...] = ()

    def __post_init__(self) -> None:
        if not self.observed:
            paths = tuple(
                tuple(path for path in rule.referenced_fields() if not path.startswith("params."))
                for rule in self.ruleset.rules
            )
            object.__setattr__(self, "observed", paths)
        parts = tuple(
            tuple((path, *path.split(".", 1)) for path in paths) for paths in self.observed
        )
        object.__setattr__(self, "_observed_parts", parts)
        if not self.reads:
            object.__setattr__(self, "reads", self._reads())

    def _reads(self) -> dict[str, frozenset[str] | None]:
        found: dict[str, set[str] | None] = {}

        def add(root: str, names: frozenset[str] | set[str] | None) -> None:
            if root == "params":
                return
            known = found.get(root, set())
            if names is None or known is None:
                found[root] = None
            else:
                found[root] = known | set(names)

        for rule, condition, paths in zip(
            self.ruleset.rules, self.conditions, self.observed, strict=True
        ):
            for root, names in condition.reads.items():
                add(root, names)
            for path in paths:
                root, _, name = path.partition(".")
                add(root, {name})
            for placeholder in _PLACEHOLDER.findall(rule.reason):
                root, _, name = placeholder.partition(".")
                add(root, {name})
        return {root: None if names is None else frozenset(names) for root, names in found.items()}

    def evaluate(self, context: Mapping[str, Any]) -> Evaluation:
        outcomes = tuple(
            _evaluate_rule(rule, condition, context, observed)
            for rule, condition, observed in zip(
                self.ruleset.rules, self.conditions, self._observed_parts, strict=True
            )
        )
        score = min(MAX_SCORE, sum(outcome.points for outcome in outcomes))
        return Evaluation(
            score=score,
            band=self.ruleset.band_for(score),
            outcomes=outcomes,
            alert=score >= self.ruleset.alert_threshold,
            alert_threshold=self.ruleset.alert_threshold,
        )


def compile_ruleset(
    ruleset: Ruleset, compiler: ConditionCompiler, samples: Sequence[Mapping[str, Any]]
) -> CompiledRuleset:
    """Compile every condition and run it on sample contexts: a rule that fails to
    compile, or fails at run time on a well-formed context, is refused here and never
    reaches an event."""
    conditions = []
    for index, rule in enumerate(ruleset.rules):
        path = f"rules[{index}].condition"
        try:
            condition = compiler.compile(rule.condition)
        except InvalidRuleset as error:
            raise InvalidRuleset(path, error.message, error.position) from error
        for sample in samples:
            try:
                result = condition.evaluate({**sample, "params": rule.params})
            except RuleFailed as error:
                raise InvalidRuleset(path, f"fails at run time: {error}") from error
            if not isinstance(result, bool):
                raise InvalidRuleset(path, "the condition must give true or false")
        conditions.append(condition)
    return CompiledRuleset(ruleset, tuple(conditions))


def _evaluate_rule(
    rule: Rule,
    condition: CompiledCondition,
    context: Mapping[str, Any],
    paths: Sequence[tuple[str, str, str]],
) -> RuleOutcome:
    scope = {**context, "params": rule.params}
    observed = {}
    for path, root, name in paths:
        values = scope.get(root)
        # An exact dict answers at once; anything else is looked up as the path says.
        observed[path] = values.get(name) if type(values) is dict else _lookup(scope, path)
    try:
        fired = condition.evaluate(scope) is True
    except RuleFailed as error:
        return RuleOutcome(
            rule.code,
            rule.typology,
            rule.concerns,
            False,
            0,
            observed,
            dict(rule.params),
            None,
            str(error),
        )
    return RuleOutcome(
        code=rule.code,
        typology=rule.typology,
        concerns=rule.concerns,
        fired=fired,
        points=rule.points if fired else 0,
        observed=observed,
        thresholds=dict(rule.params),
        reason=render_reason(rule.reason, scope) if fired else None,
    )


def render_reason(template: str, scope: Mapping[str, Any]) -> str:
    return _PLACEHOLDER.sub(lambda match: _text(_lookup(scope, match.group(1))), template)


def _lookup(scope: Mapping[str, Any], path: str) -> Any:
    value: Any = scope
    for part in path.split("."):
        # dict first: an exact dict is settled before the slower check of the ABC.
        if not isinstance(value, dict | Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_text(item) for item in value)
    return str(value)
