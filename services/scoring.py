"""Score one event: features, rules, and in one transaction the assessment with its
explanation, the alerts and cases it causes, their audit records and messages.

Scoring is idempotent: an event has at most one assessment per ruleset version (a
unique key), so a second delivery or a second worker on the same event changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from domain.audit import AuditEntry
from domain.canonical import digest
from domain.cases import Case, join_alert, open_case
from domain.errors import TransientFailure, VigilError
from domain.ids import new_id
from domain.messages import OutboxMessage
from domain.ports import UnitOfWork, UnitOfWorkFactory
from domain.rules import Evaluation, Party
from domain.scoring import (
    AlertRecord,
    AssessmentRecord,
    ScorerProvider,
    StoredEvent,
    StoredRuleset,
    build_context,
)
from services.retry import with_retries

log = logging.getLogger(__name__)

RISK_ASSESSED = "risk.assessed"
CASE_OPENED = "case.opened"
CASE_UPDATED = "case.updated"
SYSTEM_ACTOR = "vigil:scoring"


class EventNotFound(VigilError):
    code = "EVENT_NOT_FOUND"


class NoActiveRuleset(VigilError):
    code = "NO_ACTIVE_RULESET"


class ScoreOutcome(StrEnum):
    ASSESSED = "assessed"
    ALREADY_ASSESSED = "already_assessed"


@dataclass(frozen=True, slots=True)
class ScoreResult:
    outcome: ScoreOutcome
    score: int | None = None
    alerted: int = 0


async def score_event(
    uow_factory: UnitOfWorkFactory,
    scorers: ScorerProvider,
    tenant_id: uuid.UUID,
    event_id: uuid.UUID,
    *,
    correlation_id: str | None = None,
    now: datetime | None = None,
) -> ScoreResult:
    (result,) = await score_events(
        uow_factory, scorers, tenant_id, [(event_id, correlation_id)], now=now
    )
    return result


async def score_events(
    uow_factory: UnitOfWorkFactory,
    scorers: ScorerProvider,
    tenant_id: uuid.UUID,
    events: Sequence[tuple[uuid.UUID, str | None]],
    *,
    now: datetime | None = None,
) -> list[ScoreResult]:
    """Score several events of one tenant (ids with their correlation ids) in one
    transaction, and answer for each, in order, what became of it.

    The reads are made for the whole list at once: one statement loads the events, one
    finds those already assessed, one computes every event's history features, and one
    stores the assessments. Alerts, which concern few events, then open or join cases
    event by event, in the order given. A tenant's scoring transactions commit one after
    another, since each moves the tenant's audit-chain head; one commit for a batch pays
    for that, and for the transaction, once.

    Any failure rolls the whole batch back and is raised: nothing of it is kept, and the
    caller scores each event alone to find out which one failed. An event listed twice
    is scored once; its second entry answers ``already_assessed``.
    """
    moment = now or datetime.now(UTC)
    async with uow_factory(tenant_id) as uow:
        results = await _score_all(uow, scorers, tenant_id, events, moment)
        if any(result.outcome is ScoreOutcome.ASSESSED for result in results):
            await uow.commit()
    return results


async def _score_all(
    uow: UnitOfWork,
    scorers: ScorerProvider,
    tenant_id: uuid.UUID,
    events: Sequence[tuple[uuid.UUID, str | None]],
    moment: datetime,
) -> list[ScoreResult]:
    """Score the events in the unit of work's transaction, without committing it."""
    store = uow.scoring
    ids = list(dict.fromkeys(event_id for event_id, _ in events))
    loaded = await store.load_events(ids)
    missing = [event_id for event_id in ids if event_id not in loaded]
    if missing:
        raise EventNotFound(f"no event {missing[0]}")
    stored = await store.active_ruleset()
    if stored is None:
        raise NoActiveRuleset("the tenant has no active ruleset")

    done = await store.assessed(ids, stored.version)
    todo = [loaded[event_id] for event_id in ids if event_id not in done]
    scorer = scorers.scorer_for(tenant_id, stored)
    features = await store.features_of(todo, scorers.parse(stored), scorer.needs)
    records = []
    for event, (originator, beneficiary) in zip(todo, features, strict=True):
        context = build_context(event, originator, beneficiary)
        records.append(
            AssessmentRecord(
                new_id(),
                event.event_id,
                stored.version,
                scorer.name,
                scorer.assess(context),
                context,
                moment,
            )
        )
    # A concurrent scorer may have stored some since we looked: those are left alone.
    stored_now = await store.add_assessments(records)

    correlation = dict(reversed(events))  # the first correlation id given for an event
    kept = [record for record in records if record.event_id in stored_now]
    alerts: list[_Alert] = []
    for record in kept:
        event = loaded[record.event_id]
        correlation_id = correlation.get(record.event_id)
        _record_assessment(uow, event, record, correlation_id)
        if record.evaluation.alert:
            alerts += _alerts_of(event, record, correlation_id)
    # Each alert locks its account's case until the commit. Taken in one order (by
    # account, then in event order) in every transaction, two batches meeting on the same
    # accounts wait for each other instead of deadlocking.
    alerts.sort(key=lambda alert: alert.subject_id.bytes)
    alerted: dict[uuid.UUID, int] = {}
    for alert in alerts:
        await _raise_alert(uow, alert)
        alerted[alert.record.event_id] = alerted.get(alert.record.event_id, 0) + 1

    scored: dict[uuid.UUID, ScoreResult] = {}
    for record in kept:
        evaluation = record.evaluation
        count = alerted.get(record.event_id, 0)
        scored[record.event_id] = ScoreResult(ScoreOutcome.ASSESSED, evaluation.score, count)
        log.debug(
            "event scored",
            extra={
                "tenant_id": str(tenant_id),
                "event_id": str(record.event_id),
                "score": evaluation.score,
                "band": evaluation.band.value,
                "alerts": count,
            },
        )
    await store.clear_failures([event_id for event_id in scored if loaded[event_id].scoring_failed])

    already = ScoreResult(ScoreOutcome.ALREADY_ASSESSED)
    return [scored.pop(event_id, already) for event_id, _ in events]


