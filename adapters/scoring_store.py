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
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BindParameter,
    Boolean,
    Executable,
    any_,
    bindparam,
    column,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters import tables
from adapters.case_store import case_of_row
from adapters.database import json_text, translate_errors
from adapters.features import history_features
from domain.cases import Case, CaseStatus
from domain.errors import TransientFailure
from domain.reference import CURRENCY_MINOR_UNITS
from domain.rules import Evaluation, RuleOutcome, Ruleset
from domain.scoring import (
    ALL_FEATURES,
    AlertRecord,
    AssessmentRecord,
    FeatureNeeds,
    Features,
    StoredEvent,
    StoredRuleset,
)

_events = tables.events
_rulesets = tables.rulesets
_assessments = tables.assessments
_cases = tables.cases
_failures = tables.scoring_failures

# Statements are built once and executed with parameters, so that SQLAlchemy caches
# their compiled form; a statement built per call is compiled anew every time, which
# cost more CPU than anything else a scored event does in Python.
_TENANT: BindParameter[uuid.UUID] = bindparam("tenant_id")
_VERSION: BindParameter[int] = bindparam("version")
# An UPDATE takes a parameter named after a column of its table as a value to SET, so
# its WHERE parameters have names of their own.
_WHERE_TENANT: BindParameter[uuid.UUID] = bindparam("where_tenant_id")
_WHERE_VERSION: BindParameter[int] = bindparam("where_version")

_EVENT_IDS = bindparam("event_ids", type_=ARRAY(UUID(as_uuid=True)))
# Each wanted event by its primary key, and its accounts' attributes by theirs, whatever
# the table statistics say. Written as a join, the planner read a new tenant's events
# through stale statistics that gave it a few hundred subjects, and hashed all of its
# subjects twice for every batch (12 ms a batch of 13 events, the largest cost of the
# whole pipeline in the database). OFFSET 0 keeps the lateral lookup a probe per id,
# and the scalar subqueries are always probes.
_LOAD_EVENTS = text("""
SELECT e.event_id, e.event_type, e.occurred_at, e.subject_id, e.counterparty_id, e.amount,
       e.currency, e.payload,
       (SELECT s.attributes FROM subjects s
        WHERE s.tenant_id = e.tenant_id AND s.subject_id = e.subject_id) AS subject_attributes,
       (SELECT s.attributes FROM subjects s
        WHERE s.tenant_id = e.tenant_id AND s.subject_id = e.counterparty_id)
           AS counterparty_attributes,
       -- Whether a scoring failure is recorded, so that scoring clears it only then. A
       -- scalar subquery, since EXISTS may become a hashed scan of every failure.
       coalesce((SELECT true FROM scoring_failures f
                 WHERE f.tenant_id = e.tenant_id AND f.event_id = e.event_id), false)
           AS scoring_failed
FROM unnest(CAST(:event_ids AS uuid[])) AS wanted (event_id)
CROSS JOIN LATERAL (
    SELECT * FROM events x
    WHERE x.tenant_id = :tenant_id AND x.event_id = wanted.event_id
    OFFSET 0
) AS e
""").columns(
    *(
        _events.c[name]
        for name in (
            "event_id",
            "event_type",
            "occurred_at",
            "subject_id",
            "counterparty_id",
            "amount",
            "currency",
            "payload",
        )
    ),
    column("subject_attributes", tables.subjects.c.attributes.type),
    column("counterparty_attributes", tables.subjects.c.attributes.type),
    column("scoring_failed", Boolean()),
)

