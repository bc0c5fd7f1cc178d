"""The read side: what the portal shows of a tenant, read in pages and in batches.

:class:`ReadStore` runs on a connection whose transaction has the tenant set, so
row-level security scopes every statement; each statement also names the tenant, so the
indexes that lead with ``tenant_id`` are used. Lists are read in keyset pages (the rows
after the last one shown, in a total order ending with the primary key), which stay
correct while rows are inserted, and cost the same on the first page as on the last.
Batches (``*_by_ids``, ``latest_assessments``) take many keys in one statement, so that
a page of fifty rows and their related rows costs the same few statements as a page of
five.

:class:`ReadSession` is one request's session: opened on first use, used by one reader
at a time, and closed once at the end of the request, committing only the audit records
of reads that must be audited (a regulator's).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, Table, and_, func, or_, select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters import tables
from adapters.database import translate_errors
from adapters.unit_of_work import SqlUnitOfWork
from domain.audit import AuditEntry
from domain.scoring import AlertRecord

MAX_PAGE = 100
# A case's alerts are shown newest first, at most this many.
MAX_ALERTS_PER_CASE = 100
# Comments (latest versions) and pieces of evidence shown with a case, each.
MAX_NOTES_PER_CASE = 100

Row = TypeVar("Row")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CaseRow:
    case_id: uuid.UUID
    subject_id: uuid.UUID
    status: str
    band: str
    priority: int
    opened_at: datetime
    updated_at: datetime
    sla_due_at: datetime
    alert_count: int
    version: int
    queue: str
    typologies: list[str]
    assignee: str | None
    disposition: str | None
    rationale: str | None
    proposed_by: str | None
    proposed_at: datetime | None
    decision: str | None
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    closed_at: datetime | None
    sla_breached_at: datetime | None


@dataclass(frozen=True, slots=True)
class CommentRow:
    comment_id: uuid.UUID
    version: int
    case_id: uuid.UUID
    body: str
    author: str
    written_at: datetime


@dataclass(frozen=True, slots=True)
class EvidenceRow:
    evidence_id: uuid.UUID
    case_id: uuid.UUID
    kind: str
    reference: str
    sha256: bytes
    description: str
    added_by: str
    added_at: datetime


@dataclass(frozen=True, slots=True)
class SubjectRow:
    subject_id: uuid.UUID
    kind: str
    external_ref: str
    attributes: dict[str, Any]
    created_at: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class EventRow:
    event_id: uuid.UUID
    event_type: str
    occurred_at: datetime
    received_at: datetime
    subject_id: uuid.UUID
    counterparty_id: uuid.UUID | None
    amount: Decimal | None
    currency: str | None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AssessmentRow:
    assessment_id: uuid.UUID
    event_id: uuid.UUID
    ruleset_version: int
    score: int
    band: str
    alert: bool
    explanation: dict[str, Any]
    scored_at: datetime


@dataclass(frozen=True, slots=True)
class AuditRow:
    seq: int
    record_id: uuid.UUID
    recorded_at: datetime
    actor: str
    action: str
    entity_type: str
    entity_id: str
    correlation_id: str | None
    details: dict[str, Any]


class CaseOrder(StrEnum):
    PRIORITY = "priority"  # highest priority first, then the earliest SLA due time
    SLA_DUE = "sla_due"  # earliest SLA due time first


@dataclass(frozen=True, slots=True)
class CaseFilter:
    statuses: Sequence[str] = ()
    bands: Sequence[str] = ()
    opened_from: datetime | None = None
    opened_before: datetime | None = None
    # None: either; True: due time passed and not closed; False: the others.
    sla_breached: bool | None = None
    queues: Sequence[str] = ()
    assignees: Sequence[str] = ()
    # True: only cases nobody holds; False: only cases someone holds.
    unassigned: bool | None = None


# The keys of the row a page starts after, in the page's order.
CaseKey = tuple[int, datetime, uuid.UUID] | tuple[datetime, uuid.UUID]
TimeKey = tuple[datetime, uuid.UUID]


def _columns(table: Table, row: type[Any]) -> list[Any]:
    return [table.c[field.name] for field in fields(row)]


def _as(row: type[Row], rows: Sequence[Any]) -> list[Row]:
    return [row(**dict(found._mapping)) for found in rows]


_c = tables.cases.c
_e = tables.events.c
_a = tables.assessments.c
_al = tables.alerts.c
_au = tables.audit_records.c
_s = tables.subjects.c


class ReadStore:
    def __init__(self, connection: AsyncConnection, tenant_id: uuid.UUID) -> None:
        self._connection = connection
        self._tenant_id = tenant_id

    # -- cases -------------------------------------------------------------------------

    async def cases(
        self, where: CaseFilter, order: CaseOrder, after: CaseKey | None, limit: int
    ) -> list[CaseRow]:
        """Up to ``limit`` cases after the key ``after``, in ``order``."""
        query = select(*_columns(tables.cases, CaseRow)).where(
            _c.tenant_id == self._tenant_id, *_case_conditions(where)
        )
        if order is CaseOrder.PRIORITY:
            query = query.order_by(_c.priority.desc(), _c.sla_due_at, _c.case_id)
            if after is not None:
                priority, due, case_id = after  # type: ignore[misc]
                query = query.where(
                    or_(
                        _c.priority < priority,
                        and_(
                            _c.priority == priority,
                            or_(
                                _c.sla_due_at > due,
                                and_(_c.sla_due_at == due, _c.case_id > case_id),
                            ),
                        ),
                    )
                )
        else:
            query = query.order_by(_c.sla_due_at, _c.case_id)
            if after is not None:
                due, case_id = after  # type: ignore[misc]
                query = query.where(
                    or_(_c.sla_due_at > due, and_(_c.sla_due_at == due, _c.case_id > case_id))
                )
        return _as(CaseRow, await self._all(query.limit(limit)))

    async def cases_by_ids(self, ids: Sequence[uuid.UUID]) -> list[CaseRow]:
        query = select(*_columns(tables.cases, CaseRow)).where(
            _c.tenant_id == self._tenant_id, _c.case_id.in_(list(ids))
        )
        return _as(CaseRow, await self._all(query))

    async def latest_assessments(self, case_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Any]:
        """The latest assessment that raised an alert on each case, by case."""
        query = (
            select(_al.case_id, *_columns(tables.assessments, AssessmentRow))
            .ext(distinct_on(_al.case_id))
            .join(
                tables.assessments,
                and_(_a.tenant_id == _al.tenant_id, _a.assessment_id == _al.assessment_id),
            )
            .where(_al.tenant_id == self._tenant_id, _al.case_id.in_(list(case_ids)))
            .order_by(_al.case_id, _a.scored_at.desc(), _a.assessment_id.desc())
        )
        rows = await self._all(query)
        return {
            row.case_id: AssessmentRow(
                **{field.name: row._mapping[field.name] for field in fields(AssessmentRow)}
            )
            for row in rows
        }

    async def alerts_of_cases(self, case_ids: Sequence[uuid.UUID]) -> list[AlertRecord]:
        """Each case's newest alerts, at most :data:`MAX_ALERTS_PER_CASE` a case."""
        ranked = (
            select(
                *_columns(tables.alerts, AlertRecord),
                func.row_number()
                .over(partition_by=_al.case_id, order_by=(_al.created_at.desc(), _al.alert_id))
                .label("rank"),
            )
            .where(_al.tenant_id == self._tenant_id, _al.case_id.in_(list(case_ids)))
            .subquery()
        )
        query = (
            select(*[ranked.c[field.name] for field in fields(AlertRecord)])
            .where(ranked.c.rank <= MAX_ALERTS_PER_CASE)
            .order_by(ranked.c.case_id, ranked.c.rank)
        )
        return _alerts(await self._all(query))

    async def comments_of_cases(self, case_ids: Sequence[uuid.UUID]) -> list[CommentRow]:
        """The latest version of each comment on the cases, oldest comment first, at most
        :data:`MAX_NOTES_PER_CASE` a case."""
        _cc = tables.case_comments.c
        latest = (
            select(
                *_columns(tables.case_comments, CommentRow),
                func.row_number()
                .over(partition_by=_cc.comment_id, order_by=_cc.version.desc())
                .label("newest"),
            )
            .where(_cc.tenant_id == self._tenant_id, _cc.case_id.in_(list(case_ids)))
            .subquery()
        )
        ranked = (
            select(
                *[latest.c[field.name] for field in fields(CommentRow)],
                func.row_number()
                .over(
                    partition_by=latest.c.case_id,
                    order_by=(latest.c.written_at, latest.c.comment_id),
                )
                .label("rank"),
            )
            .where(latest.c.newest == 1)
            .subquery()
        )
        query = (
            select(*[ranked.c[field.name] for field in fields(CommentRow)])
            .where(ranked.c.rank <= MAX_NOTES_PER_CASE)
            .order_by(ranked.c.case_id, ranked.c.rank)
        )
        return _as(CommentRow, await self._all(query))

    async def evidence_of_cases(self, case_ids: Sequence[uuid.UUID]) -> list[EvidenceRow]:
        """The evidence on the cases, oldest first, at most :data:`MAX_NOTES_PER_CASE` a
        case."""
        _ce = tables.case_evidence.c
        ranked = (
            select(
                *_columns(tables.case_evidence, EvidenceRow),
                func.row_number()
                .over(partition_by=_ce.case_id, order_by=(_ce.added_at, _ce.evidence_id))
                .label("rank"),
            )
            .where(_ce.tenant_id == self._tenant_id, _ce.case_id.in_(list(case_ids)))
            .subquery()
        )
        query = (
            select(*[ranked.c[field.name] for field in fields(EvidenceRow)])
            .where(ranked.c.rank <= MAX_NOTES_PER_CASE)
            .order_by(ranked.c.case_id, ranked.c.rank)
        )
        return _as(EvidenceRow, await self._all(query))

    # -- subjects, events, assessments, alerts by id -----------------------------------

    async def subjects_by_ids(self, ids: Sequence[uuid.UUID]) -> list[SubjectRow]:
        query = select(*_columns(tables.subjects, SubjectRow)).where(
            _s.tenant_id == self._tenant_id, _s.subject_id.in_(list(ids))
        )
        return _as(SubjectRow, await self._all(query))

    async def events_by_ids(self, ids: Sequence[uuid.UUID]) -> list[EventRow]:
        query = select(*_columns(tables.events, EventRow)).where(
            _e.tenant_id == self._tenant_id, _e.event_id.in_(list(ids))
        )
        return _as(EventRow, await self._all(query))

    async def assessments_by_ids(self, ids: Sequence[uuid.UUID]) -> list[AssessmentRow]:
        query = select(*_columns(tables.assessments, AssessmentRow)).where(
            _a.tenant_id == self._tenant_id, _a.assessment_id.in_(list(ids))
        )
        return _as(AssessmentRow, await self._all(query))

    async def alerts_by_ids(self, ids: Sequence[uuid.UUID]) -> list[AlertRecord]:
        query = select(*_columns(tables.alerts, AlertRecord)).where(
            _al.tenant_id == self._tenant_id, _al.alert_id.in_(list(ids))
        )
        return _alerts(await self._all(query))

    # -- lists in time order -------------------------------------------------------------

    async def events(
        self,
        subject_id: uuid.UUID | None,
        occurred_from: datetime | None,
        occurred_before: datetime | None,
        after: TimeKey | None,
        limit: int,
    ) -> list[EventRow]:
        """Events newest first; of one subject (either side of a transfer) if given."""
        conditions: list[ColumnElement[bool]] = [_e.tenant_id == self._tenant_id]
        if subject_id is not None:
            conditions.append(or_(_e.subject_id == subject_id, _e.counterparty_id == subject_id))
        if occurred_from is not None:
            conditions.append(_e.occurred_at >= occurred_from)
        if occurred_before is not None:
            conditions.append(_e.occurred_at < occurred_before)
        query = select(*_columns(tables.events, EventRow)).where(*conditions)
        query = _newest_first(query, _e.occurred_at, _e.event_id, after)
        return _as(EventRow, await self._all(query.limit(limit)))

    async def assessments_of_subject(
        self, subject_id: uuid.UUID, after: TimeKey | None, limit: int
    ) -> list[AssessmentRow]:
        """Assessments of the events the subject sent, newest first."""
        query = (
            select(*_columns(tables.assessments, AssessmentRow))
            .join(
                tables.events,
                and_(_e.tenant_id == _a.tenant_id, _e.event_id == _a.event_id),
            )
            .where(_a.tenant_id == self._tenant_id, _e.subject_id == subject_id)
        )
        query = _newest_first(query, _a.scored_at, _a.assessment_id, after)
        return _as(AssessmentRow, await self._all(query.limit(limit)))

    async def audit_trail(
        self, entity_type: str, entity_id: str, after: int | None, limit: int
    ) -> list[AuditRow]:
        """The audit records of one entity, in the chain's order."""
        query = (
            select(*_columns(tables.audit_records, AuditRow))
            .where(
                _au.tenant_id == self._tenant_id,
                _au.entity_type == entity_type,
                _au.entity_id == entity_id,
                _au.seq > (after or 0),
            )
            .order_by(_au.seq)
            .limit(limit)
        )
        return _as(AuditRow, await self._all(query))

    async def _all(self, query: Select[Any]) -> Sequence[Any]:
        with translate_errors():
            rows: Sequence[Any] = (await self._connection.execute(query)).all()
            return rows


