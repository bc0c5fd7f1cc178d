"""What scoring reads and writes: the event as stored, the evaluation context built from
it, and the ports through which a scorer and the scoring storage are reached.

The context is a plain mapping that CEL conditions read (see ``domain.rules``):
``event`` (the transaction's facts, money in integer minor units), and ``originator``
and ``beneficiary``: each subject's history features as of the event's own time, and
its attributes (risk rating, PEP, sanctions hit) as known when the event is scored. A
sanctions hit reported after a transfer but before it is scored therefore counts, which
is what a compliance officer wants. Each assessment stores the whole context it was
scored on, so replaying an assessment re-evaluates that stored context and gives the
same result whatever the subject's attributes have become since.

A party's history features are computed, and put in the context, only where the
ruleset's rules may read them (:class:`FeatureNeeds`): a rule's condition, what its
explanation shows and its reason's placeholders name them, and a rule that reads a
party as a whole gets all of that party's features. The context therefore holds every
fact the ruleset version could have used, and only those.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from domain.cases import Case
from domain.reference import CURRENCY_MINOR_UNITS
from domain.rules import WINDOWS, Evaluation, Ruleset


@dataclass(frozen=True, slots=True)
class StoredEvent:
    event_id: uuid.UUID
    event_type: str
    occurred_at: datetime
    subject_id: uuid.UUID
    counterparty_id: uuid.UUID | None
    amount: Decimal | None
    currency: str | None
    payload: Mapping[str, Any]
    subject_attributes: Mapping[str, Any] = field(default_factory=dict)
    counterparty_attributes: Mapping[str, Any] = field(default_factory=dict)
    # Whether a scoring failure is recorded for the event (to be cleared once scored).
    scoring_failed: bool = False


@dataclass(frozen=True, slots=True)
class StoredRuleset:
    version: int
    document: Mapping[str, Any]
    document_hash: bytes


@dataclass(frozen=True, slots=True)
class Features:
    """History features of one subject, as of one moment (keys as in ``domain.rules``)."""

    values: Mapping[str, int]

    @classmethod
    def empty(cls, names: Iterable[str] | None = None) -> Features:
        """No history: every feature (or those named) at its value for no activity."""
        wanted = HISTORY_FIELDS if names is None else frozenset(names)
        return cls({name: _NO_HISTORY.get(name, 0) for name in HISTORY_ORDER if name in wanted})


def _history_order() -> tuple[str, ...]:
    names = ["days_dormant"]
    for window in WINDOWS:
        for direction in ("out", "in"):
            names += [
                f"{direction}_count_{window}",
                f"{direction}_sum_minor_{window}",
                f"{direction}_distinct_{window}",
            ]
        names += [f"pair_count_{window}", f"near_threshold_count_{window}"]
    return tuple(names)


# The history features of a party, in the order a context lists them.
HISTORY_ORDER = _history_order()
HISTORY_FIELDS = frozenset(HISTORY_ORDER)
_NO_HISTORY = {"days_dormant": -1}


@dataclass(frozen=True, slots=True)
class FeatureNeeds:
    """Which history features each party's context holds (all of them by default)."""

    originator: frozenset[str] = HISTORY_FIELDS
    beneficiary: frozenset[str] = HISTORY_FIELDS

    @classmethod
    def of(cls, reads: Mapping[str, frozenset[str] | None]) -> FeatureNeeds:
        """What a ruleset's reads (per context root: the fields, or None for any) need."""

        def party(root: str) -> frozenset[str]:
            if root not in reads:
                return frozenset()
            names = reads[root]
            return HISTORY_FIELDS if names is None else HISTORY_FIELDS & names

        return cls(party("originator"), party("beneficiary"))

    def union(self) -> frozenset[str]:
        return self.originator | self.beneficiary


ALL_FEATURES = FeatureNeeds()


def to_minor(amount: Decimal, currency: str) -> int:
    """An exact integer in the currency's minor units (cents for EUR)."""
    exponent = CURRENCY_MINOR_UNITS[currency]
    minor = amount.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise ValueError("the amount has more digits than the currency allows")
    return int(minor)


def build_context(
    event: StoredEvent, originator: Features, beneficiary: Features
) -> dict[str, Any]:
    data = event.payload.get("data", {})
    origin_country = str(data.get("originator", {}).get("country", ""))
    target_country = str(data.get("beneficiary", {}).get("country", ""))
    amount_minor = (
        to_minor(event.amount, event.currency) if event.amount is not None and event.currency else 0
    )
    return {
        "event": {
            "type": event.event_type,
            "amount": str(event.amount) if event.amount is not None else "0",
            "amount_minor": amount_minor,
            "currency": event.currency or "",
            "channel": str(data.get("channel", "")),
            "originator_country": origin_country,
            "beneficiary_country": target_country,
            "cross_border": bool(
                origin_country and target_country and origin_country != target_country
            ),
            "hour": event.occurred_at.hour,
        },
        "originator": _party(event.subject_attributes, originator, origin_country),
        "beneficiary": _party(event.counterparty_attributes, beneficiary, target_country),
    }


