"""The PostgreSQL unit of work: one transaction of one tenant.

The tenant is set with ``set_config(..., true)`` (the function form of ``SET LOCAL``) as
the first statement, so row-level security scopes every later statement and the setting
dies with the transaction. Audit entries and outbox messages are collected while the
use case runs and written just before the commit, which seals the entries onto the
tenant's chain: its head is locked inside the commit only (migration 0010).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters import audit_trail, tables
from adapters.case_feed import SqlCaseFeed
from adapters.case_store import SqlCaseStore
from adapters.database import json_text, sqlstate, translate_errors
from adapters.scoring_store import SqlScoringStore
from domain.audit import AuditEntry
from domain.errors import UnknownTenant
from domain.events import SubjectFacts, SubjectKind, SubjectRef
from domain.ids import new_id
from domain.messages import OutboxMessage, cloud_event
from domain.ports import KnownEvent, NewEvent

_SET_TENANT = text("SELECT set_config('vigil.tenant_id', :tenant, true)")

# Rows are sent as one array per column and unpacked with unnest(): asyncpg encodes the
# arrays in C, so a batch costs one statement and little Python, where a multi-row
# VALUES list had SQLAlchemy render and process every parameter of every row. The
# statements are built once, so their compiled form is cached.
EVENTS_SQL = """
INSERT INTO events (tenant_id, event_id, idempotency_key, event_type, occurred_at,
    received_at, subject_id, counterparty_id, amount, currency, payload, payload_hash, door,
    actor, correlation_id)
SELECT :tenant_id, e.event_id, e.idempotency_key, e.event_type, e.occurred_at, :received_at,
    e.subject_id, e.counterparty_id, e.amount, e.currency, e.payload, e.payload_hash, :door,
    :actor, :correlation_id
FROM unnest(CAST(:event_ids AS uuid[]), CAST(:keys AS text[]), CAST(:types AS text[]),
    CAST(:occurred AS timestamptz[]), CAST(:subject_ids AS uuid[]),
    CAST(:counterparty_ids AS uuid[]), CAST(:amounts AS numeric[]),
    CAST(:currencies AS text[]), CAST(:payloads AS jsonb[]), CAST(:hashes AS bytea[]))
    AS e(event_id, idempotency_key, event_type, occurred_at, subject_id, counterparty_id,
         amount, currency, payload, payload_hash)
ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
RETURNING idempotency_key
"""
_INSERT_EVENTS = text(EVENTS_SQL)

# DO UPDATE (not DO NOTHING) so that the row stays locked until commit: writers of one
# subject are serialised, which keeps its outbox messages in commit order. What the
# newer of the two says wins; the older only fills gaps. A late or replayed event cannot
# clear, say, a sanctions hit reported after it.
SUBJECTS_SQL = """
INSERT INTO subjects AS s (tenant_id, subject_id, kind, external_ref, attributes,
    attributes_at, created_at, updated_at)
SELECT :tenant_id, f.subject_id, f.kind, f.external_ref, f.attributes, f.attributes_at,
    :now, :now
FROM unnest(CAST(:subject_ids AS uuid[]), CAST(:kinds AS text[]), CAST(:refs AS text[]),
    CAST(:attributes AS jsonb[]), CAST(:attributes_at AS timestamptz[]))
    AS f(subject_id, kind, external_ref, attributes, attributes_at)
ON CONFLICT (tenant_id, kind, external_ref) DO UPDATE SET
    attributes = CASE WHEN excluded.attributes_at >= s.attributes_at
                      THEN s.attributes || excluded.attributes
                      ELSE excluded.attributes || s.attributes END,
    attributes_at = greatest(s.attributes_at, excluded.attributes_at),
    updated_at = excluded.updated_at
RETURNING subject_id, kind, external_ref
"""
_UPSERT_SUBJECTS = text(SUBJECTS_SQL)

OUTBOX_ROWS_SQL = """
INSERT INTO outbox (tenant_id, message_id, ordering_key, message_type, envelope)
SELECT :tenant_id, m.message_id, m.ordering_key, m.message_type, m.envelope
FROM unnest(CAST(:message_ids AS uuid[]), CAST(:ordering_keys AS uuid[]),
    CAST(:message_types AS text[]), CAST(:envelopes AS jsonb[]))
    AS m(message_id, ordering_key, message_type, envelope)