async def record_failure(
    uow_factory: UnitOfWorkFactory,
    tenant_id: uuid.UUID,
    event_id: uuid.UUID,
    attempts: int,
    reason: str,
) -> None:
    """Mark an event whose scoring keeps failing, so that it is visible and re-driven."""
    async with uow_factory(tenant_id) as uow:
        await uow.scoring.record_failure(event_id, attempts, reason[:1000])
        uow.record(
            AuditEntry(
                new_id(),
                SYSTEM_ACTOR,
                "scoring.failed",
                "event",
                str(event_id),
                None,
                {"attempts": attempts, "reason": reason[:1000]},
            )
        )
        await uow.commit()


def _record_assessment(
    uow: UnitOfWork, event: StoredEvent, record: AssessmentRecord, correlation_id: str | None
) -> None:
    evaluation = record.evaluation
    fired = [outcome.code for outcome in evaluation.outcomes if outcome.fired]
    uow.record(
        AuditEntry(
            new_id(),
            SYSTEM_ACTOR,
            "risk.assessed",
            "assessment",
            str(record.assessment_id),
            correlation_id,
            {
                "eventId": str(event.event_id),
                "rulesetVersion": record.ruleset_version,
                "score": evaluation.score,
                "band": evaluation.band.value,
                "rulesFired": fired,
                "contextHash": digest(record.context).hex(),
            },
        )
    )
    uow.publish(
        OutboxMessage(
            message_id=new_id(),
            message_type=RISK_ASSESSED,
            subject=f"assessment/{record.assessment_id}",
            ordering_key=event.event_id,
            time=record.scored_at,
            correlation_id=correlation_id,
            data={
                "assessmentId": str(record.assessment_id),
                "eventId": str(event.event_id),
                "rulesetVersion": record.ruleset_version,
                "score": evaluation.score,
                "band": evaluation.band.value,
                "alert": evaluation.alert,
                "rulesFired": fired,
            },
        )
    )


@dataclass(frozen=True, slots=True)
class _Alert:
    """One account an assessment alerts on, with the typologies of its fired rules."""

    record: AssessmentRecord
    subject_id: uuid.UUID
    typologies: tuple[str, ...]
    correlation_id: str | None


def _alerts_of(
    event: StoredEvent, record: AssessmentRecord, correlation_id: str | None
) -> list[_Alert]:
    """One alert per account the fired rules concern."""
    evaluation = record.evaluation
    found = []
    for party in evaluation.concerned():
        subject_id = event.subject_id if party is Party.ORIGINATOR else event.counterparty_id
        if subject_id is None:
            continue
        typologies = tuple(
            sorted({o.typology for o in evaluation.outcomes if o.fired and o.concerns is party})
        )
        found.append(_Alert(record, subject_id, typologies, correlation_id))
    return found


async def _raise_alert(uow: UnitOfWork, alert: _Alert) -> None:
    """The alert joins its account's case, or opens one."""
    record = alert.record
    evaluation = record.evaluation
    case, opened = await _case_for(
        uow, alert.subject_id, evaluation, alert.typologies, record.scored_at
    )
    stored = AlertRecord(
        new_id(),
        record.assessment_id,
        record.event_id,
        alert.subject_id,
        case.case_id,
        evaluation.score,
        evaluation.band.value,
        alert.typologies,
        record.scored_at,
    )
    await uow.scoring.add_alert(stored)
    _record_case_change(uow, case, stored, opened, alert.correlation_id)


