"""The PostgreSQL side of scoring: events as scoring reads them, ruleset versions,
assessments with their explanations, alerts, cases and scoring failures.

Every statement runs in the unit of work's transaction, under its tenant; row-level
security scopes them, and each one also names the tenant so that the indexes that lead
with ``tenant_id`` are used. Uniqueness that the services rely on (one assessment per
event and ruleset version, one open case per subject, one active ruleset per tenant) is
enforced by the schema, and the conflicting insert answers False rather than failing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Executable, delete, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters import tables
from adapters.database import translate_errors
from adapters.features import history_features
from domain.cases import Case, CaseStatus
from domain.errors import TransientFailure
from domain.reference import CURRENCY_MINOR_UNITS
from domain.rules import Band, Evaluation, RuleOutcome, Ruleset
from domain.scoring import AlertRecord, AssessmentRecord, Features, StoredEvent, StoredRuleset

_events = tables.events
_rulesets = tables.rulesets
_assessments = tables.assessments
_cases = tables.cases


def explanation_document(evaluation: Evaluation) -> dict[str, Any]:
    """What an assessment's explanation holds: the score, and what each rule saw."""
    return {
        "score": evaluation.score,
        "band": evaluation.band.value,
        "alert": evaluation.alert,
        "rules": [_outcome_document(outcome) for outcome in evaluation.outcomes],
    }


def _outcome_document(outcome: RuleOutcome) -> dict[str, Any]:
    return {
        "code": outcome.code,
        "typology": outcome.typology,
        "concerns": outcome.concerns.value,
        "fired": outcome.fired,
        "points": outcome.points,
        "observed": dict(outcome.observed),
        "thresholds": dict(outcome.thresholds),
        "reason": outcome.reason,
        "error": outcome.error,
    }


