"""How a case moves through review, under four eyes.

Every step is an :class:`Action` taken on a case in some status. :data:`TRANSITIONS` is
the whole table of what is allowed; anything not in it is refused with
:class:`~domain.errors.TransitionNotAllowed`. Each action needs one of the roles in
:data:`ACTION_ROLES`, and some have a guard of their own:

    open ──claim/assign──▶ in_review ──propose──▶ pending_approval ──approve──▶ closed
      ▲                     │    ▲                        │                      │
      └──────unassign───────┘    └────────reject──────────┘                      │
    open, in_review ──escalate──▶ escalated ──assign──▶ in_review                │
    open ◀─────────────────────────────reopen────────────────────────────────────┘

- **Four eyes.** The approver holds the supervisor role and is not the proposer
  (:class:`~domain.errors.FourEyes`). The database refuses the same, by trigger.
- **Closing alone.** Only a low case, and only when the tenant's policy says so, goes
  from in review straight to closed on its analyst's proposal.
- **Only the assignee** proposes a disposition for the case it works.
- **Optimistic concurrency.** Every action names the version it read; a case whose
  version moved on is refused with :class:`~domain.errors.StaleVersion` and nothing is
  changed. Each action that succeeds raises the version by one.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from domain.case_policy import CasePolicy
from domain.cases import Case, CaseStatus, Decision, Disposition, Proposal
from domain.errors import (
    ForbiddenRole,
    FourEyes,
    InvalidCaseInput,
    NotAssignee,
    StaleVersion,
    TransitionNotAllowed,
)
from domain.text import unprintable

ANALYST = "analyst"
SUPERVISOR = "supervisor"
# A regulator only ever reads: a token that carries this role takes no step, whatever
# other roles it also carries.
REGULATOR = "regulator"
MAX_REASON = 4000
MAX_ACTOR = 200


class Action(StrEnum):
    CLAIM = "claim"
    ASSIGN = "assign"
    UNASSIGN = "unassign"
    COMMENT = "comment"
    PROPOSE = "propose"
    CLOSE_ALONE = "close_alone"
    APPROVE = "approve"
    REJECT = "reject"
    ESCALATE = "escalate"
    REOPEN = "reopen"


Status = CaseStatus

TRANSITIONS: Mapping[tuple[CaseStatus, Action], CaseStatus] = {
    (Status.OPEN, Action.CLAIM): Status.IN_REVIEW,
    (Status.OPEN, Action.ASSIGN): Status.IN_REVIEW,
    (Status.IN_REVIEW, Action.ASSIGN): Status.IN_REVIEW,
    (Status.ESCALATED, Action.ASSIGN): Status.IN_REVIEW,
    (Status.IN_REVIEW, Action.UNASSIGN): Status.OPEN,
    (Status.OPEN, Action.COMMENT): Status.OPEN,
    (Status.IN_REVIEW, Action.COMMENT): Status.IN_REVIEW,
    (Status.PENDING_APPROVAL, Action.COMMENT): Status.PENDING_APPROVAL,
    (Status.ESCALATED, Action.COMMENT): Status.ESCALATED,
    (Status.IN_REVIEW, Action.PROPOSE): Status.PENDING_APPROVAL,
    (Status.IN_REVIEW, Action.CLOSE_ALONE): Status.CLOSED,
    (Status.PENDING_APPROVAL, Action.APPROVE): Status.CLOSED,
    (Status.PENDING_APPROVAL, Action.REJECT): Status.IN_REVIEW,
    (Status.OPEN, Action.ESCALATE): Status.ESCALATED,
    (Status.IN_REVIEW, Action.ESCALATE): Status.ESCALATED,
    (Status.CLOSED, Action.REOPEN): Status.OPEN,
}

ACTION_ROLES: Mapping[Action, frozenset[str]] = {
    Action.CLAIM: frozenset({ANALYST}),
    Action.ASSIGN: frozenset({SUPERVISOR}),
    Action.UNASSIGN: frozenset({SUPERVISOR}),
    Action.COMMENT: frozenset({ANALYST, SUPERVISOR}),
    Action.PROPOSE: frozenset({ANALYST}),
    Action.CLOSE_ALONE: frozenset({ANALYST}),
    Action.APPROVE: frozenset({SUPERVISOR}),
    Action.REJECT: frozenset({SUPERVISOR}),
    Action.ESCALATE: frozenset({ANALYST, SUPERVISOR}),
    Action.REOPEN: frozenset({SUPERVISOR}),
}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, with the roles its verified token gave it."""

    name: str
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class Transition:
    """One step of a case's history; ``version`` is the case's version after it."""

    case_id: uuid.UUID
    version: int
    action: Action
    from_status: CaseStatus
    to_status: CaseStatus
    actor: str
    roles: frozenset[str]
    taken_at: datetime
    details: Mapping[str, Any] = field(default_factory=dict)