"""
_INSERT_OUTBOX = text(OUTBOX_ROWS_SQL)
_FIRST_SIGHTS = text("""
INSERT INTO inbox (tenant_id, consumer, message_id)
SELECT :tenant, :consumer, m.id
FROM unnest(CAST(:ids AS text[])) WITH ORDINALITY AS m(id, position)
ORDER BY m.position
ON CONFLICT DO NOTHING
RETURNING message_id
""")
# The outbox rows and the audit records of a transaction in one round trip. The outbox
# insert touches nothing the sealing reads, so the order of the two does not matter.
_INSERT_OUTBOX_AND_SEAL = text(f"WITH outbox_rows AS ({OUTBOX_ROWS_SQL}) {audit_trail.APPEND_SQL}")


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
        first = events[0]
        if any(
            (event.received_at, event.door, event.actor, event.correlation_id)
            != (first.received_at, first.door, first.actor, first.correlation_id)
            for event in events
        ):
            raise ValueError("the events of one insert come from one caller at one moment")
        parameters = {
            "tenant_id": self._tenant_id,
            "received_at": first.received_at,
            "door": first.door,
            "actor": first.actor,
            "correlation_id": first.correlation_id,
            "event_ids": [event.event_id for event in events],
            "keys": [event.draft.idempotency_key for event in events],
            "types": [event.draft.event_type.value for event in events],
            "occurred": [event.draft.occurred_at for event in events],
            "subject_ids": [event.subject_id for event in events],
            "counterparty_ids": [event.counterparty_id for event in events],
            "amounts": [event.draft.amount for event in events],
            "currencies": [event.draft.currency for event in events],
            "payloads": [json_text(dict(event.draft.payload)) for event in events],
            "hashes": [event.draft.payload_hash for event in events],
        }
        with translate_errors():
            result = await self._connection.execute(_INSERT_EVENTS, parameters)
        return {row.idempotency_key for row in result}


class SqlSubjectStore:
    def __init__(self, connection: AsyncConnection, tenant_id: uuid.UUID) -> None:
        self._connection = connection
        self._tenant_id = tenant_id

    async def upsert(self, facts: Sequence[SubjectFacts]) -> dict[SubjectRef, uuid.UUID]:
        if not facts:
            return {}
        now = datetime.now(UTC)
        parameters = {
            "tenant_id": self._tenant_id,
            "now": now,
            "subject_ids": [new_id() for _ in facts],
            "kinds": [fact.subject.kind.value for fact in facts],
            "refs": [fact.subject.ref for fact in facts],
            "attributes": [json_text(dict(fact.attributes)) for fact in facts],
            "attributes_at": [fact.as_of or now for fact in facts],
        }
        try:
            with translate_errors():
                result = await self._connection.execute(_UPSERT_SUBJECTS, parameters)
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

    async def first_sights(self, consumer: str, message_ids: Sequence[str]) -> set[str]:
        # Inserted in one order whoever inserts them, so that two transactions holding
        # copies of the same messages wait for each other instead of deadlocking.
        with translate_errors():
            result = await self._connection.execute(
                _FIRST_SIGHTS,
                {
                    "tenant": self._tenant_id,
                    "consumer": consumer,
                    "ids": sorted(set(message_ids)),
                },
            )
        return {row.message_id for row in result}


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
        self.case_feed = SqlCaseFeed(self._connection, self.tenant_id)
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
        """Write the outbox rows and hand over the audit entries, then commit, which
        seals the entries onto the tenant's chain."""
        try:
            with translate_errors():
                await self._write_outbox_and_audit()
                await self.connection.commit()
        except IntegrityError as error:
            if sqlstate(error) == "23503":
                raise UnknownTenant("no such tenant") from error
            raise
        self._committed = True

    async def _write_outbox_and_audit(self) -> None:
        """One statement for both."""
        messages: dict[str, Any] = {
            "tenant_id": self.tenant_id,
            "message_ids": [message.message_id for message in self._messages],
            "ordering_keys": [message.ordering_key for message in self._messages],
            "message_types": [message.message_type for message in self._messages],
            "envelopes": [
                json_text(cloud_event(self.tenant_id, message)) for message in self._messages
            ],
        }
        if not self._entries:
            if self._messages:
                await self.connection.execute(_INSERT_OUTBOX, messages)
            return
        if self._messages:
            entries = audit_trail.append_parameters(self._entries)
            await self.connection.execute(_INSERT_OUTBOX_AND_SEAL, {**messages, **entries})
        else:
            await audit_trail.append(self.connection, self._entries)


def unit_of_work_factory(engine: AsyncEngine) -> Any:
    def factory(tenant_id: uuid.UUID) -> SqlUnitOfWork:
        return SqlUnitOfWork(engine, tenant_id)

    return factory