def _party(attributes: Mapping[str, Any], features: Features, country: str) -> dict[str, Any]:
    return {
        "country": str(attributes.get("country") or country),
        "risk_rating": str(attributes.get("riskRating", "")),
        "pep": bool(attributes.get("pep", False)),
        "sanctions_hit": bool(attributes.get("sanctionsHit", False)),
        **features.values,
    }


def sample_contexts() -> list[dict[str, Any]]:
    """Well-formed contexts on which every rule of a ruleset must evaluate without error."""
    quiet = Features.empty()
    busy = Features({name: 7 for name in quiet.values})
    contexts = []
    for features, amount, country in ((quiet, 1, "NL"), (busy, 987_654_321, "IR")):
        contexts.append(
            {
                "event": {
                    "type": "transaction",
                    "amount": str(Decimal(amount) / 100),
                    "amount_minor": amount,
                    "currency": "EUR",
                    "channel": "sepa",
                    "originator_country": "NL",
                    "beneficiary_country": country,
                    "cross_border": country != "NL",
                    "hour": 3,
                },
                "originator": _party({}, features, "NL"),
                "beneficiary": _party({"riskRating": "high", "pep": True}, features, country),
            }
        )
    return contexts


class RiskScorer(Protocol):
    """Turns a context into a score with its explanation. The rules scorecard is the
    first implementation; a statistical model can be another."""

    name: str
    version: int
    # The history features its contexts must hold.
    needs: FeatureNeeds

    def assess(self, context: Mapping[str, Any]) -> Evaluation: ...


class ScorerProvider(Protocol):
    def scorer_for(self, tenant_id: uuid.UUID, ruleset: StoredRuleset) -> RiskScorer:
        """A scorer for this ruleset version, compiled once and kept."""
        ...

    def parse(self, ruleset: StoredRuleset) -> Ruleset: ...


@dataclass(frozen=True, slots=True)
class AssessmentRecord:
    assessment_id: uuid.UUID
    event_id: uuid.UUID
    ruleset_version: int
    scorer: str
    evaluation: Evaluation
    context: Mapping[str, Any]
    scored_at: datetime


@dataclass(frozen=True, slots=True)
class AlertRecord:
    alert_id: uuid.UUID
    assessment_id: uuid.UUID
    event_id: uuid.UUID
    subject_id: uuid.UUID
    case_id: uuid.UUID
    score: int
    band: str
    typologies: tuple[str, ...]
    created_at: datetime


class ScoringStore(Protocol):
    async def load_events(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StoredEvent]:
        """The events of these ids that exist, by id."""
        ...

    async def load_event(self, event_id: uuid.UUID) -> StoredEvent | None: ...

    async def active_ruleset(self) -> StoredRuleset | None: ...

    async def ruleset(self, version: int) -> StoredRuleset | None: ...

    async def latest_version(self) -> int:
        """The highest ruleset version stored, 0 when there is none."""
        ...

    async def add_ruleset(self, ruleset: StoredRuleset, actor: str) -> None:
        """Store a validated version (status ``validated``)."""
        ...

    async def activate(self, version: int, actor: str) -> None:
        """Make ``version`` the one active version, retiring the one before."""
        ...

    async def assessed(
        self, event_ids: Sequence[uuid.UUID], ruleset_version: int
    ) -> set[uuid.UUID]:
        """Those of the events that have an assessment for this ruleset version."""
        ...

    async def features_of(
        self,
        events: Sequence[StoredEvent],
        ruleset: Ruleset,
        needs: FeatureNeeds = ALL_FEATURES,
    ) -> list[tuple[Features, Features]]:
        """For each event, in order, the originator's and the beneficiary's features as of
        the event's time (the event itself included): those that ``needs`` names."""
        ...

    async def add_assessments(self, records: Sequence[AssessmentRecord]) -> set[uuid.UUID]:
        """Store the assessments; answer the events whose assessment was stored (an
        event that has one for this ruleset version already is left out)."""
        ...

    async def open_case(self, subject_id: uuid.UUID) -> Case | None:
        """The subject's case that is not closed, locked until commit."""
        ...

    async def add_case(self, case: Case) -> bool:
        """False when the subject already has a case that is not closed."""
        ...

    async def save_case(self, case: Case) -> None: ...

    async def add_alert(self, alert: AlertRecord) -> None: ...

    async def record_failure(self, event_id: uuid.UUID, attempts: int, reason: str) -> None: ...

    async def clear_failures(self, event_ids: Sequence[uuid.UUID]) -> None: ...
