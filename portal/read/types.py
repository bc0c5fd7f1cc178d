"""The read side's GraphQL types: cases, subjects, events, assessments with their
explanations, alerts and audit records.

Each type that can be fetched by id is a Relay ``Node`` whose global id is opaque to
clients. Resolving an id goes through the caller's own session, where row-level
security hides every other tenant's rows: an id of another tenant, or of nothing,
resolves to null, and the answer is the same in both cases.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Self, TypeVar

import strawberry
from strawberry import relay
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON

from adapters.read_store import (
    AssessmentRow,
    AuditRow,
    CaseRow,
    CommentRow,
    EventRow,
    EvidenceRow,
    SubjectRow,
)
from domain.cases import Case as DomainCase
from domain.cases import Disposition
from domain.scoring import AlertRecord
from portal.read.access import AUDIT_READERS, READERS, reader_for
from portal.read.reader import Reader

Row = TypeVar("Row")
N = TypeVar("N")


@strawberry.enum(description="Where a case stands in its review.")
class CaseStatus(Enum):
    OPEN = "open"
    IN_REVIEW = "in_review"
    PENDING_APPROVAL = "pending_approval"
    ESCALATED = "escalated"
    CLOSED = "closed"


# The domain's dispositions, as the schema names them.
CaseDisposition = strawberry.enum(
    Disposition, name="CaseDisposition", description="How a review concludes."
)


@strawberry.enum(description="The gravity of a score, from its thresholds.")
class RiskBand(Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


@strawberry.type(description="What one rule saw when it was evaluated on one event.")
class RuleOutcome:
    code: str
    typology: str | None
    concerns: str = strawberry.field(description="originator or beneficiary")
    fired: bool
    points: int = strawberry.field(description="Points added to the score when fired.")
    observed: JSON = strawberry.field(description="The values the rule read, by name.")
    thresholds: JSON = strawberry.field(description="The thresholds it compared them with.")
    reason: str = strawberry.field(description="Why it fired, or why not, in words.")
    error: str | None = strawberry.field(description="The error it met on this event, if any.")


@strawberry.type(description="Why an event scored what it scored: every rule of the ruleset.")
class Explanation:
    score: int
    band: RiskBand
    alert: bool
    rules: list[RuleOutcome]

    @classmethod
    def of(cls, document: dict[str, Any]) -> Self:
        return cls(
            score=int(document["score"]),
            band=RiskBand(document["band"]),
            alert=bool(document["alert"]),
            rules=[
                RuleOutcome(
                    code=str(rule["code"]),
                    typology=rule.get("typology"),
                    concerns=str(rule.get("concerns", "")),
                    fired=bool(rule["fired"]),
                    points=int(rule.get("points", 0)),
                    observed=rule.get("observed", {}),
                    thresholds=rule.get("thresholds", {}),
                    reason=str(rule.get("reason", "")),
                    error=rule.get("error"),
                )
                for rule in document.get("rules", [])
            ],
        )


def _uuids(node_ids: Iterable[str]) -> list[uuid.UUID | None]:
    found: list[uuid.UUID | None] = []
    for node_id in node_ids:
        try:
            found.append(uuid.UUID(node_id))
        except ValueError:
            found.append(None)
    return found


async def _resolve(
    info: strawberry.Info,
    node_ids: Iterable[str],
    loader: Callable[[Reader], DataLoader[uuid.UUID, Row | None]],
    make: Callable[[Row], N],
    *,
    audited: str | None = None,
) -> list[N | None]:
    """Nodes by id through the caller's loaders, None for an id that is not visible; a
    regulator's read of an ``audited`` entity is noted."""
    reader = reader_for(info, READERS)
    found: list[N | None] = []
    for key in _uuids(node_ids):
        row = None if key is None else await loader(reader).load(key)
        if row is None or key is None:
            found.append(None)
            continue
        if audited is not None:
            reader.note_read(audited, key, audited)
        found.append(make(row))
    return found


