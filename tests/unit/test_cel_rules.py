"""The CEL adapter: conditions see exactly what the full context would show them, scorers
are compiled once per version, and the scoring use cases never install, activate or crash
on a bad rule."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

import cel
import pytest

from adapters.cel_rules import CachedScorers, CelCompiler, CelCondition
from domain.audit import AuditEntry
from domain.canonical import digest
from domain.case_policy import DEFAULT_POLICY, CasePolicy
from domain.cases import Case
from domain.default_ruleset import DEFAULT_RULESET
from domain.messages import OutboxMessage
from domain.rules import InvalidRuleset, RuleFailed, Ruleset
from domain.scoring import (
    ALL_FEATURES,
    AlertRecord,
    AssessmentRecord,
    FeatureNeeds,
    Features,
    StoredEvent,
    StoredRuleset,
    sample_contexts,
)
from services.scoring import ScoreOutcome, activate_ruleset, install_ruleset, score_event

TENANT = uuid.UUID("018f0000-0000-7000-8000-00000000000a")
OTHER_TENANT = uuid.UUID("018f0000-0000-7000-8000-00000000000b")


def stored(version: int = 1, document: Mapping[str, Any] = DEFAULT_RULESET) -> StoredRuleset:
    return StoredRuleset(version, document, digest(document))


def bad_document() -> dict[str, Any]:
    rules = [*DEFAULT_RULESET["rules"]]
    rules[3] = rules[3] | {"condition": "originator.out_sum_minor_7d / 0 > 1"}
    return DEFAULT_RULESET | {"rules": rules}


# -- conditions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "condition",
    [
        "originator.out_count_24h >= params.limit && event.beneficiary_country in params.list",
        "originator . out_count_24h >= 7",
        "has(originator.pep) && !has(originator.nothing_of_the_sort)",
        "originator['out_count_24h'] == 7",
        "size(originator) > 40 && size(event) == 9",
        "originator.exists(name, name == 'sanctions_hit')",
        "params.list.exists(event, event == 'IR')",
        "[event.hour].all(hour, hour == 3) && event.channel.startsWith('se')",
        "beneficiary.pep && 'originator.pep' != '' // originator, in a comment",
        "'event.hour' != event.channel && event.hour >= 0",
        "params.list.exists(c, c == event.beneficiary_country) || originator.pep",
        "[{'event': 3}].all(m, m.event == 3) && event.hour >= 0",
        "{'originator': 1}.originator == 1 && beneficiary.pep == beneficiary.pep",
    ],
)
def test_a_condition_sees_what_the_whole_context_shows(condition: str) -> None:
    program = cel.compile(condition)

    for sample in sample_contexts():
        scope = {**sample, "params": {"limit": 7, "list": ["IR"]}}
        assert CelCompiler().compile(condition).evaluate(scope) is program.execute(scope)


@pytest.mark.parametrize(
    ("condition", "flattened"),
    [
        ("originator . out_count_24h >= params.limit", True),
        ("'event.hour' != event.channel && event.hour >= 0", True),
        ("params.list.exists(c, c == event.beneficiary_country)", True),
        ("has(originator.pep)", False),
        ("originator['out_count_24h'] == 7", False),
        ("size(event) == 9", False),
        ("[{'event': 3}].all(m, m.event == 3)", False),
        ("params.list.exists(event, event == 'IR')", False),
    ],
)
def test_only_plain_selections_run_as_variables(condition: str, flattened: bool) -> None:
    assert CelCompiler().compile(condition).flattened is flattened


def test_every_default_rule_runs_as_variables() -> None:
    compiled = CachedScorers().scorer_for(TENANT, stored())

    conditions = compiled.compiled.conditions
    assert all(isinstance(c, CelCondition) and c.flattened for c in conditions)


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("event.amount_minor / event.hour > 0", "division by zero in CEL expression"),
        ("event.amount_minor % event.hour == 0", "modulo by zero in CEL expression"),
        ("event.amount_minor * 9223372036854775807 > 0", "Arithmetic overflow in 'mul'"),
        ("event.nothing > 0", "no field 'nothing' in the context"),
        ("event.channel > 0", "No such overload"),
        ("event.hour + 1", "the condition gave int, not true or false"),
    ],
)
def test_a_failure_at_run_time_is_a_short_rule_failed(condition: str, message: str) -> None:
    condition_ = CelCompiler().compile(condition)
    scope = {"event": {"amount_minor": 12_500, "hour": 0, "channel": "sepa"}}

    with pytest.raises(RuleFailed) as failed:
        condition_.evaluate(scope)

    assert str(failed.value).startswith(message)
    assert len(str(failed.value)) <= 200


# -- the scorer cache ----------------------------------------------------------------------


def test_a_version_is_compiled_once_and_kept() -> None:
    scorers = CachedScorers()

    first = scorers.scorer_for(TENANT, stored(1))

    assert scorers.scorer_for(TENANT, stored(1)) is first
    assert (first.name, first.version) == ("rules", 1)
    assert scorers.scorer_for(OTHER_TENANT, stored(1)) is not first
    assert scorers.scorer_for(TENANT, stored(2)) is not first
    changed = StoredRuleset(1, DEFAULT_RULESET, b"another hash")
    assert scorers.scorer_for(TENANT, changed) is not first


def test_the_cache_forgets_the_least_recently_used() -> None:
    scorers = CachedScorers(capacity=2)
    one = scorers.scorer_for(TENANT, stored(1))
    two = scorers.scorer_for(TENANT, stored(2))

    assert scorers.scorer_for(TENANT, stored(1)) is one
    scorers.scorer_for(TENANT, stored(3))

    assert scorers.scorer_for(TENANT, stored(1)) is one
    assert scorers.scorer_for(TENANT, stored(2)) is not two


def test_a_bad_version_is_refused_every_time() -> None:
    scorers = CachedScorers()

    for _ in range(2):
        with pytest.raises(InvalidRuleset) as refused:
            scorers.scorer_for(TENANT, stored(1, bad_document()))
        assert refused.value.path == "rules[3].condition"
        assert refused.value.message == "fails at run time: division by zero in CEL expression"


def test_parse_reads_the_document_once() -> None:
    scorers = CachedScorers()

    ruleset = scorers.parse(stored())

    assert scorers.parse(stored()) is ruleset

    assert isinstance(ruleset, Ruleset)
    assert ruleset.reporting_threshold_minor == 1_000_000
    assert [rule.code for rule in ruleset.rules] == [r["code"] for r in DEFAULT_RULESET["rules"]]


# -- the use cases, over an in-memory scoring store ------------------------------------------


@dataclass
class ScoringMemory:
    rulesets: dict[int, StoredRuleset] = field(default_factory=dict)
    active: int | None = None
    events: dict[uuid.UUID, StoredEvent] = field(default_factory=dict)
    features: dict[uuid.UUID, tuple[Features, Features]] = field(default_factory=dict)
    needs: list[FeatureNeeds] = field(default_factory=list)
    assessments: list[AssessmentRecord] = field(default_factory=list)
    cases: dict[uuid.UUID, Case] = field(default_factory=dict)
    alerts: list[AlertRecord] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    commits: int = 0


class MemoryScoringStore:
    """Only what the scoring use cases ask of the port; the rest is not needed here."""

    def __init__(self, memory: ScoringMemory) -> None:
        self.memory = memory

    async def load_events(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StoredEvent]:
        return {e: self.memory.events[e] for e in event_ids if e in self.memory.events}

    async def active_ruleset(self) -> StoredRuleset | None:
        active = self.memory.active
        return None if active is None else self.memory.rulesets[active]

    async def ruleset(self, version: int) -> StoredRuleset | None:
        return self.memory.rulesets.get(version)

    async def latest_version(self) -> int:
        return max(self.memory.rulesets, default=0)

    async def add_ruleset(self, ruleset: StoredRuleset, actor: str) -> None:
        self.memory.rulesets[ruleset.version] = ruleset

    async def activate(self, version: int, actor: str) -> None:
        self.memory.active = version

    async def assessed(
        self, event_ids: Sequence[uuid.UUID], ruleset_version: int
    ) -> set[uuid.UUID]:
        return {
            a.event_id
            for a in self.memory.assessments
            if a.event_id in event_ids and a.ruleset_version == ruleset_version
        }

    async def features_of(
        self,
        events: Sequence[StoredEvent],
        ruleset: Ruleset,
        needs: FeatureNeeds = ALL_FEATURES,
    ) -> list[tuple[Features, Features]]:
        self.memory.needs.append(needs)
        return [self.memory.features[event.event_id] for event in events]

    async def add_assessments(self, records: Sequence[AssessmentRecord]) -> set[uuid.UUID]:
        self.memory.assessments.extend(records)
        return {record.event_id for record in records}

    async def open_case(self, subject_id: uuid.UUID) -> Case | None:
        return self.memory.cases.get(subject_id)

    async def add_case(self, case: Case) -> bool:
        self.memory.cases[case.subject_id] = case
        return True

    async def save_case(self, case: Case) -> None:
        self.memory.cases[case.subject_id] = case

    async def add_alert(self, alert: AlertRecord) -> None:
        self.memory.alerts.append(alert)

    async def clear_failures(self, event_ids: Sequence[uuid.UUID]) -> None:
        return None


class DefaultCasePolicy:
    """Only the case policy, which scoring reads to open a case."""

    async def policy(self) -> CasePolicy:
        return DEFAULT_POLICY


class MemoryUnitOfWork:
    def __init__(self, memory: ScoringMemory, tenant_id: uuid.UUID) -> None:
        self.tenant_id = tenant_id
        self.memory = memory
        self.scoring = MemoryScoringStore(memory)
        self.cases = DefaultCasePolicy()
        self._entries: list[AuditEntry] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def record(self, entry: AuditEntry) -> None:
        self._entries.append(entry)

    def publish(self, message: OutboxMessage) -> None:
        return None

    async def commit(self) -> None:
        self.memory.audit += self._entries
        self.memory.commits += 1


def factory(memory: ScoringMemory) -> Any:
    return lambda tenant_id: MemoryUnitOfWork(memory, tenant_id)


async def test_a_bad_ruleset_is_neither_stored_nor_activated() -> None:
    memory = ScoringMemory()

    with pytest.raises(InvalidRuleset):
        await install_ruleset(
            factory(memory), CachedScorers(), TENANT, bad_document(), "officer", activate=True
        )

    assert (memory.rulesets, memory.active, memory.commits) == ({}, None, 0)


async def test_a_stored_version_that_no_longer_validates_is_not_activated() -> None:
    memory = ScoringMemory(rulesets={1: stored(1), 2: stored(2, bad_document())}, active=1)

    with pytest.raises(InvalidRuleset):
        await activate_ruleset(factory(memory), CachedScorers(), TENANT, 2, "officer")

    assert (memory.active, memory.commits) == (1, 0)


async def test_the_default_ruleset_installs_and_activates() -> None:
    memory = ScoringMemory()

    version = await install_ruleset(
        factory(memory), CachedScorers(), TENANT, DEFAULT_RULESET, "officer", activate=True
    )

    assert (version, memory.active) == (1, 1)
    assert [e.action for e in memory.audit] == ["ruleset.validated", "ruleset.activated"]


def transfer(**changes: Any) -> StoredEvent:
    """A transfer of 250.00 EUR between two Dutch accounts."""
    return StoredEvent(
        event_id=uuid.uuid4(),
        event_type="transaction",
        occurred_at=datetime(2026, 3, 2, 10, 15, tzinfo=UTC),
        subject_id=uuid.uuid4(),
        counterparty_id=uuid.uuid4(),
        amount=Decimal("250.00"),
        currency="EUR",
        payload={"data": {"originator": {"country": "NL"}, "beneficiary": {"country": "NL"}}},
        **changes,
    )


async def test_a_rule_failing_on_one_event_is_recorded_and_scoring_goes_on() -> None:
    # Valid on the sample contexts (dormancy -1 and 7), fails for an account whose last
    # activity was earlier the same day.
    per_day = {
        "code": "AMOUNT_PER_DORMANT_DAY",
        "typology": "dormant_account",
        "condition": "event.amount_minor / originator.days_dormant > params.limit_minor",
        "points": 10,
        "params": {"limit_minor": 100_000},
        "reason": "{event.amount_minor} per day of dormancy",
    }
    document = DEFAULT_RULESET | {"rules": [per_day, *DEFAULT_RULESET["rules"]]}
    event = transfer(counterparty_attributes={"sanctionsHit": True})
    quiet = Features.empty()
    memory = ScoringMemory(
        rulesets={1: stored(1, document)},
        active=1,
        events={event.event_id: event},
        features={event.event_id: (Features({**quiet.values, "days_dormant": 0}), quiet)},
    )

    result = await score_event(factory(memory), CachedScorers(), TENANT, event.event_id)

    assert (result.outcome, result.score, result.alerted) == (ScoreOutcome.ASSESSED, 100, 1)
    (assessment,) = memory.assessments
    failed = assessment.evaluation.outcomes[0]
    assert (failed.code, failed.fired, failed.points) == ("AMOUNT_PER_DORMANT_DAY", False, 0)
    assert failed.error == "division by zero in CEL expression"
    assert failed.observed == {"event.amount_minor": 25_000, "originator.days_dormant": 0}
    assert [o.code for o in assessment.evaluation.outcomes if o.fired] == ["SANCTIONED_BENEFICIARY"]
    assert [alert.subject_id for alert in memory.alerts] == [event.counterparty_id]


async def test_scoring_asks_only_for_the_features_its_ruleset_reads() -> None:
    event = transfer()
    memory = ScoringMemory(
        rulesets={1: stored(1, DEFAULT_RULESET)},
        active=1,
        events={event.event_id: event},
        features={event.event_id: (Features.empty(), Features.empty())},
    )

    await score_event(factory(memory), CachedScorers(), TENANT, event.event_id)

    (needs,) = memory.needs
    assert needs != ALL_FEATURES
    assert {"out_count_1h", "pair_count_24h", "days_dormant"} <= needs.originator
    assert "in_distinct_7d" in needs.beneficiary
    assert "out_distinct_90d" not in needs.union()
