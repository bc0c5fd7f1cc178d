"""Alerts and cases: what analysts review.

One subject has at most one case that is not closed. An alert on a subject joins its
open case, which may raise the case's band and priority; otherwise the alert opens a
new case whose SLA due time follows from its band.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

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


def open_case(
    case_id: uuid.UUID,
    subject_id: uuid.UUID,
    band: Band,
    score: int,
    now: datetime,
    sla: Mapping[Band, timedelta] = DEFAULT_SLA,
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
    )


def join_alert(
    case: Case, band: Band, score: int, now: datetime, sla: Mapping[Band, timedelta] = DEFAULT_SLA
) -> Case:
    """A new alert on the case's subject: count it, and raise the band, the priority and
    the urgency of the SLA if the alert is graver than what the case held."""
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
    )