_RULESET_COLUMNS = select(_rulesets.c.version, _rulesets.c.document, _rulesets.c.document_hash)
_ACTIVE_RULESET = _RULESET_COLUMNS.where(
    _rulesets.c.tenant_id == _TENANT, _rulesets.c.status == "active"
)
_RULESET = _RULESET_COLUMNS.where(_rulesets.c.tenant_id == _TENANT, _rulesets.c.version == _VERSION)
_LATEST_VERSION = select(func.coalesce(func.max(_rulesets.c.version), 0)).where(
    _rulesets.c.tenant_id == _TENANT
)
# Executed with the row's columns as parameters, as ingest's inserts are.
_ADD_RULESET = insert(_rulesets).on_conflict_do_nothing().returning(_rulesets.c.version)
_LOCK_RULESETS = (
    select(_rulesets.c.version).where(_rulesets.c.tenant_id == _TENANT).with_for_update()
)
_RETIRE_OTHERS = (
    update(_rulesets)
    .where(
        _rulesets.c.tenant_id == _WHERE_TENANT,
        _rulesets.c.status == "active",
        _rulesets.c.version != _WHERE_VERSION,
    )
    .values(status="retired")
)
_ACTIVATE = (
    update(_rulesets)
    .where(_rulesets.c.tenant_id == _WHERE_TENANT, _rulesets.c.version == _WHERE_VERSION)
    .values(
        status="active",
        activated_at=func.now(),
        activated_by=bindparam("actor", type_=_rulesets.c.activated_by.type),
    )
    .returning(_rulesets.c.version)
)

# A probe by key for each id, like _LOAD_EVENTS: as ``event_id = ANY(...)`` the planner,
# told by old statistics that the tenant had no assessments, read all of them for
# every batch (12 ms a batch, the largest cost in the database in one replay).
_ASSESSED = text("""
SELECT a.event_id
FROM unnest(CAST(:event_ids AS uuid[])) AS wanted (event_id)
CROSS JOIN LATERAL (
    SELECT x.event_id FROM assessments x
    WHERE x.tenant_id = :tenant_id AND x.event_id = wanted.event_id
      AND x.ruleset_version = :version
    OFFSET 0
) AS a
""")
# A batch's assessments as one array per column: one statement text whatever the batch
# size (SQLAlchemy's multi-row VALUES made a new statement, prepared and planned anew,
# for every size), its JSON written by msgspec.
_ADD_ASSESSMENTS = text("""
INSERT INTO assessments (tenant_id, assessment_id, event_id, ruleset_version, scorer, score,
                         band, alert, explanation, context, scored_at)
SELECT :tenant_id, a.assessment_id, a.event_id, a.ruleset_version, a.scorer, a.score, a.band,
       a.alert, a.explanation, a.context, a.scored_at
FROM unnest(CAST(:assessment_ids AS uuid[]), CAST(:event_ids AS uuid[]),
            CAST(:versions AS integer[]), CAST(:scorers AS text[]), CAST(:scores AS integer[]),
            CAST(:bands AS text[]), CAST(:alerts AS boolean[]),
            CAST(:explanations AS json[]), CAST(:contexts AS json[]),
            CAST(:scored_ats AS timestamptz[]))
    AS a (assessment_id, event_id, ruleset_version, scorer, score, band, alert, explanation,
          context, scored_at)
ON CONFLICT (tenant_id, event_id, ruleset_version) DO NOTHING
RETURNING event_id
""")
_CLEAR_FAILURES = delete(_failures).where(
    _failures.c.tenant_id == _TENANT, _failures.c.event_id == any_(_EVENT_IDS)
)
_ADD_ALERT = insert(tables.alerts)

_OPEN_CASE = (
    select(_cases)
    .where(
        _cases.c.tenant_id == _TENANT,
        _cases.c.subject_id == bindparam("subject_id"),
        _cases.c.status != CaseStatus.CLOSED.value,
    )
    .with_for_update()
)
_ADD_CASE = (
    insert(_cases)
    # The arbiter is the partial unique index: one case per subject not closed.
    .on_conflict_do_nothing(
        index_elements=["tenant_id", "subject_id"],
        index_where=text("status <> 'closed'"),
    )
    .returning(_cases.c.case_id)
)
_SAVE_CASE = (
    update(_cases)
    .where(_cases.c.tenant_id == _WHERE_TENANT, _cases.c.case_id == bindparam("where_case_id"))
    .values(
        {
            column: bindparam(f"new_{column}", type_=_cases.c[column].type)
            for column in (
                "band",
                "priority",
                "sla_due_at",
                "alert_count",
                "version",
                "typologies",
                "updated_at",
            )
        }
    )
)