@strawberry.type(description="An account or a customer that events are about.")
class Subject(relay.Node):
    id: relay.NodeID[str]
    kind: str
    external_ref: str = strawberry.field(description="The reference the institution uses.")
    attributes: JSON
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, row: SubjectRow) -> Self:
        return cls(
            id=str(row.subject_id),
            kind=row.kind,
            external_ref=row.external_ref,
            attributes=JSON(row.attributes),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: strawberry.Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await _resolve(info, node_ids, lambda reader: reader.subjects, cls.of)

    @strawberry.field(description="Events the subject sent or received, newest first.")
    async def events(
        self, info: strawberry.Info, first: int = 20, after: str | None = None
    ) -> relay.Connection[Event]:
        from portal.read.queries import event_page

        return await event_page(info, first, after, subject_id=uuid.UUID(self.id))

    @strawberry.field(description="Assessments of events the subject sent, newest first.")
    async def assessments(
        self, info: strawberry.Info, first: int = 20, after: str | None = None
    ) -> relay.Connection[RiskAssessment]:
        from portal.read.queries import assessment_page

        return await assessment_page(info, uuid.UUID(self.id), first, after)


@strawberry.type(description="A compliance event, as stored when it was accepted.")
class Event(relay.Node):
    id: relay.NodeID[str]
    type: str
    occurred_at: datetime
    received_at: datetime
    amount: str | None = strawberry.field(description="A decimal string, never a float.")
    currency: str | None
    payload: JSON = strawberry.field(description="The event's data as it was sent.")
    subject_id: strawberry.Private[uuid.UUID]
    counterparty_id: strawberry.Private[uuid.UUID | None]

    @classmethod
    def of(cls, row: EventRow) -> Self:
        return cls(
            id=str(row.event_id),
            type=row.event_type,
            occurred_at=row.occurred_at,
            received_at=row.received_at,
            amount=None if row.amount is None else f"{row.amount.normalize():f}",
            currency=None if row.currency is None else row.currency.strip(),
            payload=JSON(row.payload),
            subject_id=row.subject_id,
            counterparty_id=row.counterparty_id,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: strawberry.Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await _resolve(info, node_ids, lambda reader: reader.events, cls.of)

    @strawberry.field
    async def subject(self, info: strawberry.Info) -> Subject | None:
        row = await reader_for(info, READERS).subjects.load(self.subject_id)
        return None if row is None else Subject.of(row)

    @strawberry.field
    async def counterparty(self, info: strawberry.Info) -> Subject | None:
        if self.counterparty_id is None:
            return None
        row = await reader_for(info, READERS).subjects.load(self.counterparty_id)
        return None if row is None else Subject.of(row)


@strawberry.type(name="RiskAssessment", description="The score of one event by one ruleset.")
class RiskAssessment(relay.Node):
    id: relay.NodeID[str]
    ruleset_version: int
    score: int
    band: RiskBand
    alert: bool
    scored_at: datetime
    explanation: Explanation
    event_id: strawberry.Private[uuid.UUID]

    @classmethod
    def of(cls, row: AssessmentRow) -> Self:
        return cls(
            id=str(row.assessment_id),
            ruleset_version=row.ruleset_version,
            score=row.score,
            band=RiskBand(row.band),
            alert=row.alert,
            scored_at=row.scored_at,
            explanation=Explanation.of(row.explanation),
            event_id=row.event_id,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: strawberry.Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await _resolve(
            info, node_ids, lambda reader: reader.assessments, cls.of, audited="assessment"
        )

    @strawberry.field
    async def event(self, info: strawberry.Info) -> Event | None:
        row = await reader_for(info, READERS).events.load(self.event_id)
        return None if row is None else Event.of(row)


@strawberry.type(description="An account whose own rules reached the alert threshold.")
class Alert(relay.Node):
    id: relay.NodeID[str]
    score: int
    band: RiskBand
    typologies: list[str]
    created_at: datetime
    assessment_id: strawberry.Private[uuid.UUID]
    event_id: strawberry.Private[uuid.UUID]
    case_id: strawberry.Private[uuid.UUID]

    @classmethod
    def of(cls, row: AlertRecord) -> Self:
        return cls(
            id=str(row.alert_id),
            score=row.score,
            band=RiskBand(row.band),
            typologies=list(row.typologies),
            created_at=row.created_at,
            assessment_id=row.assessment_id,
            event_id=row.event_id,
            case_id=row.case_id,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: strawberry.Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await _resolve(info, node_ids, lambda reader: reader.alerts, cls.of)

    @strawberry.field
    async def assessment(self, info: strawberry.Info) -> RiskAssessment | None:
        reader = reader_for(info, READERS)
        row = await reader.assessments.load(self.assessment_id)
        if row is None:
            return None
        reader.note_read("assessment", row.assessment_id, "alert.assessment")
        return RiskAssessment.of(row)

    @strawberry.field
    async def event(self, info: strawberry.Info) -> Event | None:
        row = await reader_for(info, READERS).events.load(self.event_id)
        return None if row is None else Event.of(row)


@strawberry.type(description="An analyst's proposed conclusion, waiting for a supervisor.")
class CaseProposal:
    disposition: Disposition
    rationale: str
    proposed_by: str
    proposed_at: datetime


@strawberry.type(description="A supervisor's answer to a proposal.")
class CaseDecision:
    approved: bool
    decided_by: str
    decided_at: datetime
    reason: str | None


@strawberry.type(description="An analyst's note on a case, in its latest version.")
class CaseComment:
    comment_id: strawberry.ID
    version: int = strawberry.field(description="1 when written; each edit adds one.")
    body: str
    author: str
    written_at: datetime

    @classmethod
    def of(cls, row: CommentRow) -> Self:
        return cls(
            comment_id=strawberry.ID(str(row.comment_id)),
            version=row.version,
            body=row.body,
            author=row.author,
            written_at=row.written_at,
        )


@strawberry.type(description="A document or URL put on a case, with the SHA-256 of its content.")
class CaseEvidence:
    evidence_id: strawberry.ID
    kind: str = strawberry.field(description="document or url")
    reference: str = strawberry.field(
        description="A document id or a URL: show it as text, never follow it as a link."
    )
    sha256: str = strawberry.field(description="64 lower-case hex digits.")
    description: str
    added_by: str
    added_at: datetime

    @classmethod
    def of(cls, row: EvidenceRow) -> Self:
        return cls(
            evidence_id=strawberry.ID(str(row.evidence_id)),
            kind=row.kind,
            reference=row.reference,
            sha256=row.sha256.hex(),
            description=row.description,
            added_by=row.added_by,
            added_at=row.added_at,
        )


@strawberry.type(description="What analysts review: the alerts of one subject.")
class Case(relay.Node):
    id: relay.NodeID[str]
    status: CaseStatus
    band: RiskBand
    priority: int = strawberry.field(description="Higher first; the band dominates.")
    opened_at: datetime
    updated_at: datetime
    sla_due_at: datetime
    alert_count: int
    version: int = strawberry.field(description="Send it back as a step's expectedVersion.")
    queue: str
    typologies: list[str] = strawberry.field(description="Of every alert the case holds.")
    assignee: str | None = strawberry.field(description="The analyst who holds the case.")
    proposal: CaseProposal | None
    decision: CaseDecision | None = strawberry.field(description="The last answer to a proposal.")
    closed_at: datetime | None
    sla_breached_at: datetime | None = strawberry.field(
        description="When the SLA sweep flagged the case as past its due time."
    )
    subject_id: strawberry.Private[uuid.UUID]

    @classmethod
    def of(cls, row: CaseRow) -> Self:
        return cls(
            id=str(row.case_id),
            status=CaseStatus(row.status),
            band=RiskBand(row.band),
            priority=row.priority,
            opened_at=row.opened_at,
            updated_at=row.updated_at,
            sla_due_at=row.sla_due_at,
            alert_count=row.alert_count,
            version=row.version,
            queue=row.queue,
            typologies=list(row.typologies),
            assignee=row.assignee,
            proposal=_proposal(row),
            decision=_decision(row),
            closed_at=row.closed_at,
            sla_breached_at=row.sla_breached_at,
            subject_id=row.subject_id,
        )

    @classmethod
    def of_case(cls, case: DomainCase, updated_at: datetime) -> Self:
        """The case as a review step left it (the step's answer, kept for its retries)."""
        proposal, decision = case.proposal, case.decision
        return cls(
            id=str(case.case_id),
            status=CaseStatus(case.status.value),
            band=RiskBand(case.band.value),
            priority=case.priority,
            opened_at=case.opened_at,
            updated_at=updated_at,
            sla_due_at=case.sla_due_at,
            alert_count=case.alert_count,
            version=case.version,
            queue=case.queue,
            typologies=list(case.typologies),
            assignee=case.assignee,
            proposal=None
            if proposal is None
            else CaseProposal(
                disposition=proposal.disposition,
                rationale=proposal.rationale,
                proposed_by=proposal.proposed_by,
                proposed_at=proposal.proposed_at,
            ),
            decision=None
            if decision is None
            else CaseDecision(
                approved=decision.approved,
                decided_by=decision.decided_by,
                decided_at=decision.decided_at,
                reason=decision.reason,
            ),
            closed_at=case.closed_at,
            sla_breached_at=case.sla_breached_at,
            subject_id=case.subject_id,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: strawberry.Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await _resolve(info, node_ids, lambda reader: reader.cases, cls.of, audited="case")

    @strawberry.field(description="Whether the SLA due time has passed on a case not closed.")
    def sla_breached(self) -> bool:
        return self.status is not CaseStatus.CLOSED and self.sla_due_at < datetime.now(UTC)

    @strawberry.field
    async def subject(self, info: strawberry.Info) -> Subject | None:
        row = await reader_for(info, READERS).subjects.load(self.subject_id)
        return None if row is None else Subject.of(row)

    @strawberry.field(description="The latest assessment that raised an alert on the case.")
    async def latest_assessment(self, info: strawberry.Info) -> RiskAssessment | None:
        reader = reader_for(info, READERS)
        row = await reader.latest_assessment.load(uuid.UUID(self.id))
        if row is None:
            return None
        reader.note_read("assessment", row.assessment_id, "case.latestAssessment")
        return RiskAssessment.of(row)

    @strawberry.field(description="The case's comments, oldest first (at most 100).")
    async def comments(self, info: strawberry.Info) -> list[CaseComment]:
        rows = await reader_for(info, READERS).case_comments.load(uuid.UUID(self.id))
        return [CaseComment.of(row) for row in rows]

    @strawberry.field(description="The evidence put on the case, oldest first (at most 100).")
    async def evidence(self, info: strawberry.Info) -> list[CaseEvidence]:
        rows = await reader_for(info, READERS).case_evidence.load(uuid.UUID(self.id))
        return [CaseEvidence.of(row) for row in rows]

    @strawberry.field(description="The case's alerts, newest first (at most 100).")
    async def alerts(self, info: strawberry.Info) -> list[Alert]:
        rows = await reader_for(info, READERS).case_alerts.load(uuid.UUID(self.id))
        return [Alert.of(row) for row in rows]

    @strawberry.field(description="The case's audit records (supervisor, regulator, admin).")
    async def audit_trail(
        self, info: strawberry.Info, first: int = 20, after: str | None = None
    ) -> relay.Connection[AuditRecord]:  # type: ignore[type-var]
        from portal.read.queries import audit_page

        reader_for(info, AUDIT_READERS)
        return await audit_page(info, "case", self.id, first, after)


def _proposal(row: CaseRow) -> CaseProposal | None:
    if row.disposition is None or row.proposed_by is None or row.proposed_at is None:
        return None
    return CaseProposal(
        disposition=Disposition(row.disposition),
        rationale=row.rationale or "",
        proposed_by=row.proposed_by,
        proposed_at=row.proposed_at,
    )


def _decision(row: CaseRow) -> CaseDecision | None:
    if row.decision is None or row.decided_by is None or row.decided_at is None:
        return None
    return CaseDecision(
        approved=row.decision == "approved",
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        reason=row.decision_reason,
    )


@strawberry.type(description="One record of the tenant's hash-chained audit trail.")
class AuditRecord:
    seq: int = strawberry.field(description="The record's place in the tenant's chain.")
    record_id: strawberry.ID
    recorded_at: datetime
    actor: str
    action: str
    entity_type: str
    entity_id: str
    correlation_id: str | None
    details: JSON

    @classmethod
    def of(cls, row: AuditRow) -> Self:
        return cls(
            seq=row.seq,
            record_id=strawberry.ID(str(row.record_id)),
            recorded_at=row.recorded_at,
            actor=row.actor,
            action=row.action,
            entity_type=row.entity_type,
            entity_id=row.entity_id,
            correlation_id=row.correlation_id,
            details=JSON(row.details),
        )


# The node types, by their GraphQL name, and the audit trail's name for each.
# (Any: mypy cannot see that each type's resolve_nodes is a coroutine.)
NODE_TYPES: dict[str, Any] = {
    "Case": Case,
    "Subject": Subject,
    "Event": Event,
    "RiskAssessment": RiskAssessment,
    "Alert": Alert,
}
AUDITED_ENTITIES = {
    "Case": "case",
    "Event": "event",
    "RiskAssessment": "assessment",
    "Alert": "alert",
}