class SqlScoringStore:
    def __init__(self, connection: AsyncConnection, tenant_id: uuid.UUID) -> None:
        self._connection = connection
        self._tenant_id = tenant_id

    # -- events and features ---------------------------------------------------------

    async def load_event(self, event_id: uuid.UUID) -> StoredEvent | None:
        subject = tables.subjects.alias("subject")
        counterparty = tables.subjects.alias("counterparty")
        query = (
            select(
                _events.c.event_id,
                _events.c.event_type,
                _events.c.occurred_at,
                _events.c.subject_id,
                _events.c.counterparty_id,
                _events.c.amount,
                _events.c.currency,
                _events.c.payload,
                subject.c.attributes.label("subject_attributes"),
                counterparty.c.attributes.label("counterparty_attributes"),
            )
            .join(
                subject,
                (subject.c.tenant_id == _events.c.tenant_id)
                & (subject.c.subject_id == _events.c.subject_id),
            )
            .outerjoin(
                counterparty,
                (counterparty.c.tenant_id == _events.c.tenant_id)
                & (counterparty.c.subject_id == _events.c.counterparty_id),
            )
            .where(_events.c.tenant_id == self._tenant_id, _events.c.event_id == event_id)
        )
        row = await self._first(query)
        if row is None:
            return None
        currency = row.currency.strip() if row.currency is not None else None
        amount = row.amount
        if amount is not None and currency is not None:
            # The column keeps four decimals; the event said "125.50", so say it again.
            amount = amount.quantize(Decimal(1).scaleb(-CURRENCY_MINOR_UNITS[currency]))
        return StoredEvent(
            event_id=row.event_id,
            event_type=row.event_type,
            occurred_at=row.occurred_at,
            subject_id=row.subject_id,
            counterparty_id=row.counterparty_id,
            amount=amount,
            currency=currency,
            payload=row.payload,
            subject_attributes=row.subject_attributes or {},
            counterparty_attributes=row.counterparty_attributes or {},
        )

    async def features(self, event: StoredEvent, ruleset: Ruleset) -> tuple[Features, Features]:
        return await history_features(self._connection, self._tenant_id, event, ruleset)

    # -- rulesets ----------------------------------------------------------------------

    async def active_ruleset(self) -> StoredRuleset | None:
        return await self._ruleset(_rulesets.c.status == "active")

    async def ruleset(self, version: int) -> StoredRuleset | None:
        return await self._ruleset(_rulesets.c.version == version)

    async def latest_version(self) -> int:
        query = select(func.coalesce(func.max(_rulesets.c.version), 0)).where(
            _rulesets.c.tenant_id == self._tenant_id
        )
        with translate_errors():
            return int((await self._connection.execute(query)).scalar_one())

    async def add_ruleset(self, ruleset: StoredRuleset, actor: str) -> None:
        statement = insert(_rulesets).values(
            tenant_id=self._tenant_id,
            version=ruleset.version,
            document=dict(ruleset.document),
            document_hash=ruleset.document_hash,
            status="validated",
            created_by=actor,
        )
        inserted = await self._first(
            statement.on_conflict_do_nothing().returning(_rulesets.c.version)
        )
        if inserted is None:
            # Two installs computed the same next version: the service starts again.
            raise TransientFailure(f"ruleset version {ruleset.version} was taken concurrently")

    async def activate(self, version: int, actor: str) -> None:
        # Lock the tenant's versions first: a concurrent activation waits here and then
        # sees this one's outcome, instead of both retiring the same predecessor.
        await self._execute(
            select(_rulesets.c.version)
            .where(_rulesets.c.tenant_id == self._tenant_id)
            .with_for_update()
        )
        # Retire before activating: the one-active index is checked row by row.
        await self._execute(
            update(_rulesets)
            .where(
                _rulesets.c.tenant_id == self._tenant_id,
                _rulesets.c.status == "active",
                _rulesets.c.version != version,
            )
            .values(status="retired")
        )
        with translate_errors():
            result = await self._connection.execute(
                update(_rulesets)
                .where(_rulesets.c.tenant_id == self._tenant_id, _rulesets.c.version == version)
                .values(status="active", activated_at=func.now(), activated_by=actor)
                .returning(_rulesets.c.version)
            )
        if result.first() is None:
            raise LookupError(f"no ruleset version {version}")

    async def _ruleset(self, condition: ColumnElement[bool]) -> StoredRuleset | None:
        query = select(_rulesets.c.version, _rulesets.c.document, _rulesets.c.document_hash).where(
            _rulesets.c.tenant_id == self._tenant_id, condition
        )
        row = await self._first(query)
        if row is None:
            return None
        return StoredRuleset(row.version, row.document, bytes(row.document_hash))

    # -- assessments and alerts --------------------------------------------------------

    async def has_assessment(self, event_id: uuid.UUID, ruleset_version: int) -> bool:
        query = select(
            exists().where(
                _assessments.c.tenant_id == self._tenant_id,
                _assessments.c.event_id == event_id,
                _assessments.c.ruleset_version == ruleset_version,
            )
        )
        with translate_errors():
            return bool((await self._connection.execute(query)).scalar_one())

    async def add_assessment(self, record: AssessmentRecord) -> bool:
        evaluation = record.evaluation
        statement = (
            insert(_assessments)
            .values(
                tenant_id=self._tenant_id,
                assessment_id=record.assessment_id,
                event_id=record.event_id,
                ruleset_version=record.ruleset_version,
                scorer=record.scorer,
                score=evaluation.score,
                band=evaluation.band.value,
                alert=evaluation.alert,
                explanation=explanation_document(evaluation),
                context=_plain(record.context),
                scored_at=record.scored_at,
            )
            .on_conflict_do_nothing(index_elements=["tenant_id", "event_id", "ruleset_version"])
            .returning(_assessments.c.assessment_id)
        )
        return await self._first(statement) is not None

    async def add_alert(self, alert: AlertRecord) -> None:
        statement = insert(tables.alerts).values(
            tenant_id=self._tenant_id,
            alert_id=alert.alert_id,
            assessment_id=alert.assessment_id,
            event_id=alert.event_id,
            subject_id=alert.subject_id,
            case_id=alert.case_id,
            score=alert.score,
            band=alert.band,
            typologies=list(alert.typologies),
            created_at=alert.created_at,
        )
        await self._execute(statement)

    # -- cases -------------------------------------------------------------------------

    async def open_case(self, subject_id: uuid.UUID) -> Case | None:
        query = (
            select(_cases)
            .where(
                _cases.c.tenant_id == self._tenant_id,
                _cases.c.subject_id == subject_id,
                _cases.c.status != CaseStatus.CLOSED.value,
            )
            .with_for_update()
        )
        row = await self._first(query)
        if row is None:
            return None
        return Case(
            case_id=row.case_id,
            subject_id=row.subject_id,
            status=CaseStatus(row.status),
            band=Band(row.band),
            priority=row.priority,
            opened_at=row.opened_at,
            sla_due_at=row.sla_due_at,
            alert_count=row.alert_count,
            version=row.version,
        )

    async def add_case(self, case: Case) -> bool:
        statement = (
            insert(_cases)
            .values(
                tenant_id=self._tenant_id,
                case_id=case.case_id,
                subject_id=case.subject_id,
                status=case.status.value,
                band=case.band.value,
                priority=case.priority,
                opened_at=case.opened_at,
                updated_at=case.opened_at,
                sla_due_at=case.sla_due_at,
                alert_count=case.alert_count,
                version=case.version,
            )
            # The arbiter is the partial unique index: one case per subject not closed.
            .on_conflict_do_nothing(
                index_elements=["tenant_id", "subject_id"],
                index_where=text("status <> 'closed'"),
            )
            .returning(_cases.c.case_id)
        )
        return await self._first(statement) is not None

    async def save_case(self, case: Case) -> None:
        statement = (
            update(_cases)
            .where(_cases.c.tenant_id == self._tenant_id, _cases.c.case_id == case.case_id)
            .values(
                band=case.band.value,
                priority=case.priority,
                sla_due_at=case.sla_due_at,
                alert_count=case.alert_count,
                version=case.version,
                updated_at=datetime.now(UTC),
            )
        )
        await self._execute(statement)

    # -- failures ----------------------------------------------------------------------

    async def record_failure(self, event_id: uuid.UUID, attempts: int, reason: str) -> None:
        values = insert(tables.scoring_failures).values(
            tenant_id=self._tenant_id, event_id=event_id, attempts=attempts, reason=reason
        )
        statement = values.on_conflict_do_update(
            index_elements=["tenant_id", "event_id"],
            set_={
                "attempts": values.excluded.attempts,
                "reason": values.excluded.reason,
                "failed_at": func.now(),
            },
        )
        await self._execute(statement)

    async def clear_failure(self, event_id: uuid.UUID) -> None:
        failures = tables.scoring_failures
        await self._execute(
            delete(failures).where(
                failures.c.tenant_id == self._tenant_id, failures.c.event_id == event_id
            )
        )

    # -- plumbing ----------------------------------------------------------------------

    async def _execute(self, statement: Executable) -> None:
        with translate_errors():
            _ = await self._connection.execute(statement)

    async def _first(self, statement: Executable) -> Any:
        with translate_errors():
            return (await self._connection.execute(statement)).first()


def _plain(context: Mapping[str, Any]) -> dict[str, Any]:
    """The context as JSON takes it; it holds only strings, integers and booleans."""
    return {
        key: _plain(value) if isinstance(value, Mapping) else value
        for key, value in context.items()
    }
