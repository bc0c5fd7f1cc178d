"""Alerts and cases: what analysts review.

One subject has at most one case that is not closed. An alert on a subject joins its
open case, which may raise the case's band and priority; otherwise the alert opens a
new case whose SLA due time follows from its band. How a case then moves through review
is in :mod:`domain.case_workflow`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from domain.rules import Band


class CaseStatus(StrEnum):
    OPEN = "open"
    IN_REVIEW = "in_review"
    PENDING_APPROVAL = "pending_approval"
    ESCALATED = "escalated"
    CLOSED = "closed"


# How long a case of each band may wait for a decision. A tenant's policy may override it.
DEFAULT_SLA: Mapping[Band, timedelta] = {
    Band.LOW: timedelta(days=30),
    Band.MEDIUM: timedelta(days=10),
    Band.HIGH: timedelta(days=3),
    Band.CRITICAL: timedelta(hours=24),
}


def priority_of(band: Band, score: int) -> int:
    """Higher first: the band dominates, the score breaks ties within it."""
    return band.rank * 1000 + score


class Disposition(StrEnum):
    """What an analyst concludes about a case."""

    FALSE_POSITIVE = "false_positive"
    NO_FURTHER_ACTION = "no_further_action"
    SAR_FILED = "sar_filed"


@dataclass(frozen=True, slots=True)
class Proposal:
    disposition: Disposition
    rationale: str
    proposed_by: str
    proposed_at: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    """A supervisor's answer to a proposal (or, for a low case the tenant lets one
    analyst close, the analyst's own). ``roles`` are those the decider held then."""

    approved: bool
    decided_by: str
    roles: frozenset[str]
    decided_at: datetime
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Case:
    case_id: uuid.UUID
    subject_id: uuid.UUID
    status: CaseStatus
    band: Band
    priority: int
    opened_at: datetime
    sla_due_at: datetime
    alert_count: int
    version: int
    queue: str = "default"
    typologies: tuple[str, ...] = ()
    assignee: str | None = None
    proposal: Proposal | None = None
    decision: Decision | None = None
    sla_breached_at: datetime | None = None
    closed_at: datetime | None = None


def open_case(
    case_id: uuid.UUID,
    subject_id: uuid.UUID,
    band: Band,
    score: int,
    now: datetime,
    sla: Mapping[Band, timedelta] = DEFAULT_SLA,
    *,
    queue: str = "default",
    typologies: tuple[str, ...] = (),
) -> Case:
    return Case(
        case_id=case_id,
        subject_id=subject_id,
        status=CaseStatus.OPEN,
        band=band,
        priority=priority_of(band, score),
        opened_at=now,
        sla_due_at=now + sla[band],
        alert_count=1,
        version=1,
        queue=queue,
        typologies=tuple(sorted(set(typologies))),
    )


def join_alert(
    case: Case,
    band: Band,
    score: int,
    now: datetime,
    sla: Mapping[Band, timedelta] = DEFAULT_SLA,
    *,
    typologies: tuple[str, ...] = (),
) -> Case:
    """A new alert on the case's subject: count it, add its typologies, and raise the
    band, the priority and the urgency of the SLA if the alert is graver than what the
    case held. (Its queue stays: an analyst may be working it.)"""
    graver = band.rank > case.band.rank
    new_band = band if graver else case.band
    due = min(case.sla_due_at, now + sla[band]) if graver else case.sla_due_at
    return replace(
        case,
        band=new_band,
        priority=max(case.priority, priority_of(band, score)),
        sla_due_at=due,
        alert_count=case.alert_count + 1,
        version=case.version + 1,
        typologies=tuple(sorted({*case.typologies, *typologies})),
    )


def case_data(case: Case) -> dict[str, Any]:
    """The case as JSON: the data of its ``case.*`` messages and audit records, and the
    stored answer to a client mutation id (read back by :func:`case_from_data`)."""
    proposal, decision = case.proposal, case.decision
    return {
        "caseId": str(case.case_id),
        "subjectId": str(case.subject_id),
        "status": case.status.value,
        "band": case.band.value,
        "priority": case.priority,
        "queue": case.queue,
        "typologies": list(case.typologies),
        "assignee": case.assignee,
        "version": case.version,
        "openedAt": case.opened_at.isoformat(),
        "slaDueAt": case.sla_due_at.isoformat(),
        "slaBreachedAt": _time(case.sla_breached_at),
        "alertCount": case.alert_count,
        "closedAt": _time(case.closed_at),
        "proposal": None
        if proposal is None
        else {
            "disposition": proposal.disposition.value,
            "rationale": proposal.rationale,
            "proposedBy": proposal.proposed_by,
            "proposedAt": proposal.proposed_at.isoformat(),
        },
        "decision": None
        if decision is None
        else {
            "approved": decision.approved,
            "decidedBy": decision.decided_by,
            "roles": sorted(decision.roles),
            "decidedAt": decision.decided_at.isoformat(),
            "reason": decision.reason,
        },
    }


def case_from_data(data: Mapping[str, Any]) -> Case:
    proposal, decision = data.get("proposal"), data.get("decision")
    return Case(
        case_id=uuid.UUID(data["caseId"]),
        subject_id=uuid.UUID(data["subjectId"]),
        status=CaseStatus(data["status"]),
        band=Band(data["band"]),
        priority=data["priority"],
        opened_at=datetime.fromisoformat(data["openedAt"]),
        sla_due_at=datetime.fromisoformat(data["slaDueAt"]),
        alert_count=data["alertCount"],
        version=data["version"],
        queue=data["queue"],
        typologies=tuple(data["typologies"]),
        assignee=data["assignee"],
        proposal=None
        if proposal is None
        else Proposal(
            Disposition(proposal["disposition"]),
            proposal["rationale"],
            proposal["proposedBy"],
            datetime.fromisoformat(proposal["proposedAt"]),
        ),
        decision=None
        if decision is None
        else Decision(
            decision["approved"],
            decision["decidedBy"],
            frozenset(decision["roles"]),
            datetime.fromisoformat(decision["decidedAt"]),
            decision["reason"],
        ),
        sla_breached_at=_parse_time(data.get("slaBreachedAt")),
        closed_at=_parse_time(data.get("closedAt")),
    )


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None