def next_status(status: CaseStatus, action: Action) -> CaseStatus:
    """The status an action leads to; :class:`TransitionNotAllowed` if the table has no
    such step."""
    target = TRANSITIONS.get((status, action))
    if target is None:
        raise TransitionNotAllowed(f"a case that is {status.value} cannot be {_done(action)}")
    return target


def check(case: Case, action: Action, actor: Actor, expected_version: int) -> CaseStatus:
    """The checks every action makes, in the order a caller can act on them: the role
    (asking again will not help), the version (read the case again), then the table."""
    if REGULATOR in actor.roles:
        raise ForbiddenRole("a regulator's token only reads")
    if not ACTION_ROLES[action] & actor.roles:
        needed = " or ".join(sorted(ACTION_ROLES[action]))
        raise ForbiddenRole(f"{action.value} needs the {needed} role")
    if case.version != expected_version:
        raise StaleVersion(
            f"the case is at version {case.version}, not {expected_version}: read it again",
            field="expectedVersion",
        )
    return next_status(case.status, action)


def claim(case: Case, actor: Actor, expected_version: int) -> Case:
    check(case, Action.CLAIM, actor, expected_version)
    return _moved(case, Action.CLAIM, assignee=actor.name)


def assign(case: Case, actor: Actor, assignee: str, expected_version: int) -> Case:
    check(case, Action.ASSIGN, actor, expected_version)
    return _moved(case, Action.ASSIGN, assignee=_name(assignee, "assignee"))


def unassign(case: Case, actor: Actor, expected_version: int) -> Case:
    check(case, Action.UNASSIGN, actor, expected_version)
    return _moved(case, Action.UNASSIGN, assignee=None)


def comment(case: Case, actor: Actor, expected_version: int) -> Case:
    """A comment or a piece of evidence changes no status, but it is a change of the
    case: it takes the version read, like any other step."""
    check(case, Action.COMMENT, actor, expected_version)
    return _moved(case, Action.COMMENT)


def propose(
    case: Case,
    actor: Actor,
    disposition: Disposition,
    rationale: str,
    expected_version: int,
    policy: CasePolicy,
    now: datetime,
) -> Case:
    """The assignee proposes a disposition. The case waits for a supervisor, unless it is
    low and the tenant lets one analyst close such a case."""
    alone = not policy.needs_approval(case.band)
    action = Action.CLOSE_ALONE if alone else Action.PROPOSE
    check(case, action, actor, expected_version)
    if case.assignee != actor.name:
        raise NotAssignee("only the case's assignee proposes its disposition")
    proposal = Proposal(disposition, _reason(rationale, "rationale"), actor.name, now)
    if not alone:
        return _moved(case, action, proposal=proposal, decision=None)
    decision = Decision(True, actor.name, actor.roles, now)
    return _moved(case, action, proposal=proposal, decision=decision, closed_at=now)


def approve(case: Case, actor: Actor, expected_version: int, now: datetime) -> Case:
    check(case, Action.APPROVE, actor, expected_version)
    proposal = _proposal_of(case)
    if same_person(proposal.proposed_by, actor.name):
        raise FourEyes("the proposer of a disposition cannot approve it")
    decision = Decision(True, actor.name, actor.roles, now)
    return _moved(case, Action.APPROVE, decision=decision, closed_at=now)