def _alerts(rows: Sequence[Any]) -> list[AlertRecord]:
    return [
        AlertRecord(**{**dict(row._mapping), "typologies": tuple(row.typologies)}) for row in rows
    ]


def _case_conditions(where: CaseFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if where.statuses:
        conditions.append(_c.status.in_(list(where.statuses)))
    if where.bands:
        conditions.append(_c.band.in_(list(where.bands)))
    if where.opened_from is not None:
        conditions.append(_c.opened_at >= where.opened_from)
    if where.opened_before is not None:
        conditions.append(_c.opened_at < where.opened_before)
    if where.sla_breached is not None:
        breached = and_(_c.sla_due_at < func.now(), _c.status != "closed")
        conditions.append(breached if where.sla_breached else ~breached)
    if where.queues:
        conditions.append(_c.queue.in_(list(where.queues)))
    if where.assignees:
        conditions.append(_c.assignee.in_(list(where.assignees)))
    if where.unassigned is not None:
        conditions.append(_c.assignee.is_(None) if where.unassigned else _c.assignee.isnot(None))
    return conditions


def _newest_first(
    query: Select[Any], time: ColumnElement[Any], key: ColumnElement[Any], after: TimeKey | None
) -> Select[Any]:
    query = query.order_by(time.desc(), key.desc())
    if after is None:
        return query
    moment, last = after
    return query.where(or_(time < moment, and_(time == moment, key < last)))


class ReadSession:
    """One tenant's reads during one request.

    The transaction opens on the first read (a request that reads nothing costs no
    connection) with the tenant set in it, and readers take turns: resolvers run
    concurrently, and a connection serves one statement at a time. Audit entries noted
    during the request are sealed into the tenant's chain when the session closes.
    """

    def __init__(self, engine: AsyncEngine, tenant_id: uuid.UUID) -> None:
        self._engine = engine
        self.tenant_id = tenant_id
        self._lock = asyncio.Lock()
        self._uow: SqlUnitOfWork | None = None
        self._store: ReadStore | None = None
        self._entries: list[AuditEntry] = []
        self._closed = False

    async def read(self, reading: Callable[[ReadStore], Awaitable[T]]) -> T:
        async with self._lock:
            if self._closed:
                raise RuntimeError("the read session is closed")
            if self._store is None:
                uow = SqlUnitOfWork(self._engine, self.tenant_id)
                await uow.__aenter__()
                self._uow = uow
                self._store = ReadStore(uow.connection, self.tenant_id)
            return await reading(self._store)

    def record(self, entry: AuditEntry) -> None:
        self._entries.append(entry)

    @property
    def opened(self) -> bool:
        return self._uow is not None

    async def close(self) -> None:
        """Commit the audit entries (in the transaction that read, when there was one),
        else roll back; raise if the entries could not be committed."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            uow, self._uow, self._store = self._uow, None, None
            if uow is None and self._entries:
                uow = SqlUnitOfWork(self._engine, self.tenant_id)
                await uow.__aenter__()
            if uow is None:
                return
            try:
                for entry in self._entries:
                    uow.record(entry)
                if self._entries:
                    await uow.commit()
            finally:
                await uow.__aexit__(None, None, None)