async def _case_for(
    uow: UnitOfWork,
    subject_id: uuid.UUID,
    evaluation: Evaluation,
    typologies: tuple[str, ...],
    now: datetime,
) -> tuple[Case, bool]:
    """The subject's case that is not closed, joined by the alert, or a new one with the
    SLA and the queue of the tenant's case policy."""
    store = uow.scoring
    policy = await uow.cases.policy()
    band, score = evaluation.band, evaluation.score
    existing = await store.open_case(subject_id)
    if existing is not None:
        case = join_alert(existing, band, score, now, policy.sla, typologies=typologies)
        await store.save_case(case)
        return case, False
    queue = policy.queue_for(band, typologies)
    case = open_case(
        new_id(), subject_id, band, score, now, policy.sla, queue=queue, typologies=typologies
    )
    if not await store.add_case(case):
        # Another worker opened the subject's case since we looked: start again, and
        # the alert will join that case.
        raise TransientFailure("the subject's case was opened concurrently")
    return case, True


def _record_case_change(
    uow: UnitOfWork, case: Case, alert: AlertRecord, opened: bool, correlation_id: str | None
) -> None:
    action = CASE_OPENED if opened else CASE_UPDATED
    data: dict[str, Any] = {
        "caseId": str(case.case_id),
        "subjectId": str(case.subject_id),
        "status": case.status.value,
        "band": case.band.value,
        "priority": case.priority,
        "slaDueAt": case.sla_due_at.isoformat(),
        "alertCount": case.alert_count,
        "version": case.version,
        "queue": case.queue,
        "assignee": case.assignee,
        "alertId": str(alert.alert_id),
        "typologies": list(alert.typologies),
    }
    uow.record(
        AuditEntry(
            new_id(),
            SYSTEM_ACTOR,
            "alert.raised",
            "alert",
            str(alert.alert_id),
            correlation_id,
            {
                "caseId": str(case.case_id),
                "score": alert.score,
                "typologies": list(alert.typologies),
            },
        )
    )
    uow.record(
        AuditEntry(new_id(), SYSTEM_ACTOR, action, "case", str(case.case_id), correlation_id, data)
    )
    uow.publish(
        OutboxMessage(
            message_id=new_id(),
            message_type=action,
            subject=f"case/{case.case_id}",
            ordering_key=case.case_id,
            time=alert.created_at,
            correlation_id=correlation_id,
            data=data,
        )
    )


async def install_ruleset(
    uow_factory: UnitOfWorkFactory,
    scorers: ScorerProvider,
    tenant_id: uuid.UUID,
    document: dict[str, Any],
    actor: str,
    *,
    activate: bool,
) -> int:
    """Validate a ruleset document and store it as the tenant's next version; with
    ``activate``, make it the one active version. A document that does not validate is
    refused (``InvalidRuleset``) and never stored."""
    return await with_retries(
        lambda: _install(uow_factory, scorers, tenant_id, document, actor, activate),
        name="install_ruleset",
    )


async def _install(
    uow_factory: UnitOfWorkFactory,
    scorers: ScorerProvider,
    tenant_id: uuid.UUID,
    document: dict[str, Any],
    actor: str,
    activate: bool,
) -> int:
    async with uow_factory(tenant_id) as uow:
        version = await uow.scoring.latest_version() + 1
        stored = StoredRuleset(version, document, digest(document))
        scorers.scorer_for(tenant_id, stored)  # compiles and dry-runs every rule
        await uow.scoring.add_ruleset(stored, actor)
        uow.record(
            AuditEntry(
                new_id(),
                actor,
                "ruleset.validated",
                "ruleset",
                str(version),
                None,
                {"version": version, "documentHash": stored.document_hash.hex()},
            )
        )
        if activate:
            await _activate(uow, scorers, stored, actor)
        await uow.commit()
    return version


async def activate_ruleset(
    uow_factory: UnitOfWorkFactory,
    scorers: ScorerProvider,
    tenant_id: uuid.UUID,
    version: int,
    actor: str,
) -> None:
    async with uow_factory(tenant_id) as uow:
        stored = await uow.scoring.ruleset(version)
        if stored is None:
            raise NoActiveRuleset(f"no ruleset version {version}")
        await _activate(uow, scorers, stored, actor)
        await uow.commit()


async def _activate(
    uow: UnitOfWork, scorers: ScorerProvider, stored: StoredRuleset, actor: str
) -> None:
    scorers.scorer_for(uow.tenant_id, stored)  # validated again: never activate a bad one
    previous = await uow.scoring.active_ruleset()
    await uow.scoring.activate(stored.version, actor)
    uow.record(
        AuditEntry(
            new_id(),
            actor,
            "ruleset.activated",
            "ruleset",
            str(stored.version),
            None,
            {
                "version": stored.version,
                "documentHash": stored.document_hash.hex(),
                "previousVersion": previous.version if previous else None,
            },
        )
    )