_FAILURE_ROWS = insert(_failures)
_RECORD_FAILURE = _FAILURE_ROWS.on_conflict_do_update(
    index_elements=["tenant_id", "event_id"],
    set_={
        "attempts": _FAILURE_ROWS.excluded.attempts,
        "reason": _FAILURE_ROWS.excluded.reason,
        "failed_at": func.now(),
    },
)


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

    async def load_events(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StoredEvent]:
        with translate_errors():
            result = await self._connection.execute(
                _LOAD_EVENTS, {"tenant_id": self._tenant_id, "event_ids": list(event_ids)}
            )
            return {row.event_id: _stored_event(row) for row in result}

    async def load_event(self, event_id: uuid.UUID) -> StoredEvent | None:
        return (await self.load_events([event_id])).get(event_id)

    async def features_of(
        self,
        events: Sequence[StoredEvent],
        ruleset: Ruleset,
        needs: FeatureNeeds = ALL_FEATURES,
    ) -> list[tuple[Features, Features]]:
        return await history_features(self._connection, self._tenant_id, events, ruleset, needs)

    async def features(self, event: StoredEvent, ruleset: Ruleset) -> tuple[Features, Features]:
        (found,) = await self.features_of([event], ruleset)
        return found

    # -- rulesets ----------------------------------------------------------------------

    async def active_ruleset(self) -> StoredRuleset | None:
        return _stored_ruleset(await self._first(_ACTIVE_RULESET))

    async def ruleset(self, version: int) -> StoredRuleset | None:
        return _stored_ruleset(await self._first(_RULESET, version=version))

    async def latest_version(self) -> int:
        with translate_errors():
            result = await self._connection.execute(_LATEST_VERSION, {"tenant_id": self._tenant_id})
            return int(result.scalar_one())

    async def add_ruleset(self, ruleset: StoredRuleset, actor: str) -> None:
        inserted = await self._first(
            _ADD_RULESET,
            version=ruleset.version,
            document=dict(ruleset.document),
            document_hash=ruleset.document_hash,
            status="validated",
            created_by=actor,
        )
        if inserted is None:
            # Two installs computed the same next version: the service starts again.
            raise TransientFailure(f"ruleset version {ruleset.version} was taken concurrently")

    async def activate(self, version: int, actor: str) -> None:
        # Lock the tenant's versions first: a concurrent activation waits here and then
        # sees this one's outcome, instead of both retiring the same predecessor.
        await self._execute(_LOCK_RULESETS)
        # Retire before activating: the one-active index is checked row by row.
        where = {"where_tenant_id": self._tenant_id, "where_version": version}
        await self._update(_RETIRE_OTHERS, where)
        if await self._update(_ACTIVATE, where | {"actor": actor}) is None:
            raise LookupError(f"no ruleset version {version}")

    # -- assessments and alerts --------------------------------------------------------

    async def assessed(
        self, event_ids: Sequence[uuid.UUID], ruleset_version: int
    ) -> set[uuid.UUID]:
        with translate_errors():
            result = await self._connection.execute(
                _ASSESSED,
                {
                    "tenant_id": self._tenant_id,
                    "event_ids": list(event_ids),
                    "version": ruleset_version,
                },
            )
            return set(result.scalars())

    async def has_assessment(self, event_id: uuid.UUID, ruleset_version: int) -> bool:
        return event_id in await self.assessed([event_id], ruleset_version)

    async def add_assessments(self, records: Sequence[AssessmentRecord]) -> set[uuid.UUID]:
        if not records:
            return set()
        parameters = {
            "tenant_id": self._tenant_id,
            "assessment_ids": [record.assessment_id for record in records],
            "event_ids": [record.event_id for record in records],
            "versions": [record.ruleset_version for record in records],
            "scorers": [record.scorer for record in records],
            "scores": [record.evaluation.score for record in records],
            "bands": [record.evaluation.band.value for record in records],
            "alerts": [record.evaluation.alert for record in records],
            "explanations": [
                json_text(explanation_document(record.evaluation)) for record in records
            ],
            "contexts": [json_text(_plain(record.context)) for record in records],
            "scored_ats": [record.scored_at for record in records],
        }
        with translate_errors():
            result = await self._connection.execute(_ADD_ASSESSMENTS, parameters)
            return set(result.scalars())

    async def add_assessment(self, record: AssessmentRecord) -> bool:
        return record.event_id in await self.add_assessments([record])

    async def add_alert(self, alert: AlertRecord) -> None:
        await self._execute(
            _ADD_ALERT,
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

    # -- cases -------------------------------------------------------------------------

    async def open_case(self, subject_id: uuid.UUID) -> Case | None:
        row = await self._first(_OPEN_CASE, subject_id=subject_id)
        return case_of_row(row) if row is not None else None

    async def add_case(self, case: Case) -> bool:
        inserted = await self._first(
            _ADD_CASE,
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
            queue=case.queue,
            typologies=list(case.typologies),
        )
        return inserted is not None

    async def save_case(self, case: Case) -> None:
        await self._update(
            _SAVE_CASE,
            {
                "where_tenant_id": self._tenant_id,
                "where_case_id": case.case_id,
                "new_band": case.band.value,
                "new_priority": case.priority,
                "new_sla_due_at": case.sla_due_at,
                "new_alert_count": case.alert_count,
                "new_version": case.version,
                "new_typologies": list(case.typologies),
                "new_updated_at": datetime.now(UTC),
            },
        )

    # -- failures ----------------------------------------------------------------------

    async def record_failure(self, event_id: uuid.UUID, attempts: int, reason: str) -> None:
        await self._execute(_RECORD_FAILURE, event_id=event_id, attempts=attempts, reason=reason)

    async def clear_failure(self, event_id: uuid.UUID) -> None:
        await self.clear_failures([event_id])

    async def clear_failures(self, event_ids: Sequence[uuid.UUID]) -> None:
        if event_ids:
            await self._execute(_CLEAR_FAILURES, event_ids=list(event_ids))

    # -- plumbing ----------------------------------------------------------------------

    async def _execute(self, statement: Executable, **parameters: Any) -> None:
        with translate_errors():
            _ = await self._connection.execute(
                statement, {"tenant_id": self._tenant_id, **parameters}
            )

    async def _first(self, statement: Executable, **parameters: Any) -> Any:
        """The first row, the tenant among the parameters (the statements name it
        ``tenant_id``, as do the tables, so that inserts take it as a column)."""
        with translate_errors():
            result = await self._connection.execute(
                statement, {"tenant_id": self._tenant_id, **parameters}
            )
            return result.first()

    async def _update(self, statement: Executable, parameters: dict[str, Any]) -> Any:
        """An UPDATE's first returned row, if it returns any; its parameters are all
        given, since a ``tenant_id`` among them would be taken as a value to SET."""
        with translate_errors():
            result = await self._connection.execute(statement, parameters)
            return result.first() if result.returns_rows else None


def _stored_event(row: Any) -> StoredEvent:
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
        scoring_failed=bool(row.scoring_failed),
    )


def _stored_ruleset(row: Any) -> StoredRuleset | None:
    if row is None:
        return None
    return StoredRuleset(row.version, row.document, bytes(row.document_hash))


def _plain(context: Mapping[str, Any]) -> dict[str, Any]:
    """The context as JSON takes it; it holds only strings, integers and booleans."""
    return {
        key: _plain(value) if isinstance(value, Mapping) else value
        for key, value in context.items()
    }
