"""The review workflow's table, guards and policy, without I/O."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import case_workflow as wf
from domain.case_policy import DEFAULT_POLICY, CasePolicy, QueueRoute, parse_policy
from domain.case_workflow import ANALYST, SUPERVISOR, TRANSITIONS, Action, Actor
from domain.cases import (
    Case,
    CaseStatus,
    Disposition,
    Proposal,
    case_data,
    case_from_data,
    open_case,
)
from domain.errors import (
    CaseError,
    ForbiddenRole,
    FourEyes,
    InvalidCaseInput,
    NotAssignee,
    StaleVersion,
    TransitionNotAllowed,
)
from domain.rules import Band

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
ALICE = Actor("alice", frozenset({ANALYST}))
BOB = Actor("bob", frozenset({SUPERVISOR}))
CAROL = Actor("carol", frozenset({ANALYST, SUPERVISOR}))
LONE = CasePolicy(low_closes_alone=True)


def a_case(band: Band = Band.HIGH, **changes: object) -> Case:
    case = open_case(uuid.uuid4(), uuid.uuid4(), band, 70, NOW)
    return replace(case, **changes)  # type: ignore[arg-type]


def in_review(band: Band = Band.HIGH, assignee: str = "alice") -> Case:
    return wf.claim(a_case(band), Actor(assignee, frozenset({ANALYST})), 1)


def pending(proposer: Actor = ALICE) -> Case:
    case = in_review(assignee=proposer.name)
    return wf.propose(
        case, proposer, Disposition.FALSE_POSITIVE, "benign", case.version, DEFAULT_POLICY, NOW
    )


def test_the_whole_path_from_open_to_closed_raises_the_version_at_each_step() -> None:
    case = a_case()
    case = wf.claim(case, ALICE, 1)
    assert (case.status, case.assignee, case.version) == (CaseStatus.IN_REVIEW, "alice", 2)
    case = wf.propose(case, ALICE, Disposition.SAR_FILED, "structuring", 2, DEFAULT_POLICY, NOW)
    assert case.status is CaseStatus.PENDING_APPROVAL
    assert case.proposal == Proposal(Disposition.SAR_FILED, "structuring", "alice", NOW)
    case = wf.approve(case, BOB, 3, NOW)
    assert (case.status, case.version, case.closed_at) == (CaseStatus.CLOSED, 4, NOW)
    assert case.decision is not None
    assert (case.decision.approved, case.decision.decided_by) == (True, "bob")


def test_a_proposer_cannot_approve_their_own_proposal_even_as_a_supervisor() -> None:
    case = pending(proposer=CAROL)
    with pytest.raises(FourEyes):
        wf.approve(case, CAROL, case.version, NOW)
    with pytest.raises(FourEyes):
        wf.reject(case, CAROL, "no", case.version, NOW)


@pytest.mark.parametrize("spelling", ["ALICE", "Alice", "\uff41\uff4c\uff49\uff43\uff45"])
def test_four_eyes_knows_the_proposer_under_another_case_or_unicode_form(spelling: str) -> None:
    case = pending()
    twin = Actor(spelling, frozenset({SUPERVISOR}))
    with pytest.raises(FourEyes):
        wf.approve(case, twin, case.version, NOW)
    with pytest.raises(FourEyes):
        wf.reject(case, twin, "no", case.version, NOW)


def test_a_regulator_never_writes_whatever_else_the_token_carries() -> None:
    with pytest.raises(ForbiddenRole):
        wf.claim(a_case(), Actor("rita", frozenset({"regulator", ANALYST})), 1)
    case = pending()
    with pytest.raises(ForbiddenRole):
        wf.approve(case, Actor("rita", frozenset({"regulator", SUPERVISOR})), case.version, NOW)


@pytest.mark.parametrize("assignee", ["ali\x00ce", "ali\u202ece", "alice\nbob", "a" * 201, " "])
def test_an_assignee_name_with_hidden_characters_or_too_long_is_refused(assignee: str) -> None:
    with pytest.raises(InvalidCaseInput) as refused:
        wf.assign(a_case(), BOB, assignee, 1)
    assert refused.value.field == "assignee"


def test_an_assignee_is_recorded_in_the_form_a_token_carries_the_name() -> None:
    assert wf.assign(a_case(), BOB, " \uff41\uff4c\uff49\uff43\uff45 ", 1).assignee == "alice"


def test_an_analyst_cannot_approve() -> None:
    other = Actor("dave", frozenset({ANALYST}))
    with pytest.raises(ForbiddenRole):
        wf.approve(pending(), other, 3, NOW)


def test_a_rejection_sends_the_case_back_with_its_reason() -> None:
    case = wf.reject(pending(), BOB, "  look at the counterparty  ", 3, NOW)
    assert (case.status, case.proposal, case.assignee) == (CaseStatus.IN_REVIEW, None, "alice")
    assert case.decision is not None
    assert (case.decision.approved, case.decision.reason) == (False, "look at the counterparty")
    with pytest.raises(InvalidCaseInput) as refused:
        wf.reject(pending(), BOB, "   ", 3, NOW)
    assert refused.value.field == "reason"


def test_a_stale_version_is_refused_before_anything_else_of_the_case() -> None:
    with pytest.raises(StaleVersion):
        wf.claim(a_case(status=CaseStatus.CLOSED), ALICE, 7)


def test_only_the_assignee_proposes() -> None:
    with pytest.raises(NotAssignee):
        wf.propose(
            in_review(assignee="erin"),
            ALICE,
            Disposition.FALSE_POSITIVE,
            "x",
            2,
            DEFAULT_POLICY,
            NOW,
        )


@pytest.mark.parametrize("band", [Band.MEDIUM, Band.HIGH, Band.CRITICAL])
def test_above_low_a_case_always_waits_for_approval(band: Band) -> None:
    case = wf.propose(in_review(band), ALICE, Disposition.NO_FURTHER_ACTION, "ok", 2, LONE, NOW)
    assert case.status is CaseStatus.PENDING_APPROVAL


def test_a_low_case_closes_alone_only_where_the_policy_says_so() -> None:
    closed = wf.propose(in_review(Band.LOW), ALICE, Disposition.FALSE_POSITIVE, "ok", 2, LONE, NOW)
    assert closed.status is CaseStatus.CLOSED
    assert closed.decision is not None
    assert closed.decision.decided_by == "alice"
    waiting = wf.propose(
        in_review(Band.LOW), ALICE, Disposition.FALSE_POSITIVE, "ok", 2, DEFAULT_POLICY, NOW
    )
    assert waiting.status is CaseStatus.PENDING_APPROVAL


def test_a_reopened_case_is_back_in_its_queue_with_a_new_sla() -> None:
    closed = wf.approve(pending(), BOB, 3, NOW)
    later = NOW + timedelta(days=40)
    case = wf.reopen(
        replace(closed, sla_breached_at=NOW), BOB, "new facts", 4, DEFAULT_POLICY, later
    )
    assert (case.status, case.assignee, case.proposal, case.decision) == (
        CaseStatus.OPEN,
        None,
        None,
        None,
    )
    assert (case.sla_due_at, case.sla_breached_at) == (later + timedelta(days=3), None)


def test_an_sla_breach_is_flagged_once() -> None:
    case = a_case()
    assert wf.breach_sla(case, NOW) is None
    late = NOW + timedelta(days=4)
    breached = wf.breach_sla(case, late)
    assert breached is not None
    assert breached.sla_breached_at == late
    assert breached.version == case.version
    assert wf.breach_sla(breached, late + timedelta(hours=1)) is None


# -- every (status, action) pair ---------------------------------------------------------

ALL_ROLES = frozenset({ANALYST, SUPERVISOR})


def _take(action: Action, case: Case, actor: Actor, policy: CasePolicy) -> Case:
    steps: dict[Action, Callable[[], Case]] = {
        Action.CLAIM: lambda: wf.claim(case, actor, case.version),
        Action.ASSIGN: lambda: wf.assign(case, actor, "frank", case.version),
        Action.UNASSIGN: lambda: wf.unassign(case, actor, case.version),
        Action.COMMENT: lambda: wf.comment(case, actor, case.version),
        Action.PROPOSE: lambda: wf.propose(
            case, actor, Disposition.FALSE_POSITIVE, "why", case.version, policy, NOW
        ),
        Action.CLOSE_ALONE: lambda: wf.propose(
            case, actor, Disposition.FALSE_POSITIVE, "why", case.version, policy, NOW
        ),
        Action.APPROVE: lambda: wf.approve(case, actor, case.version, NOW),
        Action.REJECT: lambda: wf.reject(case, actor, "why", case.version, NOW),
        Action.ESCALATE: lambda: wf.escalate(case, actor, "why", case.version),
        Action.REOPEN: lambda: wf.reopen(case, actor, "why", case.version, policy, NOW),
    }
    return steps[action]()


@given(status=st.sampled_from(CaseStatus), action=st.sampled_from(Action))
def test_every_pair_outside_the_table_is_refused_and_every_pair_in_it_is_taken(
    status: CaseStatus, action: Action
) -> None:
    # The actor holds every role and is the assignee; the proposal is someone else's.
    # Only the table can then refuse.
    actor = Actor("alice", ALL_ROLES)
    proposal = Proposal(Disposition.FALSE_POSITIVE, "why", "zoe", NOW)
    band = Band.LOW if action is Action.CLOSE_ALONE else Band.HIGH
    policy = LONE if action is Action.CLOSE_ALONE else DEFAULT_POLICY
    case = a_case(band, status=status, assignee="alice", proposal=proposal, version=5)

    if (status, action) not in TRANSITIONS:
        with pytest.raises(TransitionNotAllowed):
            _take(action, case, actor, policy)
        return
    after = _take(action, case, actor, policy)
    assert after.status is TRANSITIONS[status, action]
    assert after.version == 6


@given(
    status=st.sampled_from(CaseStatus),
    action=st.sampled_from(Action),
    roles=st.frozensets(st.sampled_from(["analyst", "supervisor", "regulator", "ingest"])),
    read=st.integers(min_value=1, max_value=9),
)
def test_a_step_is_refused_for_the_role_first_then_the_version_then_the_table(
    status: CaseStatus, action: Action, roles: frozenset[str], read: int
) -> None:
    proposal = Proposal(Disposition.FALSE_POSITIVE, "why", "zoe", NOW)
    case = a_case(Band.LOW, status=status, assignee="alice", proposal=proposal, version=5)
    actor = Actor("alice", roles)

    if not wf.ACTION_ROLES[action] & roles or "regulator" in roles:
        expected: type[CaseError] | None = ForbiddenRole
    elif read != case.version:
        expected = StaleVersion
    elif (status, action) not in TRANSITIONS:
        expected = TransitionNotAllowed
    else:
        expected = None

    if expected is None:
        assert wf.check(case, action, actor, read) is TRANSITIONS[status, action]
    else:
        with pytest.raises(expected):
            wf.check(case, action, actor, read)


def test_the_table_never_leaves_a_closed_case_but_by_reopening() -> None:
    leaving = {action for (status, action) in TRANSITIONS if status is CaseStatus.CLOSED}
    assert leaving == {Action.REOPEN}


# -- policy ----------------------------------------------------------------------------


def test_queues_route_by_typology_then_band_then_default() -> None:
    policy = parse_policy(
        {
            "slaHours": {"critical": 12},
            "lowClosesAlone": True,
            "queues": [
                {"name": "sanctions", "typologies": ["sanctions"]},
                {"name": "urgent", "bands": ["high", "critical"]},
            ],
        }
    )
    assert policy.queue_for(Band.LOW, ["sanctions", "structuring"]) == "sanctions"
    assert policy.queue_for(Band.CRITICAL, ["structuring"]) == "urgent"
    assert policy.queue_for(Band.MEDIUM, []) == "default"
    assert policy.sla[Band.CRITICAL] == timedelta(hours=12)
    assert policy.sla[Band.LOW] == timedelta(days=30)
    assert policy.routes[0] == QueueRoute("sanctions", frozenset(), frozenset({"sanctions"}))


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"slaHours": {"urgent": 3}}, "slaHours.urgent"),
        ({"slaHours": {"low": -1}}, "slaHours.low"),
        ({"lowClosesAlone": "yes"}, "lowClosesAlone"),
        ({"queues": [{"name": "Bad Name"}]}, "queues.0"),
        ({"queues": [{"name": "q", "bands": ["severe"]}]}, "queues.0.bands"),
        ({"colour": "red"}, "colour"),
        ({"queues": [{"name": "q", "typologies": ["x"] * 101}]}, "queues.0.typologies"),
        ({"queues": [{"name": "q", "typologies": ["mule\x00"]}]}, "queues.0.typologies"),
        ({"queues": [{"name": "q", "typologies": [""]}]}, "queues.0.typologies"),
    ],
)
def test_a_bad_policy_is_refused_naming_its_field(document: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidCaseInput) as refused:
        parse_policy(document)
    assert refused.value.field == field


def test_a_case_reads_back_from_its_data_as_it_was() -> None:
    rejected = wf.reject(pending(), BOB, "again", 3, NOW)
    closed = wf.approve(pending(), BOB, 3, NOW)
    for case in (a_case(), pending(), rejected, closed, replace(closed, sla_breached_at=NOW)):
        assert case_from_data(case_data(case)) == case