def reject(case: Case, actor: Actor, reason: str, expected_version: int, now: datetime) -> Case:
    """Back to the analyst, with the reason; the proposal is kept in the case's history
    (the transitions), not on the case."""
    check(case, Action.REJECT, actor, expected_version)
    proposal = _proposal_of(case)
    if same_person(proposal.proposed_by, actor.name):
        raise FourEyes("the proposer of a disposition cannot decide on it")
    decision = Decision(False, actor.name, actor.roles, now, _reason(reason, "reason"))
    return _moved(case, Action.REJECT, proposal=None, decision=decision)


def escalate(case: Case, actor: Actor, reason: str, expected_version: int) -> Case:
    check(case, Action.ESCALATE, actor, expected_version)
    _reason(reason, "reason")
    return _moved(case, Action.ESCALATE, assignee=None)


def reopen(
    case: Case, actor: Actor, reason: str, expected_version: int, policy: CasePolicy, now: datetime
) -> Case:
    """Back in its queue, unassigned, with a new SLA counted from now."""
    check(case, Action.REOPEN, actor, expected_version)
    _reason(reason, "reason")
    return _moved(
        case,
        Action.REOPEN,
        assignee=None,
        proposal=None,
        decision=None,
        closed_at=None,
        sla_due_at=now + policy.sla[case.band],
        sla_breached_at=None,
    )


def same_person(one: str, other: str) -> bool:
    """Whether two names are one person's for four eyes: equal once both are in NFKC
    form, trimmed and case-folded, so that "Alice", "alice " and "alice" in full-width
    letters cannot approve alice's proposal. The review guard in the database compares
    the same way (``lower(normalize(btrim(name), NFKC))``)."""
    return _person(one) == _person(other)


def _person(name: str) -> str:
    return unicodedata.normalize("NFKC", name).strip().casefold()


def breach_sla(case: Case, now: datetime) -> Case | None:
    """The case flagged as past its SLA, or None when it is not due or already flagged.
    The flag is not a step of review: it changes no status and no version, so an
    analyst's pending step is never refused because the clock ran out."""
    if case.status is Status.CLOSED or case.sla_breached_at is not None:
        return None
    if case.sla_due_at > now:
        return None
    return replace(case, sla_breached_at=now)


def _moved(case: Case, action: Action, **changes: object) -> Case:
    status = next_status(case.status, action)
    return replace(case, status=status, version=case.version + 1, **changes)  # type: ignore[arg-type]


def _proposal_of(case: Case) -> Proposal:
    if case.proposal is None:  # the database keeps a pending case's proposal NOT NULL
        raise TransitionNotAllowed("the case has no proposal to decide on")
    return case.proposal


def _reason(text: str, field: str) -> str:
    stripped = text.strip()
    if not stripped:
        raise InvalidCaseInput(f"a {field} is required", field=field)
    if len(stripped) > MAX_REASON:
        raise InvalidCaseInput(f"a {field} has at most {MAX_REASON} characters", field=field)
    if unprintable(stripped, multiline=True):
        raise InvalidCaseInput(f"a {field} holds a control character", field=field)
    return stripped


def _name(text: str, field: str) -> str:
    """A person's name in the form tokens carry theirs (NFKC, trimmed), so that the one
    assigned is the one whose token then proposes; control and format characters, which
    would hide a name in logs and on screen, are refused."""
    name = unicodedata.normalize("NFKC", text).strip()
    if not 0 < len(name) <= MAX_ACTOR:
        raise InvalidCaseInput(f"{field} is 1 to {MAX_ACTOR} characters", field=field)
    if unprintable(name, multiline=False) or any(
        unicodedata.category(char) in {"Cf", "Zl", "Zp"} for char in name
    ):
        raise InvalidCaseInput(f"{field} holds a control or format character", field=field)
    return name


def _done(action: Action) -> str:
    return {
        Action.CLAIM: "claimed",
        Action.ASSIGN: "assigned",
        Action.UNASSIGN: "unassigned",
        Action.COMMENT: "commented on",
        Action.PROPOSE: "given a proposal",
        Action.CLOSE_ALONE: "closed alone",
        Action.APPROVE: "approved",
        Action.REJECT: "rejected",
        Action.ESCALATE: "escalated",
        Action.REOPEN: "reopened",
    }[action]
