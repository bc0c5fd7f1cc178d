"""The PostgreSQL unit of work: one transaction of one tenant.

The tenant is set with ``set_config(..., true)`` (the function form of ``SET LOCAL``) as
the first statement, so row-level security scopes every later statement and the setting
dies with the transaction. Audit entries and outbox messages are collected while the
use case runs and written just before the commit: the tenant's chain head is locked
last, for as short a time as possible.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import case, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters import tables
from adapters.case_store import SqlCaseStore
from adapters.database import sqlstate, translate_errors
from adapters.scoring_store import SqlScoringStore
from domain.audit import AuditEntry, seal
from domain.errors import UnknownTenant
from domain.events import SubjectFacts, SubjectKind, SubjectRef
from domain.ids import new_id
from domain.messages import OutboxMessage, cloud_event
from domain.ports import KnownEvent, NewEvent

_SET_TENANT = text("SELECT set_config('vigil.tenant_id', :tenant, true)")

# Statements are built once and executed with a list of rows: SQLAlchemy then caches
# their compiled form and sends the rows in multi-row batches, where a statement built
# with .values(rows) would be compiled anew for every batch.
_INSERT_EVENTS = (
    insert(tables.events)
    .on_conflict_do_nothing(index_elements=["tenant_id", "idempotency_key"])
    .returning(tables.events.c.idempotency_key)
)
_SUBJECT_ROWS = insert(tables.subjects)
# DO UPDATE (not DO NOTHING) so that the row stays locked until commit: writers of one
# subject are serialised, which keeps its outbox messages in commit order.
_NEWER = _SUBJECT_ROWS.excluded.attributes_at >= tables.subjects.c.attributes_at
_UPSERT_SUBJECTS = _SUBJECT_ROWS.on_conflict_do_update(
    index_elements=["tenant_id", "kind", "external_ref"],
    set_={
        # What the newer of the two says wins; the older only fills gaps. A late or
        # replayed event cannot clear, say, a sanctions hit reported after it.
        "attributes": case(
            (_NEWER, tables.subjects.c.attributes.op("||")(_SUBJECT_ROWS.excluded.attributes)),
            else_=_SUBJECT_ROWS.excluded.attributes.op("||")(tables.subjects.c.attributes),
        ),
        "attributes_at": func.greatest(
            tables.subjects.c.attributes_at, _SUBJECT_ROWS.excluded.attributes_at
        ),
        "updated_at": _SUBJECT_ROWS.excluded.updated_at,
    },
).returning(tables.subjects.c.subject_id, tables.subjects.c.kind, tables.subjects.c.external_ref)


class SqlEventStore:
    def __init__(self, connection: AsyncConnection, tenant_id: uuid.UUID) -> None:
        self._connection = connection
        self._tenant_id = tenant_id

    async def find_by_keys(self, keys: Sequence[str]) -> dict[str, KnownEvent]:
        if not keys:
            return {}
        query = select(
            tables.events.c.idempotency_key,
            tables.events.c.event_id,
            tables.events.c.payload_hash,
        ).where(
            tables.events.c.tenant_id == self._tenant_id,
            tables.events.c.idempotency_key.in_(list(keys)),
        )
        with translate_errors():
            rows = (await self._connection.execute(query)).all()
        return {
            row.idempotency_key: KnownEvent(row.event_id, bytes(row.payload_hash)) for row in rows
        }

    async def insert(self, events: Sequence[NewEvent]) -> set[str]:
        if not events:
            return set()
        rows = [
            {
                "tenant_id": self._tenant_id,
                "event_id": event.event_id,
                "idempotency_key": event.draft.idempotency_key,
                "event_type": event.draft.event_type.value,
                "occurred_at": event.draft.occurred_at,
                "received_at": event.received_at,
                "subject_id": event.subject_id,
                "counterparty_id": event.counterparty_id,
                "amount": event.draft.amount,
                "currency": event.draft.currency,
                "payload": dict(event.draft.payload),
                "payload_hash": event.draft.payload_hash,
                "door": event.door,
                "actor": event.actor,
                "correlation_id": event.correlation_id,
            }
            for event in events
        ]
        with translate_errors():
            result = await self._connection.execute(_INSERT_EVENTS, rows)
        return {row.idempotency_key for row in result}


class SqlSubjectStore:
    def __init__(self, connection: AsyncConnection, tenant_id: uuid.UUID) -> None:
        self._connection = connection
        self._tenant_id = tenant_id

    async def upsert(self, facts: Sequence[SubjectFacts]) -> dict[SubjectRef, uuid.UUID]:
        if not facts:
            return {}
        now = datetime.now(UTC)
        rows = [
            {
                "tenant_id": self._tenant_id,
                "subject_id": new_id(),
                "kind": fact.subject.kind.value,
                "external_ref": fact.subject.ref,
                "attributes": dict(fact.attributes),
                "attributes_at": fact.as_of or now,
                "created_at": now,
                "updated_at": now,
            }
            for fact in facts
        ]
        try:
            with translate_errors():
                result = await self._connection.execute(_UPSERT_SUBJECTS, rows)
        except IntegrityError as error:
            if sqlstate(error) == "23503":
                raise UnknownTenant("no such tenant") from error
            raise
        return {
            SubjectRef(SubjectKind(row.kind), row.external_ref): row.subject_id for row in result
        }


class SqlInbox:
    def __init__(self, connection: AsyncConnection, tenant_id: uuid.UUID) -> None:
        self._connection = connection
        self._tenant_id = tenant_id

    async def first_sight(self, consumer: str, message_id: str) -> bool:
        statement = (
            insert(tables.inbox)
            .values(tenant_id=self._tenant_id, consumer=consumer, message_id=message_id)
            .on_conflict_do_nothing()
            .returning(tables.inbox.c.message_id)
        )
        with translate_errors():
            result = await self._connection.execute(statement)
        return result.first() is not None


class SqlUnitOfWork:
    def __init__(self, engine: AsyncEngine, tenant_id: uuid.UUID) -> None:
        self._engine = engine
        self.tenant_id = tenant_id
        self._connection: AsyncConnection | None = None
        self._entries: list[AuditEntry] = []
        self._messages: list[OutboxMessage] = []
        self._committed = False

    @property
    def connection(self) -> AsyncConnection:
        if self._connection is None:
            raise RuntimeError("the unit of work is not open")
        return self._connection

    async def __aenter__(self) -> Self:
        with translate_errors():
            self._connection = await self._engine.connect()
            try:
                _ = await self._connection.begin()
                await self._connection.execute(_SET_TENANT, {"tenant": str(self.tenant_id)})
            except BaseException:
                await self._connection.close()
                raise
        self.events = SqlEventStore(self._connection, self.tenant_id)
        self.subjects = SqlSubjectStore(self._connection, self.tenant_id)
        self.inbox = SqlInbox(self._connection, self.tenant_id)
        self.scoring = SqlScoringStore(self._connection, self.tenant_id)
        self.cases = SqlCaseStore(self._connection, self.tenant_id)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if not self._committed:
                await connection.rollback()
        finally:
            await connection.close()

    def record(self, entry: AuditEntry) -> None:
        self._entries.append(entry)

    def publish(self, message: OutboxMessage) -> None:
        self._messages.append(message)

    async def commit(self) -> None:
        with translate_errors():
            await self._write_outbox()
            await self._write_audit()
            await self.connection.commit()
        self._committed = True

    async def _write_outbox(self) -> None:
        if not self._messages:
            return
        rows: list[dict[str, Any]] = [
            {
                "tenant_id": self.tenant_id,
                "message_id": message.message_id,
                "ordering_key": message.ordering_key,
                "message_type": message.message_type,
                "envelope": cloud_event(self.tenant_id, message),
            }
            for message in self._messages
        ]
        await self.connection.execute(insert(tables.outbox), rows)

    async def _write_audit(self) -> None:
        if not self._entries:
            return
        heads = tables.audit_heads
        head = (
            await self.connection.execute(
                select(heads.c.last_seq, heads.c.last_hash)
                .where(heads.c.tenant_id == self.tenant_id)
                .with_for_update()
            )
        ).first()
        if head is None:
            raise UnknownTenant("no such tenant")
        records = seal(
            self.tenant_id,
            self._entries,
            last_seq=head.last_seq,
            last_hash=bytes(head.last_hash),
            recorded_at=datetime.now(UTC),
        )
        await self.connection.execute(
            insert(tables.audit_records),
            [
                {
                    "tenant_id": record.tenant_id,
                    "seq": record.seq,
                    "record_id": record.entry.record_id,
                    "recorded_at": record.recorded_at,
                    "actor": record.entry.actor,
                    "action": record.entry.action,
                    "entity_type": record.entry.entity_type,
                    "entity_id": record.entry.entity_id,
                    "correlation_id": record.entry.correlation_id,
                    "details": dict(record.entry.details),
                    "prev_hash": record.prev_hash,
                    "hash": record.hash,
                }
                for record in records
            ],
        )
        await self.connection.execute(
            update(heads)
            .where(heads.c.tenant_id == self.tenant_id)
            .values(last_seq=records[-1].seq, last_hash=records[-1].hash)
        )


def unit_of_work_factory(engine: AsyncEngine) -> Any:
    def factory(tenant_id: uuid.UUID) -> SqlUnitOfWork:
        return SqlUnitOfWork(engine, tenant_id)

    return factory
